import Testing
@testable import HasteTensor

/// The cases of Scripts/fixtures/conv.py (RESIZE_CASES): output size and filter.
struct ResizeCase: Sendable, CustomStringConvertible {
    let name: String, height: Int, width: Int, antialias: Bool
    var description: String { name }
}

let resizeCases: [ResizeCase] = [
    ResizeCase(name: "down_32_28", height: 28, width: 28, antialias: false),
    ResizeCase(name: "down_9_7", height: 7, width: 7, antialias: false),
    ResizeCase(name: "aa_37_16", height: 16, width: 16, antialias: true),
    ResizeCase(name: "aa_9_7", height: 7, width: 7, antialias: true),
    ResizeCase(name: "up_5_9", height: 9, width: 9, antialias: false),
    ResizeCase(name: "aa_up_5_9", height: 9, width: 9, antialias: true),
    ResizeCase(name: "rect", height: 5, width: 13, antialias: false),
    ResizeCase(name: "aa_rect", height: 5, width: 13, antialias: true),
    ResizeCase(name: "rect_h_only", height: 9, width: 10, antialias: false),
    ResizeCase(name: "aa_rect_w_only", height: 6, width: 4, antialias: true),
]

/// float32 against torch. Forward: tables are built in float32 with torch's roundings and fused
/// multiply-adds, and taps are summed in torch's order, so y agrees to a few float32 ulps (measured ≤ 8e-7):
/// 2e-6 absolute. Backward: torch accumulates dx in another order over up to 11×11 taps per input pixel
/// (measured ≤ 2.2e-6): 1e-5 absolute.
@Test(arguments: resizeCases)
func resizeBicubicMatchesPyTorch(_ c: ResizeCase) throws {
    let f = try Fixture("resize.safetensors")
    let x = f["\(c.name).x"]
    x.requiresGrad = true
    let y = x.resizeBicubic(height: c.height, width: c.width, antialias: c.antialias)
    expectClose(y, f["\(c.name).y"], atol: 2e-6, rtol: 1e-6, "\(c.name) y")
    y.backward(f["\(c.name).dy"])
    expectClose(x.grad!, f["\(c.name).dx"], atol: 1e-5, rtol: 1e-6, "\(c.name) dx")
}

@Test func upsampleNearest2xMatchesPyTorch() throws {
    let f = try Fixture("resize.safetensors")
    let x = f["nearest2x.x"]
    x.requiresGrad = true
    let y = x.upsampleNearest2x()
    expectClose(y, f["nearest2x.y"], atol: 0, rtol: 0, "nearest2x y")   // a copy: exact
    y.backward(f["nearest2x.dy"])
    expectClose(x.grad!, f["nearest2x.dx"], atol: 1e-6, rtol: 1e-6, "nearest2x dx")   // 4-term sums, torch's order
}

@Test(arguments: [false, true])
func resizeBicubicGradcheck(_ antialias: Bool) {
    for (shape, height, width) in [([1, 2, 9, 9], 7, 7), ([1, 2, 5, 5], 9, 9), ([1, 1, 7, 11], 5, 13), ([2, 1, 6, 10], 9, 10)] {
        gradcheck({ $0.resizeBicubic(height: height, width: width, antialias: antialias) },
                  at: .randn(shape, dtype: .float64, seed: 51))
    }
}

@Test func upsampleNearest2xGradcheck() {
    gradcheck({ $0.upsampleNearest2x() }, at: .randn([2, 3, 3, 5], dtype: .float64, seed: 52))
}

/// Hand-derived: both filters' weights sum to 1 per output (plain Keys cubic by construction, antialiased
/// by normalisation), so a constant image stays constant, and equal sizes give back the input.
@Test(arguments: [false, true])
func resizeBicubicPreservesConstantsAndIdentity(_ antialias: Bool) {
    let c = Tensor.full([1, 2, 37, 37], 0.7, dtype: .float64)
    for (h, w) in [(16, 16), (9, 50), (37, 37)] {
        expectClose(c.resizeBicubic(height: h, width: w, antialias: antialias), .full([1, 2, h, w], 0.7, dtype: .float64),
                    atol: 1e-14, rtol: 0, "\(h)×\(w)")
    }
    // Equal sizes skip the pass (a copy, as torch); that is sound because the tables are the identity there:
    // every output's nonzero weights are exactly 1 on its own input index.
    let x = Tensor.randn([1, 3, 6, 5], dtype: .float64, seed: 53)
    expectClose(x.resizeBicubic(height: 6, width: 5, antialias: antialias), x, atol: 0, rtol: 0, "identity")
    for n in [1, 5, 6, 37] {
        let table = ResampleTable<Double>(antialias ? .bicubicAntialias : .bicubic, inSize: n, outSize: n)
        for i in 0..<n {
            let taps = (0..<table.count[i]).map { (table.index[i * table.taps + $0], table.weight[i * table.taps + $0]) }
            let nonzero = taps.filter { $0.1 != 0 }
            #expect(nonzero.count == 1 && nonzero[0].0 == i && Swift.abs(nonzero[0].1 - 1) < 1e-15, "size \(n) output \(i): \(taps)")
        }
    }
}

/// The antialiased 37 → 16 table against the formula written out in docs (spec/dinov2.md §3), in float64.
@Test func antialiasTableMatchesSpecFormula() {
    let table = ResampleTable<Double>(.bicubicAntialias, inSize: 37, outSize: 16)
    let scale = 37.0 / 16.0, support = 2 * scale
    func keys(_ x: Double) -> Double {
        let a = -0.5, u = Swift.abs(x)
        if u < 1 { return (a + 2) * u * u * u - (a + 3) * u * u + 1 }
        return u < 2 ? a * u * u * u - 5 * a * u * u + 8 * a * u - 4 * a : 0
    }
    for i in 0..<16 {
        let center = scale * (Double(i) + 0.5)
        let first = Swift.max(Int(center - support + 0.5), 0), last = Swift.min(Int(center + support + 0.5), 37)
        let raw = (first..<last).map { keys((Double($0) - center + 0.5) / scale) }
        let total = raw.reduce(0, +)
        #expect(table.count[i] == last - first, "output \(i)")
        for (t, r) in raw.enumerated() {
            #expect(table.index[i * table.taps + t] == first + t)
            #expect(Swift.abs(table.weight[i * table.taps + t] - r / total) < 1e-14, "output \(i) tap \(t)")
        }
    }
}

/// Sizes big enough for several parallel chunks in both passes: each plane resized alone (one chunk) gives
/// the same values, and the backward satisfies the adjoint identity ⟨resize(x), dy⟩ = ⟨x, dx⟩.
@Test(arguments: [false, true])
func resizeBicubicAcrossChunks(_ antialias: Bool) {
    let x = Tensor.randn([4, 8, 64, 64], dtype: .float64, seed: 71)
    x.requiresGrad = true
    let y = x.resizeBicubic(height: 56, width: 56, antialias: antialias)
    let one = x.detached().narrowed(0, start: 3, length: 1).narrowed(1, start: 5, length: 1)
    expectClose(y.detached().narrowed(0, start: 3, length: 1).narrowed(1, start: 5, length: 1),
                one.resizeBicubic(height: 56, width: 56, antialias: antialias), atol: 0, rtol: 0, "plane (3, 5)")
    let dy = Tensor.randn(y.shape, dtype: .float64, seed: 72)
    let dx = gradients(of: y, wrt: [x], seed: dy)[0]!
    let inner = (y.detached() * dy).sum().item()
    #expect(Swift.abs((x.detached() * dx).sum().item() - inner) <= 1e-9 * Swift.abs(inner))
}
