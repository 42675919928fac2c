import HasteTensor
import HasteNN

/// Multi-head self-attention of the HASTE SiT (reference `models/sit.py` Attention): qkv features are
/// [q | k | v], head-major within each; optional qk-norm; returns the scaled pre-softmax logits on request.
public struct SiTAttention {
    let qkv: Linear, proj: Linear
    let qNorm: (Tensor, Tensor)?, kNorm: (Tensor, Tensor)?
    let heads: Int

    public init(_ p: ParameterScope, dim: Int, heads: Int, qkNorm: Bool) {
        qkv = Linear(p["qkv"], dim, 3 * dim)
        if qkNorm {   // LayerNorm(head_dim), affine, eps 1e-5 (torch default in the reference)
            qNorm = (p["q_norm"].parameter("weight", [dim / heads], .ones), p["q_norm"].parameter("bias", [dim / heads], .zeros))
            kNorm = (p["k_norm"].parameter("weight", [dim / heads], .ones), p["k_norm"].parameter("bias", [dim / heads], .zeros))
        } else {
            qNorm = nil; kNorm = nil
        }
        proj = Linear(p["proj"], dim, dim)
        self.heads = heads
    }

    /// This attention as a branch on bf16 operands (Autocast bf16 on CUDA: `Tensor.autocastBranch`,
    /// `Tensor.autocastAdaLNBranch`); nil with qk-norm or packed weights. It returns no logits.
    public var bf16Branch: BF16Branch? {
        guard qNorm == nil, qkv.packed == nil, proj.packed == nil else { return nil }
        return .attention(qkv: qkv.weight, qkvBias: qkv.bias, proj: proj.weight, projBias: proj.bias, heads: heads)
    }

    /// x: (N, T, D). Returns (N, T, D) and, when `logits`, the (N, H, T, T) logits.
    public func callAsFunction(_ x: Tensor, logits wantLogits: Bool) -> (Tensor, Tensor?) {
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        if !wantLogits, let branch = bf16Branch, let y = Tensor.autocastBranch(x, branch) { return (y, nil) }
        let fusedQKV = qkv(x)
        if qNorm == nil, let fused = Tensor.packedQKVAttention(fusedQKV, heads: heads, logits: wantLogits) {
            return (proj(fused.output), fused.logits)                  // no gradient (sampling): no head copies
        }
        // torch: qkv(x).reshape(N, T, 3, H, Dh).permute(2, 0, 3, 1, 4).unbind(0): (N, H, T, Dh) each
        var (q, k, v) = fusedQKV.splitHeads(heads)
        if let qn = qNorm, let kn = kNorm {
            q = q.layerNorm(weight: qn.0, bias: qn.1, eps: 1e-5)
            k = k.layerNorm(weight: kn.0, bias: kn.1, eps: 1e-5)
        }
        let out: Tensor, l: Tensor?
        if wantLogits {
            (out, l) = Tensor.attentionWithLogits(q, k, v)                                     // (N, H, T, Dh), (N, H, T, T)
        } else {
            (out, l) = (Tensor.scaledDotProductAttention(q, k, v), nil)
        }
        return (proj(out.transposed(1, 2).reshaped([n, t, d])), l)                           // (N, T, D)
    }
}

/// Mirrors `SiTBlock` in the reference `models/sit.py` (adaLN-Zero).
public struct SiTBlock {
    let attn: SiTAttention
    let mlp: MLP
    let adaLNModulation: Linear        // torch: Sequential(SiLU(), Linear) → the Linear is ".1"

    public init(_ p: ParameterScope, hidden: Int, heads: Int, mlpRatio: Double, qkNorm: Bool) {
        attn = SiTAttention(p["attn"], dim: hidden, heads: heads, qkNorm: qkNorm)
        mlp = MLP(p["mlp"], inFeatures: hidden, hidden: Int(Double(hidden) * mlpRatio), outFeatures: hidden, activation: .geluTanh)
        adaLNModulation = Linear(p["adaLN_modulation"][1], hidden, 6 * hidden, weightInit: .zeros)
    }

    /// x: (N, T, D) tokens; c: (N, D) conditioning. Returns (N, T, D) and the logits when asked.
    public func callAsFunction(_ x: Tensor, _ c: Tensor, logits: Bool) -> (Tensor, Tensor?) {
        modulated(x, c.silu(), logits: logits)
    }

    /// The block given silu(c), the input of its adaLN modulation (`Sequential(SiLU(), Linear)` in torch): `SiT`
    /// computes it once for all its blocks and the final layer (the same values; c's gradient sums the blocks' terms
    /// before SiLU's backward instead of after, the same sum in another order).
    func modulated(_ x: Tensor, _ activated: Tensor, logits: Bool) -> (Tensor, Tensor?) {
        let m = modulationChunks(adaLNModulation(activated), 6)   // shift, scale, gate (msa), then (mlp): 6 × (N, D)
        // Fused (Ops/Fused.swift): modulatedLayerNorm = modulate(layerNorm(x), shift, scale), gatedResidual =
        // x + gate.unsqueeze(1)·branch; the composites stay in the tests as the reference. Under Autocast bf16 on
        // CUDA each half is one op over bf16 branch operands (Ops/AutocastAdaLN.swift), the same values.
        let h: Tensor, l: Tensor?
        if !logits, let branch = attn.bf16Branch,
           let fused = Tensor.autocastAdaLNBranch(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch) {
            (h, l) = (fused, nil)
        } else if logits, let branch = attn.bf16Branch,
                  let fused = Tensor.autocastAdaLNAttentionWithLogits(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch) {
            (h, l) = fused                                                 // an aligned block: bf16 operands and logits
        } else {
            let (a, al) = attn(x.modulatedLayerNorm(shift: m[0], scale: m[1], eps: 1e-6), logits: logits)
            (h, l) = (x.gatedResidual(gate: m[2], a), al)                                   // (N, T, D)
        }
        if let branch = mlp.bf16Branch,
           let fused = Tensor.autocastAdaLNBranch(h, shift: m[3], scale: m[4], gate: m[5], eps: 1e-6, branch) {
            return (fused, l)
        }
        return (h.gatedResidual(gate: m[5], mlp(h.modulatedLayerNorm(shift: m[3], scale: m[4], eps: 1e-6))), l)   // (N, T, D)
    }
}

extension SiTBlock {
    /// The block under `Tensor.checkpoint`: the same outputs, its activations recomputed in backward. Outputs in
    /// the order the backward walk enters the block: the tokens (the next block's input), then the logits.
    func checkpointed(_ x: Tensor, _ activated: Tensor, logits: Bool) -> (Tensor, Tensor?) {
        let out = Tensor.checkpoint([x, activated]) { a in
            let (h, l) = self.modulated(a[0], a[1], logits: logits)
            return [h] + (l.map { [$0] } ?? [])
        }
        return (out[0], logits ? out[1] : nil)
    }
}

/// The reference `FinalLayer`: adaLN (shift, scale) then Linear(D → p·p·C).
public struct FinalLayer {
    let linear: Linear, adaLNModulation: Linear
    public init(_ p: ParameterScope, hidden: Int, patch: Int, outChannels: Int) {
        linear = Linear(p["linear"], hidden, patch * patch * outChannels, weightInit: .zeros)
        adaLNModulation = Linear(p["adaLN_modulation"][1], hidden, 2 * hidden, weightInit: .zeros)
    }
    public func callAsFunction(_ x: Tensor, _ c: Tensor) -> Tensor { modulated(x, c.silu()) }

    /// Given silu(c), as `SiTBlock.modulated`.
    func modulated(_ x: Tensor, _ activated: Tensor) -> Tensor {
        let m = modulationChunks(adaLNModulation(activated), 2)                             // shift, scale: 2 × (N, D)
        return linear(x.modulatedLayerNorm(shift: m[0], scale: m[1], eps: 1e-6))             // (N, T, p·p·C)
    }
}

/// `mod.chunk(k, axis: -1)` for an adaLN modulation (N, k·D), each piece contiguous (`Tensor.columnPieces`: one copy
/// into (k, N, D) forward; backward, the pieces' gradients side by side in one pass, rounded there for a bf16 linear).
/// The same values and gradients as the column slices of (N, k·D), which were each copied where a fused kernel read
/// them and whose gradients a running sum gathered.
func modulationChunks(_ mod: Tensor, _ k: Int) -> [Tensor] {
    mod.columnPieces(k)
}
