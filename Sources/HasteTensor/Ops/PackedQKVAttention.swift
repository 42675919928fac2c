/// Inference attention straight from a fused qkv projection, as DINOv2's and SiT's attention modules compute it
/// (torch: `qkv.reshape(N, T, 3, H, Dh).permute(2, 0, 3, 1, 4)`, softmax(q·kᵀ·scale)·v, then
/// `.transpose(1, 2).reshape(N, T, D)`), without the three head copies and the merge copy: where no gradient is
/// recorded (a frozen teacher, sampling) the CPU's per-head products read q, k and v in place (row stride 3·D) and
/// write each head's output into its columns of [N, T, D].
extension Tensor {
    /// qkv [N, T, 3·H·Dh] → (out [N, T, H·Dh], logits [N, H, T, T] when `logits`), or nil where the one-pass path
    /// does not apply (a gradient would be recorded, or inside a checkpoint's forward; Autocast; not float32; a
    /// backend or shape without it): then split the heads and use `scaledDotProductAttention` /
    /// `attentionWithLogits`, whose bits this gives. scale defaults to 1/√Dh.
    public static func packedQKVAttention(_ qkv: Tensor, heads: Int, logits wantLogits: Bool,
                                          scale: Double? = nil) -> (output: Tensor, logits: Tensor?)? {
        require(qkv.rank == 3 && heads > 0 && qkv.shape[2] % (3 * heads) == 0,
                "packedQKVAttention: input \(qkv.shape) must be [N, T, 3·H·Dh] with H = \(heads) heads")
        let records = GradMode.isEnabled ? qkv.isTracked : CheckpointReads.current != nil
        guard !records, Autocast.lowering(qkv.dtype) == nil, qkv.dtype == .float32 else { return nil }
        let (n, t, d) = (qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3), dh = d / heads
        guard n > 0, t > 0, dh > 0 else { return nil }
        let x = qkv.contiguous()
        let out = Tensor.empty([n, t, d], dtype: qkv.dtype, device: qkv.device)
        let logits = wantLogits ? Tensor.empty([n, heads, t, t], dtype: qkv.dtype, device: qkv.device) : nil
        guard x.backend.packedQKVAttention(qkv: x.buffer, out: out.buffer, logits: logits?.buffer, batch: n, tokens: t,
                                           heads: heads, headDim: dh, scale: scale ?? 1 / Double(dh).squareRoot())
        else { return nil }
        return (out, logits)
    }
}
