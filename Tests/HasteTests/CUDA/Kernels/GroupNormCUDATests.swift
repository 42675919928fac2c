import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// GroupNorm (+ SiLU) without a gradient on CUDA (`groupNormInference`: row statistics, then one pass per plane)
/// gives the composite's bits on the emulated device (`HASTE_GROUPNORM_FUSED=0`: layerNorm over [N·groups, −1] rows,
/// × weight, + bias, SiLU, each its own kernel), with and without each affine parameter: spatial sizes a multiple of
/// 4 (16-byte pieces) and not, groups whose rows take the LayerNorm's warp kernels (≤ 1 280 columns) and its block
/// kernel (the SD-VAE's: 3 200 here), and a constant group times a negative weight (−0 kept without a bias).
@Suite struct GroupNormCUDATests {
    static let dev = EmulatedCUDA.device


    @Test func fusedInferenceGivesTheCompositesBits() {
        for (shape, groups) in [([3, 8, 4, 12], 4), ([2, 6, 32], 3), ([2, 6, 5, 5], 3), ([1, 64, 40, 40], 32)] {
            let c = shape[1]
            let x = (Tensor.randn(shape, seed: 61) * 3.0 + 0.5).to(Self.dev)
            let w = Tensor.randn([c], seed: 62).to(Self.dev), b = Tensor.randn([c], seed: 63).to(Self.dev)
            for (wt, bt) in [(w, b), (w, nil), (nil, b), (nil, nil)] as [(Tensor?, Tensor?)] {
                for silu in [false, true] {
                    let run = { noGrad { x.groupNorm(groups: groups, weight: wt, bias: bt, eps: 1e-6, silu: silu) } }
                    let composite = CUDABackend.$groupNormFusedAllowed.withValue(false) { floatBits(run()) }
                    let fused = CUDABackend.$groupNormFusedAllowed.withValue(true) { floatBits(run()) }
                    let differing = zip(fused, composite).filter { $0 != $1 }.count
                    #expect(fused.count == composite.count && differing == 0,
                            "\(shape) groups \(groups) weight \(wt != nil) bias \(bt != nil) silu \(silu): \(differing) of \(fused.count) differ")
                }
            }
        }
        let flat = Tensor.full([1, 2, 16], 3.0).to(Self.dev), negative = Tensor([-2.0, 0.5] as [Float], shape: [2]).to(Self.dev)
        let zeros = noGrad { flat.groupNorm(groups: 1, weight: negative, eps: 1e-6) }.to(.cpu).scalars(as: Float.self)
        #expect(zeros.prefix(16).allSatisfy { $0 == 0 && $0.sign == .minus }, "expected −0 in channel 0: \(zeros)")
    }

    /// It runs where nothing records: two launches (statistics, the pass), where the composite takes four or more.
    @Test func fusedInferenceLaunchesTwoKernels() {
        let driver = HostOnlyDriver(), be = CUDABackend(driver: driver, device: .cuda(13))
        Backends.register(be, for: .cuda(13))
        let x = Tensor.empty([2, 64, 32, 32], dtype: .float32, device: .cuda(13)), w = Tensor.empty([64], dtype: .float32, device: .cuda(13))
        driver.resetCounts()
        _ = CUDABackend.$groupNormFusedAllowed.withValue(true) { noGrad { x.groupNorm(groups: 32, weight: w, bias: w, eps: 1e-6, silu: true) } }
        #expect(driver.launches == ["layer_norm_stats": 1, "group_norm_apply": 1], "\(driver.launches)")
    }
}
