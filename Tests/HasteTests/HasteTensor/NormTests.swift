import Testing
import HasteTensor

/// Bounds: 1e-5 absolute + 1e-5 relative for y and all gradients against the float64 reference (float32 rows
/// of ≤ 210 elements). "ln_offset" (mean 50, spread 0.1) is ill-conditioned in float32: the saved mean is
/// only known to ulp(50)/2 = 1.9e-6, which rstd ≈ 10 scales to 1.9e-5 in x̂ and again by rstd in dx. It allows
/// 3e-5 on y and 2e-4 on dx; PyTorch's own float32 kernel is off by 4.1e-5 and 1.3e-3 on this case.
let normCases: [(String, [String], Double, Double, ([String: Tensor]) -> Tensor)] = [
    ("ln_affine", ["x", "w", "b"], 1e-5, 1e-5, { $0["x"]!.layerNorm(weight: $0["w"], bias: $0["b"], eps: 1e-5) }),
    ("ln_plain", ["x"], 1e-5, 1e-5, { $0["x"]!.layerNorm(eps: 1e-6) }),
    ("ln_weight", ["x", "w"], 1e-5, 1e-5, { $0["x"]!.layerNorm(weight: $0["w"], eps: 1e-6) }),
    ("ln_bias", ["x", "b"], 1e-5, 1e-5, { $0["x"]!.layerNorm(bias: $0["b"], eps: 1e-6) }),
    ("ln_len1", ["x", "w", "b"], 1e-5, 1e-5, { $0["x"]!.layerNorm(weight: $0["w"], bias: $0["b"], eps: 1e-5) }),
    ("ln_offset", ["x"], 3e-5, 2e-4, { $0["x"]!.layerNorm(eps: 1e-6) }),
    ("gn_affine", ["x", "w", "b"], 1e-5, 1e-5, { $0["x"]!.groupNorm(groups: 3, weight: $0["w"], bias: $0["b"], eps: 1e-5) }),
    ("gn_plain", ["x"], 1e-5, 1e-5, { $0["x"]!.groupNorm(groups: 2, eps: 1e-6) }),
    ("gn_2d", ["x", "w", "b"], 1e-5, 1e-5, { $0["x"]!.groupNorm(groups: 3, weight: $0["w"], bias: $0["b"], eps: 1e-5) }),
]

@Test(arguments: normCases.map(\.0))
func normMatchesPyTorch(_ name: String) throws {
    let (_, inputs, atol, gradAtol, op) = normCases.first { $0.0 == name }!
    try expectMatchesNormFixture("norm.safetensors", name, inputs: inputs, atol: atol, rtol: 1e-5, gradAtol: gradAtol, op)
}

@Test func layerNormGradcheck() {
    let x = Tensor.randn([3, 7], dtype: .float64, seed: 41)
    let w = Tensor.randn([7], dtype: .float64, seed: 42), b = Tensor.randn([7], dtype: .float64, seed: 43)
    gradcheck({ $0.layerNorm(eps: 1e-6) }, at: x)
    gradcheck({ $0[0].layerNorm(weight: $0[1], bias: $0[2], eps: 1e-5) }, at: [x, w, b])
    gradcheck({ $0[0].layerNorm(weight: $0[1], eps: 1e-5) }, at: [Tensor.randn([2, 3, 19], dtype: .float64, seed: 44),
                                                                 Tensor.randn([19], dtype: .float64, seed: 45)])
    gradcheck({ $0[0].layerNorm(bias: $0[1], eps: 1e-5) }, at: [x, b])
}

@Test func groupNormGradcheck() {
    let x = Tensor.randn([2, 6, 3], dtype: .float64, seed: 46)
    let w = Tensor.randn([6], dtype: .float64, seed: 47), b = Tensor.randn([6], dtype: .float64, seed: 48)
    gradcheck({ $0[0].groupNorm(groups: 3, weight: $0[1], bias: $0[2], eps: 1e-5) }, at: [x, w, b])
    gradcheck({ $0.groupNorm(groups: 2, eps: 1e-6) }, at: x)
}

/// The fused kernel against the composite (x − mean)/√(var + eps)·w + b, gradients included, in float64 on
/// [100, 700]: three row chunks, SIMD tails (700 = 43·16 + 12), so chunked dweight/dbias sums are covered.
@Test func layerNormMatchesComposite() {
    let x = Tensor.randn([100, 700], dtype: .float64, seed: 49) * 3.0 + 1.5
    let w = Tensor.randn([700], dtype: .float64, seed: 50), b = Tensor.randn([700], dtype: .float64, seed: 51)
    let dy = Tensor.randn([100, 700], dtype: .float64, seed: 52)
    func grads(_ f: (Tensor, Tensor, Tensor) -> Tensor) -> [Tensor] {
        let (xl, wl, bl) = (x.clone(), w.clone(), b.clone())
        for t in [xl, wl, bl] { t.requiresGrad = true }
        let y = f(xl, wl, bl)
        return [y.detached()] + gradients(of: y, wrt: [xl, wl, bl], seed: dy).map { $0! }
    }
    let fused = grads { $0.layerNorm(weight: $1, bias: $2, eps: 1e-5) }
    let reference = grads { x, w, b in
        (x - x.mean(axis: -1, keepDims: true)) * (x.variance(axes: [-1], keepDims: true) + 1e-5).rsqrt() * w + b
    }
    for (what, (a, r)) in zip(["y", "dx", "dw", "db"], zip(fused, reference)) {
        expectClose(a, r, atol: 1e-11, rtol: 1e-11, what)
    }
}

/// Under noGrad, float32 GroupNorm (+ SiLU) with a spatial size that is a multiple of 16 runs the fused CPU kernel
/// (`groupNormInference`); it must give the composite's bits exactly — layerNorm over [N·groups, −1] rows, × weight,
/// + bias, `.silu()` — with and without each affine parameter. The recording path and a spatial size off the
/// 16-lane grid (5×5: the composite itself) must agree too, and the recording path must still record.
@Test func groupNormInferenceMatchesTheCompositeBitForBit() {
    func composite(_ x: Tensor, _ groups: Int, _ w: Tensor?, _ b: Tensor?, _ silu: Bool) -> Tensor {
        var y = x.reshaped([x.shape[0] * groups, -1]).layerNorm(eps: 1e-6).reshaped(x.shape)
        let per = [x.shape[1]] + [Int](repeating: 1, count: x.rank - 2)
        if let w { y = y * w.reshaped(per) }
        if let b { y = y + b.reshaped(per) }
        return silu ? y.silu() : y
    }
    func bits(_ t: Tensor) -> [UInt32] { t.scalars(as: Float.self).map(\.bitPattern) }
    for shape in [[3, 8, 4, 12], [2, 6, 32], [2, 6, 5, 5]] {
        let c = shape[1], groups = c / 2
        let x = Tensor.randn(shape, seed: 61) * 3.0 + 0.5
        let w = Tensor.randn([c], seed: 62), b = Tensor.randn([c], seed: 63)
        for (wt, bt) in [(w, b), (w, nil), (nil, b), (nil, nil)] as [(Tensor?, Tensor?)] {
            for silu in [false, true] {
                let want = bits(noGrad { composite(x, groups, wt, bt, silu) })
                let fused = noGrad { x.groupNorm(groups: groups, weight: wt, bias: bt, eps: 1e-6, silu: silu) }
                #expect(bits(fused) == want, "\(shape) weight \(wt != nil) bias \(bt != nil) silu \(silu): fused")
                #expect(bits(x.groupNorm(groups: groups, weight: wt, bias: bt, eps: 1e-6, silu: silu)) == want,
                        "\(shape): untracked with recording on")
                let xl = x.clone()
                xl.requiresGrad = true
                let recorded = xl.groupNorm(groups: groups, weight: wt, bias: bt, eps: 1e-6, silu: silu)
                #expect(recorded.isTracked && bits(recorded) == want, "\(shape): recording path")
                // the kernel itself: taken exactly where spatial is a multiple of 16, with the composite's bits
                let y = Tensor.full(shape, .nan), spatial = x.count / (shape[0] * c)
                let taken = CPUBackend.shared.groupNormInference(x.buffer, weight: wt?.buffer, bias: bt?.buffer, y.buffer,
                                                                 batch: shape[0], channels: c, groups: groups,
                                                                 spatial: spatial, eps: 1e-6, silu: silu)
                #expect(taken == (spatial % 16 == 0), "\(shape): kernel taken \(taken)")
                if taken { #expect(bits(y) == want, "\(shape) weight \(wt != nil) bias \(bt != nil) silu \(silu): kernel") }
            }
        }
    }
    // a constant group: x − mean = 0, times a negative weight = −0, which a missing bias must leave −0 (+ (−0), not + 0)
    let flat = Tensor.full([1, 2, 16], 3.0), negative = Tensor([-2.0, 0.5] as [Float], shape: [2])
    let zeros = noGrad { flat.groupNorm(groups: 1, weight: negative, eps: 1e-6) }
    #expect(bits(zeros) == bits(noGrad { composite(flat, 1, negative, nil, false) }), "signed zeros")
    #expect(zeros.scalars(as: Float.self).prefix(16).allSatisfy { $0 == 0 && $0.sign == .minus }, "expected −0 in channel 0")
    let x64 = Tensor.randn([1, 4, 16], dtype: .float64, seed: 64), y64 = Tensor.empty(like: x64)
    #expect(!CPUBackend.shared.groupNormInference(x64.buffer, weight: nil, bias: nil, y64.buffer, batch: 1, channels: 4,
                                                  groups: 2, spatial: 16, eps: 1e-6, silu: false), "float64 taken")
}

@Test func normTrapsOnBadInput() async {
    let weight = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([3, 4]).layerNorm(weight: Tensor.ones([5]), eps: 1e-5)
    }
    #expect(trapMessage(weight).contains("layerNorm: weight [5] does not match input [3, 4] (need [4])"))
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([3, 4]).layerNorm(bias: Tensor.ones([4], dtype: .float64), eps: 1e-5) }
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([2, 6, 3]).groupNorm(groups: 4, eps: 1e-5) }
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([2, 6]).groupNorm(groups: 3, weight: Tensor.ones([3]), eps: 1e-5) }
}
