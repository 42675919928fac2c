import HasteDiffusion
import HasteModels
import HasteNN
import HasteTensor

/// Extra `haste bench train` rows, run only when named with `--only` (not listed, so `Scripts/bench_compare.sh`
/// and the default run are unchanged): one MMDiT-XL/2 (spec/mmdit.md: depth 24, hidden 768, 24 heads) text-to-image
/// HASTE step without the optimizer: zero-grad, forward on x_t [B, 4, 32, 32] with a [B, 77, 768] context (logits
/// of blocks 4…7, projector after block 8), denoising + 0.5·projection (random teacher features [B, 256, 768]) +
/// 0.5·attention (random teacher logits [B, 12, 256, 256], first 12 heads) and backward. Scripts/bench_mmdit.sh
/// runs it next to Scripts/bench_torch_mmdit.py. With `--grad-checkpointing` the rows are "… +ckpt" and checkpoint each block.
enum MMDiTBenchmarks {
    static let batches = [1, 2]
    static func name(_ batch: Int, checkpointing: Bool = false) -> String {
        "MMDiT-XL/2 fwd+bwd bs\(batch)" + (checkpointing ? " +ckpt" : "")
    }
    static func names(checkpointing: Bool = false) -> [String] { batches.map { name($0, checkpointing: checkpointing) } }

    static func cases(seed: UInt64, device: Device = .cpu, checkpointing: Bool = false) -> [BenchCase] {
        batches.map { batch in
            BenchCase(op: name(batch, checkpointing: checkpointing), shape: "x [\(batch), 4, 32, 32], context [\(batch), 77, 768]",
                      work: .images(Double(batch))) {
                try step(batch: batch, seed: seed, device: device, checkpointing: checkpointing)
            }
        }
    }

    static func step(batch: Int, seed: UInt64, device: Device, checkpointing: Bool = false) throws -> () -> Void {
        let model = try MMDiT(try MMDiTConfig.named("MMDiT-XL/2"), seed: seed)
        model.store.move(to: device)
        let x0 = Tensor.randn([batch, 4, 32, 32], seed: seed &+ 1).to(device)
        let noise = Tensor.randn([batch, 4, 32, 32], seed: seed &+ 2).to(device)
        let t = Tensor.rand([batch], seed: seed &+ 3).to(device)
        let context = Tensor.randn([batch, 77, 768], seed: seed &+ 4).to(device)
        let feats = Tensor.randn([batch, 256, 768], seed: seed &+ 5).to(device)
        let teacher = Dictionary(uniqueKeysWithValues: (8...11).map { ($0, Tensor.randn([batch, 12, 256, 256], seed: seed &+ UInt64($0)).to(device)) })
        let c = PathType.linear.coefficients(t.reshaped([batch, 1, 1, 1]))
        let xt = c.alpha * x0 + c.sigma * noise
        return {
            model.store.zeroGrad()
            let out = model(xt, t: t, context: context, logitLayers: [4, 5, 6, 7], projections: true, checkpointing: checkpointing)
            let den = Losses.denoising(prediction: out.velocity, x0: x0, noise: noise, t: t, path: .linear)
            let proj = Losses.projection(out.projections, [feats])
            let attn = Losses.attention(student: out.attentionLogits, teacher: teacher,
                                        pairs: [(4, 8), (5, 9), (6, 10), (7, 11)], heads: 12)
            (den + proj * 0.5 + attn * 0.5).backward()
        }
    }
}
