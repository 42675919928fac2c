#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Scaled-dot-product attention without mask or dropout. torch: `F.scaled_dot_product_attention(q, k, v,
/// scale=scale)`; the logits variant also returns the pre-softmax `(q·scale)·kᵀ` that HASTE aligns with a
/// teacher (STYLE §5 "Alignment needs logits").

/// Sizes of one attention call. `batch` = N·H independent heads; every operand is contiguous row-major.
public struct AttentionShape: Sendable, Equatable {
    public let batch: Int, queries: Int, keys: Int, headDim: Int, valueDim: Int
    public init(batch: Int, queries: Int, keys: Int, headDim: Int, valueDim: Int) {
        self.batch = batch; self.queries = queries; self.keys = keys; self.headDim = headDim; self.valueDim = valueDim
    }
}

/// Kernels of the Attention family. Shapes per head: q [Tq, Dh], k [Tk, Dh], v [Tk, Dv], probabilities and
/// logits [Tq, Tk], output [Tq, Dv]; heads follow each other in memory. A nil gradient buffer is not computed.
public protocol AttentionKernels: AnyObject {
    /// probs = softmax(scale·q·kᵀ), saved for the backward (nil when no backward follows: the backend then keeps
    /// only a workspace), out = probs·v.
    func attentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape: AttentionShape, scale: Double)
    /// From the saved probs P: dv = Pᵀ·dOut; dS = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = dOut·vᵀ (the backend's own
    /// workspace); dq = scale·dS·k, dk = scale·dSᵀ·q.
    func attentionBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer,
                           dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double)
    /// `attentionBackward` from the probabilities `attentionForward` saves, recomputed here bit for bit from q and
    /// k, so that nothing of size Tq·Tk lives between the passes (what `scaledDotProductAttention` uses when it
    /// does not take the log-sum-exp path). The default recomputes them for every head at once with
    /// `attentionForward` (a transient [batch, Tq, Tk] and output); the CPU one pass of heads at a time.
    func attentionBackwardRecomputing(q: Buffer, k: Buffer, v: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?, dv: Buffer?,
                                      shape: AttentionShape, scale: Double)
    /// True when `scaledDotProductAttention` should save (out, LSE) and have the backward recompute the
    /// probabilities tile by tile (`attentionForwardLSE` / `attentionBackwardLSE`, flash attention) instead of
    /// saving the [Tq, Tk] probabilities (`attentionForward` / `attentionBackward`). CPU: false (saving is faster
    /// there); CUDA: true where its flash kernels take the head dims.
    func attentionRecomputesProbabilities(_ shape: AttentionShape) -> Bool
    /// True when `scaledDotProductAttention` takes the log-sum-exp path for `shape` and its `precision` kernels
    /// round q, k, v (and dOut) to `precision` themselves as they load them, to nearest even as `rounded(to:)` does
    /// (CUDA's bf16 tensor-core kernels): then float32 operands give what their rounded copies give, and Autocast
    /// passes them unrounded. Implies `attentionRecomputesProbabilities(shape)`.
    func attentionRoundsOperands(_ shape: AttentionShape, precision: ComputePrecision) -> Bool
    /// True where the `precision: .bfloat16` LSE kernels also take q, k, v (forward) and q, k, v, dOut (backward) as
    /// bfloat16 buffers, all four of one dtype, and then write dq, dk, dv as bfloat16 (each rounded once): the
    /// values of float32 carriers of the same bf16 values, bit for bit, and of their float32 gradients rounded
    /// (Autocast's bf16 branches pass the heads of a bf16 qkv without widening them). Default false.
    func attentionTakesBF16Operands(_ shape: AttentionShape) -> Bool
    /// out = softmax(scale·q·kᵀ)·v without a [Tq, Tk] matrix in memory, and (unless nil) the row log-sum-exp
    /// lse[h, i] = log Σ_j exp(scale·q_i·k_j) ([batch, Tq], natural log, float32; float64 with float64 inputs).
    /// Tk = 0 gives out = 0 and lse = −∞.
    func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape: AttentionShape, scale: Double)
    /// From the forward's out and lse: P = exp(scale·q·kᵀ − lse) (recomputed), D = rowsum(dOut ⊙ out),
    /// dv = Pᵀ·dOut, dS = P ⊙ (dOut·vᵀ − D), dq = scale·dS·k, dk = scale·dSᵀ·q. Deterministic (no float atomics).
    func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                              dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double)
    /// `attentionForwardLSE` on float32 carriers of `precision`'s values (Autocast, Ops/Precision.swift): a backend
    /// with low-precision kernels may use them (CUDA, bf16 on sm_80+: tensor-core products of the bf16 operands,
    /// the probabilities rounded to bf16 before they multiply v); the default, and the CPU, run the float32 kernels
    /// on the carriers (Autocast's reference).
    func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape: AttentionShape, scale: Double,
                             precision: ComputePrecision)
    /// `attentionBackwardLSE` on carriers of `precision` (CUDA bf16: P and dS rounded to bf16 before their products).
    func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                              dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double,
                              precision: ComputePrecision)
    /// The bf16 `precision: .bfloat16` LSE forward on bf16 operands read where they lie (`layouts`: each head's rows
    /// inside a token-major tensor, SiT's qkv output), out and lse contiguous as above; with `out16`, bf16(out) also
    /// stored by `layouts.dOut` (the heads merged into tokens, proj's operand: each value rounded as a narrowing
    /// cast of out rounds it), and then `out` may be nil: the float32 out not stored at all (sampling, where no
    /// backward reads it). Returns false, with nothing done, where the backend cannot (then copy the heads out
    /// and call the contiguous form). Default false.
    func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer?, lse: Buffer?, shape: AttentionShape, scale: Double,
                             layouts: AttentionLayouts, out16: Buffer?) -> Bool
    /// Its backward: dOut read by `layouts.dOut`, dq, dk, dv (bf16) written by `layouts.dq`, `.dk`, `.dv` (into qkv's
    /// gradient); `out` float32 contiguous, or bf16 read by `layouts.dOut` (the forward's `out16`: D from the rounded
    /// output). False, with nothing done, where the backend cannot. Default false.
    func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                              dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double,
                              layouts: AttentionLayouts) -> Bool
    /// probs = softmax(logits, -1) (logits are left untouched), out = probs·v.
    func softmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, shape: AttentionShape)
    /// dv = Pᵀ·dOut; dLogits = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = dOut·vᵀ.
    func softmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?, shape: AttentionShape)
    /// Whether this backend runs `packedQKVAttention` (and, with `gradient`, its backward) for float32 qkv of this
    /// shape, with or without `logits`: asked before anything is allocated for it. The default: never.
    func packedQKVAttentionRuns(batch: Int, tokens: Int, heads: Int, headDim: Int, scale: Double, logits: Bool,
                                gradient: Bool) -> Bool
    /// Attention read straight from a fused qkv projection (`Tensor.packedQKVAttention`), where
    /// `packedQKVAttentionRuns`: qkv [N, T, 3·H·Dh] ([q | k | v], head-major within each), out [N, T, H·Dh] (the
    /// heads merged), logits [N, H, T, T] = scale·q·kᵀ unless nil, the probabilities [N, H, T, T] into probs unless
    /// nil (kept for the backward); the bits of the split heads through `attentionForward` (or `attentionLogits` and
    /// `softmaxMatmulForward`).
    func packedQKVAttention(qkv: Buffer, out: Buffer, logits: Buffer?, probs: Buffer?, batch: Int, tokens: Int,
                            heads: Int, headDim: Int, scale: Double)
    /// Its backward without logits: dqkv [N, T, 3·H·Dh] = (dq | dk | dv) from dOut [N, T, H·Dh] and the probabilities
    /// the forward kept (probs), or recomputed (probs nil); the bits of `attentionBackwardRecomputing` on the split heads.
    func packedQKVAttentionBackward(qkv: Buffer, probs: Buffer?, dOut: Buffer, dqkv: Buffer, batch: Int, tokens: Int,
                                    heads: Int, headDim: Int, scale: Double)
}

/// Where an attention operand's rows lie in its buffer: element (b = n·heads + h, t, d) of the [batch, T, D] operand
/// at n·batch + h·head + t·token + d elements from the buffer's offset.
public struct HeadLayout: Sendable, Equatable {
    public var batch: Int, head: Int, token: Int
    public init(batch: Int, head: Int, token: Int) { self.batch = batch; self.head = head; self.token = token }
    /// Heads of width `headDim` side by side in a token-major [N, T, C] tensor (the buffer's offset at the first).
    public static func tokenMajor(tokens: Int, channels: Int, headDim: Int) -> HeadLayout {
        HeadLayout(batch: tokens * channels, head: headDim, token: channels)
    }
    /// A contiguous [batch, T, D] operand (its heads counted in the batch: `AttentionLayouts.heads` 1).
    public static func contiguous(tokens: Int, dim: Int) -> HeadLayout { HeadLayout(batch: tokens * dim, head: 0, token: dim) }
}

/// The layouts of a flash call's operands and gradients (`batch` of the AttentionShape = N·heads).
public struct AttentionLayouts: Sendable, Equatable {
    public var heads: Int
    public var q: HeadLayout, k: HeadLayout, v: HeadLayout, dOut: HeadLayout, dq: HeadLayout, dk: HeadLayout, dv: HeadLayout
    public init(heads: Int, q: HeadLayout, k: HeadLayout, v: HeadLayout, dOut: HeadLayout, dq: HeadLayout, dk: HeadLayout, dv: HeadLayout) {
        self.heads = heads; self.q = q; self.k = k; self.v = v; self.dOut = dOut; self.dq = dq; self.dk = dk; self.dv = dv
    }
    /// Self-attention on a packed [N, T, 3·H·Dh] qkv (q, k, v its three slots) whose gradient has the same layout,
    /// dOut [N, T, H·Dh] token-major.
    public static func packed(tokens t: Int, heads: Int, headDim dh: Int) -> AttentionLayouts {
        let qkv = HeadLayout.tokenMajor(tokens: t, channels: 3 * heads * dh, headDim: dh)
        return AttentionLayouts(heads: heads, q: qkv, k: qkv, v: qkv, dOut: .tokenMajor(tokens: t, channels: heads * dh, headDim: dh),
                                dq: qkv, dk: qkv, dv: qkv)
    }
    /// Every operand contiguous (what the layout-free calls mean).
    public static func contiguous(_ s: AttentionShape) -> AttentionLayouts {
        let q = HeadLayout.contiguous(tokens: s.queries, dim: s.headDim), k = HeadLayout.contiguous(tokens: s.keys, dim: s.headDim)
        let v = HeadLayout.contiguous(tokens: s.keys, dim: s.valueDim), o = HeadLayout.contiguous(tokens: s.queries, dim: s.valueDim)
        return AttentionLayouts(heads: 1, q: q, k: k, v: v, dOut: o, dq: q, dk: k, dv: v)
    }
}

extension AttentionKernels {
    public func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer?, lse: Buffer?, shape: AttentionShape, scale: Double,
                                    layouts: AttentionLayouts, out16: Buffer?) -> Bool { false }
    public func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                                     dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double,
                                     layouts: AttentionLayouts) -> Bool { false }
    public func attentionTakesBF16Operands(_ shape: AttentionShape) -> Bool { false }
    public func packedQKVAttentionRuns(batch: Int, tokens: Int, heads: Int, headDim: Int, scale: Double, logits: Bool,
                                       gradient: Bool) -> Bool { false }
    public func packedQKVAttention(qkv: Buffer, out: Buffer, logits: Buffer?, probs: Buffer?, batch: Int, tokens: Int,
                                   heads: Int, headDim: Int, scale: Double) {
        fatalError("packedQKVAttention: this backend has no such path (packedQKVAttentionRuns is false)")
    }
    public func packedQKVAttentionBackward(qkv: Buffer, probs: Buffer?, dOut: Buffer, dqkv: Buffer, batch: Int,
                                           tokens: Int, heads: Int, headDim: Int, scale: Double) {
        fatalError("packedQKVAttentionBackward: this backend has no such path (packedQKVAttentionRuns is false)")
    }

    public func attentionBackwardRecomputing(q: Buffer, k: Buffer, v: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?,
                                             dv: Buffer?, shape s: AttentionShape, scale: Double) {
        let device = q.storage.device
        let probs = Tensor.empty([s.batch, s.queries, s.keys], dtype: q.dtype, device: device)
        let out = Tensor.empty([s.batch, s.queries, s.valueDim], dtype: q.dtype, device: device)
        attentionForward(q: q, k: k, v: v, probs: probs.buffer, out: out.buffer, shape: s, scale: scale)
        attentionBackward(q: q, k: k, v: v, probs: probs.buffer, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: s, scale: scale)
    }
    public func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape: AttentionShape,
                                    scale: Double, precision: ComputePrecision) {
        attentionForwardLSE(q: q, k: k, v: v, out: out, lse: lse, shape: shape, scale: scale)
    }
    public func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                                     dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double,
                                     precision: ComputePrecision) {
        attentionBackwardLSE(q: q, k: k, v: v, out: out, lse: lse, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: shape,
                             scale: scale)
    }
}

extension Tensor {
    /// torch: `F.scaled_dot_product_attention(q, k, v, scale=scale)` (no mask, no dropout).
    /// q [N, H, Tq, Dh], k [N, H, Tk, Dh], v [N, H, Tk, Dv] → [N, H, Tq, Dv]; scale defaults to 1/√Dh.
    /// When autograd records, keeps for the backward pass q, k, v as given (views are made contiguous again in
    /// backward, so no copy lives between the passes) and, on backends with flash attention
    /// (`attentionRecomputesProbabilities`), the output and its row log-sum-exp [N, H, Tq]; elsewhere the backward
    /// recomputes the probabilities bit for bit (`attentionBackwardRecomputing`): the [N, H, Tq, Tk] probabilities
    /// are never kept (torch's CPU and CUDA kernels keep out and the log-sum-exp).
    /// Under `Autocast` (Ops/Precision.swift) q, k, v, the output and the gradients are rounded to bf16/fp16; the
    /// probabilities stay float32 inside the fused kernel, except in the flash kernels of a backend with
    /// low-precision ones (CUDA bf16: P and dS rounded to bf16 before their tensor-core products).
    public static func scaledDotProductAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, scale: Double? = nil) -> Tensor {
        let shape = attentionShape(q, k, v, "scaledDotProductAttention")
        let s = scale ?? 1 / Double(shape.headDim).squareRoot()
        if let low = Autocast.lowering(q.dtype) {
            let precision = Autocast.precision
            if q.backend.attentionRoundsOperands(shape, precision: precision) {
                // The composite's values without its three rounded copies: the kernels round q, k, v as they load
                // them; their gradients are still rounded (`gradientRounded`), and so are the output and its gradient.
                let r = [q, k, v].map { $0.gradientRounded(to: low) }
                return Autocast.core { fusedAttention(r[0], r[1], r[2], shape, scale: s, carriers: precision) }.rounded(to: low)
            }
            return autocastComposite(low, [q, k, v]) {
                fusedAttention($0[0]!, $0[1]!, $0[2]!, shape, scale: s, carriers: precision)
            }
        }
        return fusedAttention(q, k, v, shape, scale: s, carriers: .float32)
    }

    /// The fused kernels on q, k, v that hold values of `carriers` (float32, or Autocast's rounded operands).
    static func fusedAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, _ shape: AttentionShape, scale s: Double,
                                       carriers: ComputePrecision) -> Tensor {
        let qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous()
        let n = q.shape[0], h = q.shape[1]
        let records = GradMode.isEnabled && (qc.isTracked || kc.isTracked || vc.isTracked)
        let out = Tensor.empty([n, h, shape.queries, shape.valueDim], dtype: q.dtype, device: q.device)
        let saved: AttentionBackward.Saved?
        if q.backend.attentionRecomputesProbabilities(shape) {
            let lse = records ? Tensor.empty([n, h, shape.queries], dtype: q.dtype, device: q.device) : nil
            q.backend.attentionForwardLSE(q: qc.buffer, k: kc.buffer, v: vc.buffer, out: out.buffer, lse: lse?.buffer,
                                          shape: shape, scale: s, precision: carriers)
            // `attentionDeltaFromLowOutput`: the backward's D reads the output rounded as the caller gets it.
            let low = Tensor.attentionDeltaFromLowOutput ? carriers.lowDType : nil
            saved = lse.map { .logSumExp(out: low.map { out.roundedValues($0) } ?? out.detached(), lse: $0) }
        } else {
            q.backend.attentionForward(q: qc.buffer, k: kc.buffer, v: vc.buffer, probs: nil, out: out.buffer,
                                       shape: shape, scale: s)
            saved = records ? .nothing : nil
        }
        guard let saved else {                // inference
            if let reads = CheckpointReads.current { reads.note([q, k, v]) }      // a checkpoint's forward (no `recorded`)
            return out
        }
        return out.recorded(AttentionBackward(q: q, k: k, v: v, saved: saved, shape: shape, scale: s, carriers: carriers))
    }

    /// Attention that also returns its pre-softmax logits S = (q·scale)·kᵀ [N, H, Tq, Tk], differentiable:
    /// a loss on `logits` reaches q and k, a loss on `output` reaches q, k and v. torch:
    /// `S = (q * scale) @ k.transpose(-2, -1); output = S.softmax(-1) @ v`.
    public static func attentionWithLogits(_ q: Tensor, _ k: Tensor, _ v: Tensor,
                                           scale: Double? = nil) -> (output: Tensor, logits: Tensor) {
        let shape = attentionShape(q, k, v, "attentionWithLogits")
        let s = scale ?? 1 / Double(shape.headDim).squareRoot()
        if let low = Autocast.lowering(q.dtype) { return lowPrecisionAttentionWithLogits(q, k, v, scale: s, low) }
        let logits = attentionLogits(q, k, scale: s)
        return (softmaxMatmul(logits, v), logits)
    }

    /// `attentionWithLogits` under autocast, as torch computes the reference's `q = q * scale; logits = q @ kᵀ;
    /// out = logits.softmax(-1) @ v` with q a bf16 tensor: q·scale rounded, logits rounded (a bf16 matmul output),
    /// softmax in float32 on them with the probabilities rounded (softmax of a bf16 tensor, whose backward reads
    /// the rounded probabilities and rounds its result), out = round(P·v). The logits' two uses (softmax, the
    /// caller's loss) each round their gradient before the two are added, as torch adds two bf16 gradients.
    private static func lowPrecisionAttentionWithLogits(_ q: Tensor, _ k: Tensor, _ v: Tensor, scale: Double,
                                                        _ low: DType) -> (output: Tensor, logits: Tensor) {
        let qs = Autocast.core { q * scale }.rounded(to: low)
        if case .cuda = q.device, low == .bfloat16 {
            // A GPU: both products as bf16 tensor-core GEMMs (`matmul` under Autocast: autocastGemm), the composite's
            // values up to float32 summation order, instead of float32 GEMMs on rounded copies.
            let logits = qs.matmul(k.transposed(-1, -2))
            return (logits.lowPrecisionSoftmax(low).matmul(v), logits.gradientRounded(to: low))
        }
        let logits = autocastComposite(low, [qs, k]) { attentionLogits($0[0]!, $0[1]!, scale: 1) }
        let probs = logits.lowPrecisionSoftmax(low)
        return (autocastComposite(low, [probs, v]) { $0[0]!.matmul($0[1]!) }, logits.gradientRounded(to: low))
    }

    /// torch: `(q * scale) @ k.transpose(-2, -1)` for q [N, H, Tq, Dh], k [N, H, Tk, Dh] → [N, H, Tq, Tk],
    /// as one batched GEMM with alpha = scale.
    package static func attentionLogits(_ q: Tensor, _ k: Tensor, scale: Double) -> Tensor {
        require(q.rank == 4 && k.rank == 4 && q.shape[0] == k.shape[0] && q.shape[1] == k.shape[1]
                     && q.shape[3] == k.shape[3], "attentionLogits: q \(q.shape) and k \(k.shape) (need [N, H, T, Dh] each)")
        require(q.dtype == k.dtype && q.dtype.isComputeFloat && q.device == k.device,
                     "attentionLogits: q \(q.dtype) on \(q.device), k \(k.dtype) on \(k.device)")
        let qc = q.contiguous(), kc = k.contiguous()
        let b = q.shape[0] * q.shape[1], tq = q.shape[2], tk = k.shape[2], dh = q.shape[3]
        let logits = Tensor.empty([q.shape[0], q.shape[1], tq, tk], dtype: q.dtype, device: q.device)
        q.backend.gemm(transA: false, transB: true, m: tq, n: tk, k: dh, alpha: scale,
                       a: qc.buffer, lda: Swift.max(dh, 1), strideA: tq * dh, b: kc.buffer, ldb: Swift.max(dh, 1), strideB: tk * dh,
                       beta: 0, c: logits.buffer, ldc: Swift.max(tk, 1), strideC: tq * tk, batch: b)
        return logits.recorded(AttentionLogitsBackward(q: q, k: k, scale: scale))   // views: contiguous in backward
    }

    /// torch: `logits.softmax(-1) @ v` for logits [N, H, Tq, Tk], v [N, H, Tk, Dv] → [N, H, Tq, Dv], fused:
    /// the probabilities are computed once and kept for the backward.
    package static func softmaxMatmul(_ logits: Tensor, _ v: Tensor) -> Tensor {
        require(logits.rank == 4 && v.rank == 4 && logits.shape[0] == v.shape[0] && logits.shape[1] == v.shape[1]
                     && logits.shape[3] == v.shape[2], "softmaxMatmul: logits \(logits.shape) and v \(v.shape) (need [N, H, Tq, Tk] and [N, H, Tk, Dv])")
        require(logits.dtype == v.dtype && v.dtype.isComputeFloat && logits.device == v.device,
                     "softmaxMatmul: logits \(logits.dtype) on \(logits.device), v \(v.dtype) on \(v.device)")
        let lc = logits.contiguous(), vc = v.contiguous()
        let shape = AttentionShape(batch: v.shape[0] * v.shape[1], queries: logits.shape[2], keys: v.shape[2],
                                   headDim: 0, valueDim: v.shape[3])
        let probs = Tensor.empty(logits.shape, dtype: v.dtype, device: v.device)
        let out = Tensor.empty([v.shape[0], v.shape[1], shape.queries, shape.valueDim], dtype: v.dtype, device: v.device)
        v.backend.softmaxMatmulForward(logits: lc.buffer, v: vc.buffer, probs: probs.buffer, out: out.buffer, shape: shape)
        return out.recorded(SoftmaxMatmulBackward(logits: logits, v: v, probs: probs, shape: shape))
    }

    /// Validates q [N, H, Tq, Dh], k [N, H, Tk, Dh], v [N, H, Tk, Dv] for `op`.
    static func attentionShape(_ q: Tensor, _ k: Tensor, _ v: Tensor, _ op: String) -> AttentionShape {
        require(q.rank == 4 && k.rank == 4 && v.rank == 4,
                     "\(op): q \(q.shape), k \(k.shape), v \(v.shape): each must be [N, H, T, D]")
        require(q.shape[0] == k.shape[0] && q.shape[0] == v.shape[0] && q.shape[1] == k.shape[1] && q.shape[1] == v.shape[1],
                     "\(op): q \(q.shape), k \(k.shape), v \(v.shape): batch and head axes differ")
        require(q.shape[3] == k.shape[3] && k.shape[2] == v.shape[2],
                     "\(op): q \(q.shape), k \(k.shape), v \(v.shape): need q, k sharing Dh and k, v sharing Tk")
        require(q.dtype == k.dtype && q.dtype == v.dtype && q.dtype.isComputeFloat,
                     "\(op): dtypes \(q.dtype), \(k.dtype), \(v.dtype) (need one float dtype)")
        require(q.device == k.device && q.device == v.device, "\(op): q, k, v on \(q.device), \(k.device), \(v.device)")
        return AttentionShape(batch: q.shape[0] * q.shape[1], queries: q.shape[2], keys: k.shape[2],
                              headDim: q.shape[3], valueDim: v.shape[3])
    }
}

extension Tensor {
    /// `HASTE_FLASH_D_FROM_LOW_OUTPUT=1` (read once; tests set it per task): on bf16/fp16 carriers the flash
    /// backward's D = rowsum(dOut ⊙ out) reads the output rounded as the caller gets it, as torch's CUDA SDPA kernels
    /// (FlashAttention-2's preprocessing, cuDNN) take it from their stored bf16 output, so the bf16 attention branch
    /// keeps no float32 out (SiT-XL/2 bs256: ~7 GiB of the peak). Off by default: on the tiny SiT it moved the
    /// gradients away from torch's CPU autocast (README); `haste selftest --torch-fixture` compares both with torch's
    /// CUDA autocast on a GPU node (gpu_check `selftest-torch-fixture-d16`).
    @TaskLocal static var attentionDeltaFromLowOutput: Bool = {
        guard let v = getenv("HASTE_FLASH_D_FROM_LOW_OUTPUT") else { return false }
        return String(cString: v) == "1"
    }()
}

/// Saves q, k, v as the forward got them (made contiguous here, in backward) and, with flash attention, the
/// output and its row log-sum-exp, from which the kernel recomputes P tile by tile; otherwise nothing more: the
/// backend recomputes P as the forward made it. One kernel call gives dq, dk, dv (contiguous, shaped as q, k, v).
struct AttentionBackward: Backward {
    enum Saved { case nothing, logSumExp(out: Tensor, lse: Tensor) }
    let q: Tensor, k: Tensor, v: Tensor, saved: Saved
    let shape: AttentionShape, scale: Double, carriers: ComputePrecision
    var inputs: [Tensor] { [q, k, v] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dq = q.isTracked ? Tensor.empty(like: q) : nil
        let dk = k.isTracked ? Tensor.empty(like: k) : nil
        let dv = v.isTracked ? Tensor.empty(like: v) : nil
        let q = q.contiguous(), k = k.contiguous(), v = v.contiguous()      // untracked copies from here on
        switch saved {
        case .nothing:
            q.backend.attentionBackwardRecomputing(q: q.buffer, k: k.buffer, v: v.buffer, dOut: dy.buffer, dq: dq?.buffer,
                                                   dk: dk?.buffer, dv: dv?.buffer, shape: shape, scale: scale)
        case let .logSumExp(out, lse):
            q.backend.attentionBackwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer,
                                           dOut: dy.buffer, dq: dq?.buffer, dk: dk?.buffer, dv: dv?.buffer,
                                           shape: shape, scale: scale, precision: carriers)
        }
        return [dq, dk, dv]
    }
}

/// S = scale·q·kᵀ: dq = scale·dS·k, dk = scale·dSᵀ·q (batched GEMMs over the N·H heads). Saves q and k as the
/// forward got them (views are made contiguous here).
struct AttentionLogitsBackward: Backward {
    let q: Tensor, k: Tensor, scale: Double
    var inputs: [Tensor] { [q, k] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let b = q.shape[0] * q.shape[1], tq = q.shape[2], tk = k.shape[2], dh = q.shape[3]
        var dq: Tensor? = nil, dk: Tensor? = nil
        if q.isTracked {
            let g = Tensor.empty(like: q), kc = k.contiguous()
            q.backend.gemm(transA: false, transB: false, m: tq, n: dh, k: tk, alpha: scale,
                           a: dy.buffer, lda: Swift.max(tk, 1), strideA: tq * tk, b: kc.buffer, ldb: Swift.max(dh, 1), strideB: tk * dh,
                           beta: 0, c: g.buffer, ldc: Swift.max(dh, 1), strideC: tq * dh, batch: b)
            dq = g
        }
        if k.isTracked {
            let g = Tensor.empty(like: k), qc = q.contiguous()
            q.backend.gemm(transA: true, transB: false, m: tk, n: dh, k: tq, alpha: scale,
                           a: dy.buffer, lda: Swift.max(tk, 1), strideA: tq * tk, b: qc.buffer, ldb: Swift.max(dh, 1), strideB: tq * dh,
                           beta: 0, c: g.buffer, ldc: Swift.max(dh, 1), strideC: tk * dh, batch: b)
            dk = g
        }
        return [dq, dk]
    }
}

/// Saves the logits (for the graph edge only), v as the forward got it (made contiguous here) and the
/// probabilities P.
struct SoftmaxMatmulBackward: Backward {
    let logits: Tensor, v: Tensor, probs: Tensor
    let shape: AttentionShape
    var inputs: [Tensor] { [logits, v] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dLogits = logits.isTracked ? Tensor.empty(like: logits) : nil
        let dv = v.isTracked ? Tensor.empty(like: v) : nil
        let v = v.contiguous()
        v.backend.softmaxMatmulBackward(probs: probs.buffer, v: v.buffer, dOut: dy.buffer, dLogits: dLogits?.buffer,
                                        dv: dv?.buffer, shape: shape)
        return [dLogits, dv]
    }
}
