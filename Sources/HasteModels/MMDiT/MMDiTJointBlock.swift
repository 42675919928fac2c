import HasteTensor
import HasteNN

/// One stream of a joint block (reference `DismantledBlock`): adaLN, qkv before the joint attention; proj and the
/// MLP after it. The last layer's context stream is "pre-only": adaLN (shift, scale) and qkv, nothing after.
/// Keys: attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1 (norms have no parameters).
struct MMDiTStream {
    let qkv: Linear
    let post: (proj: Linear, fc1: Linear, fc2: Linear)?
    let adaLN: Linear
    let heads: Int

    init(_ p: ParameterScope, hidden d: Int, heads: Int, mlpHidden: Int, preOnly: Bool, zeroAdaLN: Bool) {
        qkv = torchLinear(p["attn"]["qkv"], d, 3 * d)
        post = preOnly ? nil : (torchLinear(p["attn"]["proj"], d, d), torchLinear(p["mlp"]["fc1"], d, mlpHidden),
                                torchLinear(p["mlp"]["fc2"], mlpHidden, d))
        adaLN = torchLinear(p["adaLN_modulation"][1], d, (preOnly ? 2 : 6) * d, zero: zeroAdaLN)
        self.heads = heads
    }

    /// s: (N, L, D), c: (N, D) → q, k, v (N, H, L, Dh) and the six (two when pre-only) modulation chunks.
    func pre(_ s: Tensor, _ c: Tensor) -> (q: Tensor, k: Tensor, v: Tensor, mod: [Tensor]) {
        let (n, l, d) = (s.shape[0], s.shape[1], s.shape[2])
        let mod = modulationChunks(adaLN(c.silu()), post == nil ? 2 : 6)   // shift, scale, gate (msa), shift, scale, gate (mlp)
        let parts = qkv(s.modulatedLayerNorm(shift: mod[0], scale: mod[1], eps: 1e-6))
            .reshaped([n, l, 3, heads, d / heads]).permuted([2, 0, 3, 1, 4])                  // (3, N, H, L, Dh)
        return (parts.select(axis: 0, index: 0), parts.select(axis: 0, index: 1), parts.select(axis: 0, index: 2), mod)
    }

    /// s + gate·proj(attn); then s + gate·MLP(modulate(norm(s))). `attn`: (N, L, D). `lowStream`: s is a bf16 tensor
    /// in torch under autocast (the context stream: the context embedder's Linear output, and every residual sum of
    /// two bf16 tensors after it), so each residual sum is rounded as torch's bf16 add rounds it; the image stream
    /// is float32 there (the patch embedding plus the float32 position table).
    func postAttention(_ s: Tensor, _ attn: Tensor, _ mod: [Tensor], lowStream: Bool) -> Tensor {
        let post = post!
        func residual(_ sum: Tensor) -> Tensor { lowStream ? sum.roundedUnderAutocast() : sum }
        let h = residual(s.gatedResidual(gate: mod[2], post.proj(attn)))
        let m = post.fc2(post.fc1(h.modulatedLayerNorm(shift: mod[3], scale: mod[4], eps: 1e-6)).geluTanh())
        return residual(h.gatedResidual(gate: mod[5], m))
    }
}

/// Reference `JointBlock`: `context_block` then `x_block`; attention over concat(context, image) tokens,
/// context first (spec §3).
struct MMDiTJointBlock {
    let contextBlock: MMDiTStream, xBlock: MMDiTStream

    init(_ p: ParameterScope, hidden: Int, heads: Int, mlpHidden: Int, contextPreOnly: Bool, zeroAdaLN: Bool) {
        contextBlock = MMDiTStream(p["context_block"], hidden: hidden, heads: heads, mlpHidden: mlpHidden,
                                   preOnly: contextPreOnly, zeroAdaLN: zeroAdaLN)
        xBlock = MMDiTStream(p["x_block"], hidden: hidden, heads: heads, mlpHidden: mlpHidden, preOnly: false,
                             zeroAdaLN: zeroAdaLN)
    }

    /// ctx: (N, L, D), x: (N, T, D), c: (N, D). Returns the new streams (context nil after a pre-only block)
    /// and, when `logits`, the image stream's own scaled q·kᵀ [N, H, T, T] (text keys excluded, spec §3).
    func callAsFunction(_ ctx: Tensor, _ x: Tensor, _ c: Tensor, logits wantLogits: Bool)
        -> (context: Tensor?, x: Tensor, logits: Tensor?) {
        let (n, l, tx, d) = (x.shape[0], ctx.shape[1], x.shape[1], x.shape[2])
        let a = contextBlock.pre(ctx, c), b = xBlock.pre(x, c)
        let q = Tensor.cat([a.q, b.q], axis: 2), k = Tensor.cat([a.k, b.k], axis: 2), v = Tensor.cat([a.v, b.v], axis: 2)
        let joint = Tensor.scaledDotProductAttention(q, k, v).transposed(1, 2).reshaped([n, l + tx, d])   // (N, L+T, D)
        let logits = wantLogits ? MMDiTJointBlock.scaledLogits(b.q, b.k, scale: 1 / Double(d / xBlock.heads).squareRoot()) : nil
        let newX = xBlock.postAttention(x, joint.narrowed(1, start: l, length: tx), b.mod, lowStream: false)
        let newCtx = contextBlock.post == nil ? nil
            : contextBlock.postAttention(ctx, joint.narrowed(1, start: 0, length: l), a.mod, lowStream: true)
        return (newCtx, newX, logits)
    }
}

extension MMDiTJointBlock {
    /// The reference's `(q @ kᵀ) * scale`: under Autocast two roundings, the bf16 product's and the bf16 scaling's
    /// (torch: a bf16 matmul, then a bf16 tensor times a Python float); in float32 one GEMM with the scale as alpha.
    static func scaledLogits(_ q: Tensor, _ k: Tensor, scale: Double) -> Tensor {
        guard Autocast.precision.lowDType != nil, q.dtype == .float32 else { return Tensor.attentionLogits(q, k, scale: scale) }
        return (Tensor.attentionLogits(q, k, scale: 1).roundedUnderAutocast() * scale).roundedUnderAutocast()
    }

    /// The block under `Tensor.checkpoint`: the same outputs, its activations recomputed in backward. Outputs in
    /// the order the backward walk enters the block: the image stream (the residual path the final layer starts
    /// from), then the context stream (absent after a pre-only block), then the logits.
    func checkpointed(_ ctx: Tensor, _ x: Tensor, _ c: Tensor, logits wantLogits: Bool) -> (context: Tensor?, x: Tensor, logits: Tensor?) {
        let preOnly = contextBlock.post == nil
        let out = Tensor.checkpoint([x, ctx, c]) { a in
            let o = self(a[1], a[0], a[2], logits: wantLogits)
            return [o.x] + (o.context.map { [$0] } ?? []) + (o.logits.map { [$0] } ?? [])
        }
        return (preOnly ? nil : out[1], out[0], wantLogits ? out[preOnly ? 1 : 2] : nil)
    }
}
