/// Attention straight from a fused qkv projection, as DINOv2's and SiT's attention modules compute it (torch:
/// `qkv.reshape(N, T, 3, H, Dh).permute(2, 0, 3, 1, 4)`, softmax(q·kᵀ·scale)·v, then `.transpose(1, 2).reshape(N, T,
/// D)`), without the three head copies and the merge copy: the CPU's per-head products read q, k and v in place (row
/// stride 3·D) and write each head's output into its columns of [N, T, D]; the backward writes dq, dk and dv into
/// their columns of one [N, T, 3·D] gradient the same way, from the probabilities the forward kept or recomputed as
/// the split path does (`keepsProbabilities`). CUDA takes the calls without logits and gradient where its TF32
/// flash forward runs (CUDAFlashAttentionTF32.swift), reading the heads in place.
extension Tensor {
    /// qkv [N, T, 3·H·Dh] → (out [N, T, H·Dh], logits [N, H, T, T] when `logits`), or nil where the one-pass path
    /// does not apply (logits with a gradient recorded; Autocast; not float32; a backend or shape without it, asked
    /// before anything is allocated): then split the heads and use `scaledDotProductAttention` /
    /// `attentionWithLogits`, whose bits this gives, forward and backward. scale defaults to 1/√Dh.
    public static func packedQKVAttention(_ qkv: Tensor, heads: Int, logits wantLogits: Bool,
                                          scale: Double? = nil) -> (output: Tensor, logits: Tensor?)? {
        require(qkv.rank == 3 && heads > 0 && qkv.shape[2] % (3 * heads) == 0,
                "packedQKVAttention: input \(qkv.shape) must be [N, T, 3·H·Dh] with H = \(heads) heads")
        let records = GradMode.isEnabled && qkv.isTracked
        guard !(records && wantLogits), Autocast.lowering(qkv.dtype) == nil, qkv.dtype == .float32 else { return nil }
        let (n, t, d) = (qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3), dh = d / heads
        guard n > 0, t > 0, dh > 0 else { return nil }
        let s = scale ?? 1 / Double(dh).squareRoot()
        guard qkv.backend.packedQKVAttentionRuns(batch: n, tokens: t, heads: heads, headDim: dh, scale: s, logits: wantLogits,
                                                 gradient: records) else { return nil }
        let x = qkv.contiguous()
        let out = Tensor.empty([n, t, d], dtype: qkv.dtype, device: qkv.device)
        let logits = wantLogits ? Tensor.empty([n, heads, t, t], dtype: qkv.dtype, device: qkv.device) : nil
        let probs = records && keepsProbabilities(tokens: t, width: d)
            ? Tensor.empty([n, heads, t, t], dtype: qkv.dtype, device: qkv.device) : nil
        x.backend.packedQKVAttention(qkv: x.buffer, out: out.buffer, logits: logits?.buffer, probs: probs?.buffer,
                                     batch: n, tokens: t, heads: heads, headDim: dh, scale: s)
        // Recorded when qkv is tracked (never with logits, above); in a checkpoint's forward qkv is noted instead.
        return (out.recorded(PackedQKVAttentionBackward(qkv: qkv, probs: probs, heads: heads, scale: s)), logits)
    }

    /// Whether a recorded call keeps its probabilities [N, H, T, T] for the backward instead of recomputing them
    /// there (the same bits either way: the backward reads the P the forward made, or makes it again the same way).
    /// Kept where the tokens are at least half the width D = H·Dh: the recomputed q·kᵀ (T²·D multiply-adds) is then
    /// at least 1/72 of the block's linear products forward and backward (36·T·D²), with its exponentials on top,
    /// while P's bytes are T/(3·Dh) of qkv's whatever D. So SiT-S/2 (T 256, D 384) keeps it: `haste bench train`,
    /// SiT-S/2 bs4, 2 threads, AMD EPYC Zen 4, binaries alternating, three pairs: 791 → 771 ms mean, peak RSS 915 →
    /// 987 MiB. SiT-B/2 (D 768) recomputes: keeping it there gained ~0.5% (2800 → 2788 ms, two pairs) for 144 MiB
    /// more (2785 → 2929 MiB peak against PyTorch's 2966).
    static func keepsProbabilities(tokens t: Int, width d: Int) -> Bool { 2 * t >= d }
}

/// Keeps qkv (as given: a view is made contiguous again in backward) and the probabilities, or recomputes them.
struct PackedQKVAttentionBackward: Backward {
    let qkv: Tensor, probs: Tensor?, heads: Int, scale: Double
    var inputs: [Tensor] { [qkv] }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let x = qkv.contiguous()
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2] / 3)
        let dx = Tensor.empty(x.shape, dtype: dy.dtype, device: dy.device)
        x.backend.packedQKVAttentionBackward(qkv: x.buffer, probs: probs?.buffer, dOut: dy.buffer, dqkv: dx.buffer,
                                             batch: n, tokens: t, heads: heads, headDim: d / heads, scale: scale)   // whatever the thread count now
        return [dx]
    }
}
