import Testing
@testable import HasteTensor

/// The cases of Scripts/fixtures/pool.py (POOL_CASES). Pooling is forward only (no backward, so no gradcheck).
struct PoolCase: Sendable, CustomStringConvertible {
    let name: String, max: Bool, kernel: Int, stride: Int, padding: Int, includePad: Bool
    var description: String { name }
}

let poolCases: [PoolCase] = [
    PoolCase(name: "max_k3s2", max: true, kernel: 3, stride: 2, padding: 0, includePad: false),
    PoolCase(name: "max_k3s1p1", max: true, kernel: 3, stride: 1, padding: 1, includePad: false),
    PoolCase(name: "max_k2s2_odd", max: true, kernel: 2, stride: 2, padding: 0, includePad: false),
    PoolCase(name: "avg_k3s1p1_excl", max: false, kernel: 3, stride: 1, padding: 1, includePad: false),
    PoolCase(name: "avg_k3s1p1_incl", max: false, kernel: 3, stride: 1, padding: 1, includePad: true),
    PoolCase(name: "avg_k3s2p1_excl", max: false, kernel: 3, stride: 2, padding: 1, includePad: false),
    PoolCase(name: "avg_k8s8", max: false, kernel: 8, stride: 8, padding: 0, includePad: false),
]

extension PoolCase {
    func apply(_ x: Tensor) -> Tensor {
        max ? x.maxPool2d(kernel: kernel, stride: stride, padding: padding)
            : x.avgPool2d(kernel: kernel, stride: stride, padding: padding, countIncludePad: includePad)
    }
}

/// float32 against torch: a max is exact; a mean of at most 64 O(1) terms is within a few float32 ulps.
@Test(arguments: poolCases)
func pool2dMatchesPyTorch(_ c: PoolCase) throws {
    let f = try Fixture("pool2d.safetensors")
    expectClose(c.apply(f["\(c.name).x"]), f["\(c.name).y"], atol: c.max ? 0 : 1e-6, rtol: c.max ? 0 : 1e-6, c.name)
}

/// The definition as plain loops in float64: windows clipped to the image; divisor = clipped window
/// (exclude pad) or window clipped to the padded image (include pad).
func directPool2d(_ x: Tensor, _ c: PoolCase) -> Tensor {
    let (planes, h, w) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
    let oh = (h + 2 * c.padding - c.kernel) / c.stride + 1, ow = (w + 2 * c.padding - c.kernel) / c.stride + 1
    let v = x.scalars(as: Double.self)
    var out: [Double] = []
    for p in 0..<planes { for oy in 0..<oh { for ox in 0..<ow {
        var m = -Double.infinity, s = 0.0, n = 0, padded = 0
        for i in 0..<c.kernel { for j in 0..<c.kernel {
            let iy = oy * c.stride - c.padding + i, ix = ox * c.stride - c.padding + j
            if iy < h + c.padding && ix < w + c.padding { padded += 1 }
            guard iy >= 0 && iy < h && ix >= 0 && ix < w else { continue }
            let e = v[(p * h + iy) * w + ix]
            m = Swift.max(m, e); s += e; n += 1
        } }
        out.append(c.max ? m : s / Double(c.includePad ? padded : n))
    } } }
    return Tensor(out, shape: [x.shape[0], x.shape[1], oh, ow])
}

/// Odd sizes with enough planes for several parallel chunks.
@Test(arguments: poolCases)
func pool2dMatchesDirectLoops(_ c: PoolCase) {
    let x = Tensor.randn([3, 37, 17, 19], dtype: .float64, seed: 71)
    expectClose(c.apply(x), directPool2d(x, c), atol: 1e-14, rtol: 1e-14, c.name)
}

@Test func poolOutputShapes() {
    let x = Tensor.zeros([2, 64, 147, 147])
    #expect(x.maxPool2d(kernel: 3, stride: 2).shape == [2, 64, 73, 73])          // Inception stem
    #expect(x.avgPool2d(kernel: 3, stride: 1, padding: 1, countIncludePad: false).shape == [2, 64, 147, 147])
}

/// float32 rows wide enough for the 16-lane path (stride 1 and 2) equal a plain float32 loop over each window in
/// the same order bit for bit, NaN included (a max window holding a NaN is NaN).
@Test(arguments: poolCases)
func pool2dLanesMatchScalarLoopsBitForBit(_ c: PoolCase) {
    var v = Tensor.randn([2, 3, 23, 53], seed: 72).scalars(as: Float.self)
    v[5 * 53 + 20] = .nan; v[23 * 53 + 40] = .nan
    let x = Tensor(v, shape: [2, 3, 23, 53])
    let (planes, h, w) = (6, 23, 53)
    let oh = (h + 2 * c.padding - c.kernel) / c.stride + 1, ow = (w + 2 * c.padding - c.kernel) / c.stride + 1
    var want: [Float] = []
    for p in 0..<planes { for oy in 0..<oh { for ox in 0..<ow {
        var m = -Float.infinity, sum: Float = 0, n = 0, padded = 0
        for i in 0..<c.kernel { for j in 0..<c.kernel {
            let iy = oy * c.stride - c.padding + i, ix = ox * c.stride - c.padding + j
            if iy < h + c.padding && ix < w + c.padding { padded += 1 }
            guard iy >= 0 && iy < h && ix >= 0 && ix < w else { continue }
            let e = v[(p * h + iy) * w + ix]
            if e > m || e.isNaN && !m.isNaN { m = e }
            sum += e; n += 1
        } }
        want.append(c.max ? m : sum / Float(c.includePad ? padded : n))
    } } }
    let got = c.apply(x).scalars(as: Float.self)
    #expect(got.count == want.count)
    let mismatches = zip(got, want).enumerated().filter { !($1.0.bitPattern == $1.1.bitPattern || $1.0.isNaN && $1.1.isNaN) }
    #expect(mismatches.isEmpty, "\(c.name): \(mismatches.count) outputs differ, first at \(mismatches.first?.offset ?? -1)")
}
