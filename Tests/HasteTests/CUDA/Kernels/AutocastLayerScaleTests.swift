import Testing
@testable import HasteTensor
@testable import HasteModels
@testable import HasteTraining
@testable import HasteCUDA

/// The teacher's half-blocks with the LayerNorm writing the branch's bf16 input and LayerScale reading its bf16
/// output (`autocastLayerScaledBranch`) on the emulated CUDA device: the general path's bits (patch and class
/// tokens, the logit layers' logits) with and without logit layers, and not taken where a gradient is recorded.
@Suite struct AutocastLayerScaleTests {
    static let device = EmulatedCUDA.device

    @Test func teacherHalfBlocksGiveTheGeneralPathsBits() {
        let model = tinyRandomDINOv2(valueSeed: 300, on: Self.device)
        let x = Tensor.randn([2, 3, 8, 8], seed: 8).to(Self.device)
        for layers in [Set<Int>(), [1], [0, 2]] {
            func run() -> [[UInt32]] {
                let out = noGrad { Trainer.autocast(.bfloat16, narrowing: model.store) { model(x, logitLayers: layers) } }
                return [out.patchTokens, out.classToken].map(floatBits) + layers.sorted().map { floatBits(out.attentionLogits[$0]!) }
            }
            let general = BF16Branch.$generalPathOnly.withValue(true) { run() }
            #expect(run() == general, "logit layers \(layers)")
        }
    }

    /// On the host-only device: the one-pass half-blocks launch the bf16 LayerNorm and the y16 residual, and none of
    /// the float32 LayerNorm, the branch-output widening or the input narrowing of the general route.
    static let hostOnly = hostOnlyDevice(15)

    @Test func teacherHalfBlocksLaunchTheBF16LayerNorm() {
        let (dev, driver) = Self.hostOnly
        let model = tinyRandomDINOv2(valueSeed: 300, on: dev)
        let x = Tensor.randn([2, 3, 8, 8], seed: 8).to(dev)
        driver.resetCounts()
        _ = noGrad { Trainer.autocast(.bfloat16, narrowing: model.store) { model(x, logitLayers: []) } }
        // 3 blocks × 2 half-blocks, and the final norm (float32)
        #expect(driver.launches["layer_norm_forward_y16_w16", default: 0] == 6 && driver.launches["fused_gated_forward_y16", default: 0] == 6
                && driver.launches["layer_norm_forward_w16", default: 0] == 1 && driver.launches["fused_gated_forward", default: 0] == 0,
                "\(driver.launches)")
        // With a gradient recorded through the input, the general route.
        let xt = Tensor.randn([2, 3, 8, 8], seed: 9).to(dev)
        xt.requiresGrad = true
        driver.resetCounts()
        _ = Trainer.autocast(.bfloat16, narrowing: model.store) { model(xt, logitLayers: []) }
        #expect(driver.launches["layer_norm_forward_y16_w16", default: 0] == 0 && driver.launches["layer_norm_forward_w16", default: 0] == 7,
                "\(driver.launches)")
    }
}
