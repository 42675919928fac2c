import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// `HASTE_FLASH_D_FROM_LOW_OUTPUT=1` (`Tensor.attentionDeltaFromLowOutput`): the flash backward's D from the output
/// rounded to bf16, on the fused attention half-block (no float32 out kept: D reads õ where the forward merged it, or
/// õ's heads widened where the heads were copied) and on the general path (its saved output rounded): still each
/// other's bits, and not the default's (the switch reaches both). Head dims 4 (copies) and 8, 16 (in place).
@Suite struct AttentionDeltaTests {
    @Test(arguments: [(2, 7, 8, true, true), (1, 70, 16, true, false), (2, 5, 32, false, true)])
    func deltaFromTheRoundedOutputKeepsBothPathsTogether(c: (Int, Int, Int, Bool, Bool)) {
        let (n, t, d, bias, viaAdaLN) = c
        let seed = UInt64(n * 1000 + t * 10 + d)
        func run(fused: Bool) -> ([UInt32], [[UInt32]], Bool) {
            AutocastAdaLNTests.run(.attention, fused: fused, n: n, t: t, d: d, bias: bias, viaAdaLN: viaAdaLN, seed: seed)
        }
        let (general, fused) = Tensor.$attentionDeltaFromLowOutput.withValue(true) { (run(fused: false), run(fused: true)) }
        let (plainGeneral, plainFused) = (run(fused: false), run(fused: true))
        let what = "n \(n) t \(t) d \(d) bias \(bias) via adaLN \(viaAdaLN)"
        #expect(fused.2 && !general.2, "\(what): the fused path must record BF16AdaLNBranchBackward")
        #expect(fused.0 == general.0 && fused.1 == general.1, "\(what): the fused path's output and gradients are the general path's")
        #expect(fused.0 == plainFused.0 && general.0 == plainGeneral.0, "\(what): the forward is unchanged")
        #expect(fused.1 != plainFused.1 && general.1 != plainGeneral.1, "\(what): D from the rounded output changes the gradients")
    }

    /// The fused half-block keeps no float32 out under the switch: its tape holds [N, H, T, Dh] float32 less.
    @Test func theFusedTapeKeepsNoFloat32Output() {
        let (n, t, d, heads) = (2, 16, 32, 2)
        let x = Tensor.randn([n, t, d], seed: 1).to(EmulatedCUDA.device)
        let params = [Tensor.randn([3 * d, d], seed: 2) * 0.3, Tensor.randn([d, d], seed: 3) * 0.3].map { $0.to(EmulatedCUDA.device) }
        let m = (0..<3).map { Tensor.randn([n, d], seed: UInt64(4 + $0)).to(.bfloat16).to(.float32).to(EmulatedCUDA.device) }
        x.requiresGrad = true
        let branch = BF16Branch.attention(qkv: params[0], qkvBias: nil, proj: params[1], projBias: nil, heads: heads)
        func saved() -> Int {
            let y = Autocast.run(.bfloat16) { Tensor.autocastAdaLNBranch(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch)! }
            return Tensor.savedBytes(from: [y]).totalSaved
        }
        let with = saved(), without = Tensor.$attentionDeltaFromLowOutput.withValue(true) { saved() }
        #expect(with - without == n * heads * t * (d / heads) * 4, "saved \(with) bytes, \(without) with D from õ")
    }
}
