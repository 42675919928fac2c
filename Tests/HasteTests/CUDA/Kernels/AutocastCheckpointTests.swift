import Testing
import HasteDiffusion
import HasteModels
import HasteNN
@testable import HasteTensor
@testable import HasteCUDA

/// grad-checkpointing under Autocast bf16 on the emulated device, with HASTE's alignment loss on an aligned block's
/// bf16 logits (then a tracked bf16 tensor that is a checkpoint's output, whose gradient reaches the recompute as a
/// bf16 seed): every parameter gradient bit for bit with and without checkpointing. One computation repeated, where
/// bit equality is the right test (STYLE §2.9).
@Suite(.serialized) struct AutocastCheckpointTests {
    static let device = EmulatedCUDA.device

    @Test func anAlignedBlockUnderCheckpointingGivesTheSameGradients() throws {
        let sit = try tinyGenerationSiT(projectors: [5])
        sit.store.move(to: Self.device)
        let x = Tensor.randn([2, 1, 8, 8], seed: 31).to(Self.device), up = Tensor.randn([2, 1, 8, 8], seed: 32).to(Self.device)
        let t = Tensor([Float(0.3), 0.8], shape: [2]).to(Self.device), y = Tensor([Int64(1), 2]).to(Self.device)
        let teacher = (Tensor.randn([2, 2, 16, 16], seed: 33) * 3).to(.bfloat16).to(Self.device)
        func grads(_ checkpointing: Bool) -> [[UInt32]] {
            sit.store.setRequiresGrad(true)
            defer { sit.store.setRequiresGrad(false) }
            let out = Autocast.run(.bfloat16) {
                sit(x, t: t, y: y, logitLayers: [0], projections: true, checkpointing: checkpointing)
            }
            #expect(out.attentionLogits[0]!.dtype == .bfloat16, "checkpointing \(checkpointing)")
            let align = Losses.attention(student: out.attentionLogits, teacher: [0: teacher], pairs: [(0, 0)], heads: 1)
            let loss = (out.velocity * up).sum() + align * 100 + out.projections[0].square().sum()
            return sit.store.gradients(of: loss).map { floatBits($0.1) }
        }
        let plain = grads(false), checkpointed = grads(true)
        #expect(plain.count == checkpointed.count && plain.count > 10)
        for (i, (a, b)) in zip(checkpointed, plain).enumerated() { #expect(a == b, "gradient of \(sit.store.keys[i])") }
        let qkv = sit.store.keys.firstIndex(of: "blocks.0.attn.qkv.weight")!
        #expect(plain[qkv].contains { $0 != 0 })
    }
}
