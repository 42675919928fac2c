import HasteTensor

/// The fused adaLN-block ops (modulatedLayerNorm, gatedResidual, biasGeluTanh), forward and backward. T = 70
/// tokens crosses the CUDA kernels' 64-row chunks of the per-item column sums; D = 45 is no multiple of a warp or
/// of SIMD16. k: the row moments (D) and two row sums for dx (2·D + 16); the per-item sums over T tokens on top
/// of x̂ (T + D + 8); the GELU's tanh and ≤ 10 pointwise roundings (16) plus the sum over rows for dbias.
extension ConformanceSuite {
    static var fusedCases: [OpCase] {
        [
            OpCase("modulatedLN (fused)", "[3,70,45] shift/scale [3,45]", .rounding(k: 2 * 45 + 70 + 16)) { c in
                let x = c.normal([3, 70, 45], scale: 2, shift: 0.5), shift = c.normal([3, 45]), scale = c.normal([3, 45], scale: 0.5)
                c.forwardBackward(x.modulatedLayerNorm(shift: shift, scale: scale, eps: 1e-6),
                                  [("x", x), ("shift", shift), ("scale", scale)])
            },
            OpCase("gatedResidual (fused)", "[3,70,45] gate [3,45]", .rounding(k: 72)) { c in
                let x = c.normal([3, 70, 45]), gate = c.normal([3, 45]), y = c.normal([3, 70, 45])
                c.forwardBackward(x.gatedResidual(gate: gate, y), [("x", x), ("gate", gate), ("y", y)])
            },
            OpCase("biasGeluTanh (fused)", "[3,70,45] bias [45]", .rounding(k: 3 * 70 + 16)) { c in
                let x = c.normal([3, 70, 45], scale: 2), bias = c.normal([45])
                c.forwardBackward(x.biasGeluTanh(bias), [("x", x), ("bias", bias)])
            },
        ]
    }
}
