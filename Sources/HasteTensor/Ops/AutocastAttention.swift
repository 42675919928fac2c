/// Autocast bf16 on CUDA: SiT's self-attention `proj(attention(split(qkv(x))))` with its operands in bf16.
///
/// The general path (`linear`, `splitHeads`, `scaledDotProductAttention`, `transposed`/`reshaped`, `linear`) makes
/// per block and direction a float32 carrier of qkv's bf16 output, copies it into heads, rounds the attention's
/// output in place, copies it back into tokens and narrows it for proj; backward the mirror image, plus a rounding
/// of each of dq, dk, dv and a float32 [N, T, 3·D] gradient that qkv's backward narrows. Here the flash kernels read
/// the heads inside qkv's bf16 output where they take such layouts (`attentionForwardLSE(…, layouts:)`: CUDA's
/// direct kernels), and backward read dOut inside proj's bf16 dx and write dq, dk, dv into qkv's bf16 gradient;
/// elsewhere the heads are copied as they are (bf16 operands, `attentionTakesBF16Operands`) or widened into float32
/// carriers, and the gradients merged back (`stridedCast`). The float32 output is rounded straight into proj's bf16
/// [N, T, D] operand: by the in-place forward kernel itself (`out16`), else by a merging cast. The same bits: every rounding is the one the general path makes (a second rounding of a bf16
/// value is the identity), the kernels and GEMMs are the same calls.
extension Tensor {
    /// Element strides of an [N, H, T, Dh] view of heads inside a token-major [N, T, C] tensor (from the offset of
    /// its slot of H·Dh channels): splitHeads' pieces, the bf16 branch's head splits and merges.
    static func headStrides(tokens t: Int, channels c: Int, headDim dh: Int) -> [Int] { [t * c, dh, c, 1] }

    /// Slot `which` of `slots` equal ones along the last axis of this contiguous bf16 [N, T, C] tensor (q, k, v of
    /// qkv's output: 3 slots; proj's dx: 1), split into `heads` heads, as a contiguous [N, H, T, Dh] bf16 copy
    /// (`bf16`) or float32 carrier.
    func heads(_ which: Int, of slots: Int, _ heads: Int, bf16: Bool) -> Tensor {
        let (n, t, c) = (shape[0], shape[1], shape[2])
        let d = c / slots, dh = d / heads
        let piece = Tensor.empty([n, heads, t, dh], dtype: bf16 ? dtype : .float32, device: device)
        let src = Buffer(storage: storage, offset: offset + which * d, dtype: dtype)
        let strides = Tensor.headStrides(tokens: t, channels: c, headDim: dh)
        if bf16 {
            backend.stridedCopy(from: src, srcStrides: strides, to: piece.buffer, dstStrides: piece.strides, shape: piece.shape)
        } else {
            Tensor.stridedCast(src, strides, piece.buffer, piece.strides, shape: piece.shape, backend: backend)
        }
        return piece
    }

    /// This contiguous [N, H, T, Dh] tensor (float32, rounded on the way; or bf16) into slot `which` (of width H·Dh) of
    /// the bf16 [N, T, C] tensor `dst` (C = H·Dh for proj's operand, 3·H·Dh for qkv's gradient).
    func mergeHeads(into dst: Tensor, _ which: Int) {
        let (heads, t, dh) = (shape[1], shape[2], shape[3]), c = dst.shape[2]
        let slot = Buffer(storage: dst.storage, offset: dst.offset + which * heads * dh, dtype: dst.dtype)
        let slotStrides = Tensor.headStrides(tokens: t, channels: c, headDim: dh)
        if dtype == dst.dtype {
            backend.stridedCopy(from: buffer, srcStrides: strides, to: slot, dstStrides: slotStrides, shape: shape)
        } else {
            Tensor.stridedCast(buffer, strides, slot, slotStrides, shape: shape, backend: backend)
        }
    }

    /// dst (its strides) = src (its strides) cast between float32 and bfloat16 over `shape`: the backend's
    /// `stridedCast`, or a gather, a cast and a scatter (the same values) where it has none.
    static func stridedCast(_ src: Buffer, _ srcStrides: [Int], _ dst: Buffer, _ dstStrides: [Int], shape: [Int], backend: any Backend) {
        if backend.stridedCast(from: src, srcStrides: srcStrides, to: dst, dstStrides: dstStrides, shape: shape) { return }
        let device = src.storage.device
        let a = Tensor.empty(shape, dtype: src.dtype, device: device), c = Tensor.empty(shape, dtype: dst.dtype, device: device)
        backend.stridedCopy(from: src, srcStrides: srcStrides, to: a.buffer, dstStrides: a.strides, shape: shape)
        backend.cast(from: a.buffer, to: c.buffer, count: a.count)
        backend.stridedCopy(from: c.buffer, srcStrides: c.strides, to: dst, dstStrides: dstStrides, shape: shape)
    }
}

/// The self-attention branch on bf16 operands: h̃ = x̃·w̃ᵀ + b̃ (N, T, 3D), q, k, v its heads (bf16 or widened),
/// the flash forward, õ = bf16(out) in tokens, ỹ = õ·p̃wᵀ + p̃b; backward from d̃y: dõ = d̃y·p̃w, dpw = d̃yᵀ·õ,
/// dpb = Σ d̃y; the flash backward from dOut = dõ in heads; d̃h = bf16(dq | dk | dv) in tokens; dx = d̃h·w̃,
/// dw = d̃hᵀ·x̃, db = Σ d̃h.
struct BF16SelfAttentionTape: BF16BranchTape {
    /// h: qkv's bf16 output [N, T, 3·D] where the flash kernels read the heads inside it, else nil and q, k, v the
    /// heads as contiguous copies (one of the two kept, as much memory either way).
    /// out: the float32 output for the backward's D, nil where D reads õ (`Tensor.attentionDeltaFromLowOutput`).
    let xn: Tensor, wn: Tensor, pwn: Tensor, h: Tensor?, q: Tensor?, k: Tensor?, v: Tensor?, out: Tensor?, lse: Tensor, o: Tensor
    let shape: AttentionShape, scale: Double

    /// Slot `which` of 3 of a contiguous [N, T, 3·D] tensor as a buffer at its first element (heads read in place).
    static func slot(_ h: Tensor, _ which: Int) -> Buffer {
        Buffer(storage: h.storage, offset: h.offset + which * (h.shape[2] / 3), dtype: h.dtype)
    }

    static func forward(_ xn: Tensor, _ w: Tensor, _ b: Tensor?, _ pw: Tensor, _ pb: Tensor?, heads: Int,
                        records: Bool) -> (y: Tensor, tape: BF16BranchTape?) {
        let (n, t, d) = (xn.shape[0], xn.shape[1], xn.shape[2]), dh = d / heads
        let shape = AttentionShape(batch: n * heads, queries: t, keys: t, headDim: dh, valueDim: dh)
        let low = DType.bfloat16, scale = 1 / Double(dh).squareRoot(), wn = w.narrowed(low), pwn = pw.narrowed(low)
        let h = xn.linear(wn, b?.narrowed(low))                                              // (N, T, 3D) bf16
        // The float32 out only for the backward's D = rowsum(dOut ⊙ out) (unless D reads õ) or the copies' merge below:
        // sampling's in-place forward stores bf16(out) into o alone.
        let keepOut = records && !Tensor.attentionDeltaFromLowOutput
        var out = keepOut ? Tensor.empty([n, heads, t, dh], dtype: .float32, device: xn.device) : nil
        let lse = records ? Tensor.empty([n, heads, t], dtype: .float32, device: xn.device) : nil
        // The flash kernels read q, k, v inside h where they can (`layouts`), else from copies of the heads: bf16 where
        // the kernels take bf16 operands (`attentionTakesBF16Operands`), else widened.
        // In place, the kernel also writes bf16(out) merged into tokens (proj's operand o): no merging pass.
        let bf16Heads = xn.backend.attentionTakesBF16Operands(shape)
        let o = Tensor.empty([n, t, d], dtype: low, device: xn.device)                      // (N, T, D) bf16
        var (q, k, v): (Tensor?, Tensor?, Tensor?) = (nil, nil, nil)
        let inPlace = bf16Heads && xn.backend.attentionForwardLSE(q: slot(h, 0), k: slot(h, 1), v: slot(h, 2), out: out?.buffer,
                                                                  lse: lse?.buffer, shape: shape, scale: scale,
                                                                  layouts: .packed(tokens: t, heads: heads, headDim: dh), out16: o.buffer)
        if !inPlace {
            let (hq, hk, hv) = (h.heads(0, of: 3, heads, bf16: bf16Heads), h.heads(1, of: 3, heads, bf16: bf16Heads),
                                h.heads(2, of: 3, heads, bf16: bf16Heads))
            let full = out ?? Tensor.empty([n, heads, t, dh], dtype: .float32, device: xn.device)
            xn.backend.attentionForwardLSE(q: hq.buffer, k: hk.buffer, v: hv.buffer, out: full.buffer, lse: lse?.buffer,
                                           shape: shape, scale: scale, precision: .bfloat16)
            (q, k, v, out) = (hq, hk, hv, keepOut ? full : nil)
            full.mergeHeads(into: o, 0)
        }
        let y = o.linear(pwn, pb?.narrowed(low))
        guard let lse else { return (y, nil) }
        return (y, BF16SelfAttentionTape(xn: xn, wn: wn, pwn: pwn, h: inPlace ? h : nil, q: q, k: k, v: v, out: out, lse: lse, o: o, shape: shape,
                                         scale: scale))
    }

    func backward(_ dyn: Tensor, input: Bool, wanted: [Bool]) -> (dx: Tensor?, parameters: [Tensor?]) {
        let (n, t, d) = (xn.shape[0], xn.shape[1], xn.shape[2]), heads = shape.batch / n, rows = n * t
        let (wantW, wantPW, wantB, wantPB) = (wanted[0], wanted[1], wanted[2], wanted[3])   // qkv, proj, their biases
        let projection = bf16LinearGradients(dyn.reshaped([rows, d]), x: o.reshaped([rows, d]), w: pwn,
                                             input: input || wantW || wantB, weight: wantPW, bias: wantPB)
        var qkv: (dx: Tensor?, dw: Tensor?, db: Tensor?) = (nil, nil, nil)
        if let dO = projection.dx {
            let dh = Tensor.empty([n, t, 3 * d], dtype: .bfloat16, device: xn.device)
            // In place: dOut read inside proj's dx (and õ inside o, the same token-major layout, where D reads it), dq,
            // dk, dv written into their slots of qkv's gradient.
            var done = false
            if let h {
                done = xn.backend.attentionBackwardLSE(
                    q: BF16SelfAttentionTape.slot(h, 0), k: BF16SelfAttentionTape.slot(h, 1), v: BF16SelfAttentionTape.slot(h, 2),
                    out: out?.buffer ?? o.buffer, lse: lse.buffer, dOut: dO.buffer,
                    dq: BF16SelfAttentionTape.slot(dh, 0), dk: BF16SelfAttentionTape.slot(dh, 1), dv: BF16SelfAttentionTape.slot(dh, 2),
                    shape: shape, scale: scale, layouts: .packed(tokens: t, heads: heads, headDim: d / heads))
            }
            if !done {                        // (copies of the heads, or of h's where the forward read them in place)
                let bf16 = (q?.dtype ?? .bfloat16) == .bfloat16
                let hq = q ?? h!.heads(0, of: 3, heads, bf16: bf16), hk = k ?? h!.heads(1, of: 3, heads, bf16: bf16)
                let hv = v ?? h!.heads(2, of: 3, heads, bf16: bf16)
                let dOut = dO.reshaped([n, t, d]).heads(0, of: 1, heads, bf16: bf16)
                let outHeads = out ?? o.heads(0, of: 1, heads, bf16: false)      // (õ's heads widened where D reads õ)
                let dq = Tensor.empty(like: hq), dk = Tensor.empty(like: hk), dv = Tensor.empty(like: hv)   // q's dtype
                xn.backend.attentionBackwardLSE(q: hq.buffer, k: hk.buffer, v: hv.buffer, out: outHeads.buffer, lse: lse.buffer,
                                                dOut: dOut.buffer, dq: dq.buffer, dk: dk.buffer, dv: dv.buffer,
                                                shape: shape, scale: scale, precision: .bfloat16)
                for (i, g) in [dq, dk, dv].enumerated() { g.mergeHeads(into: dh, i) }
            }
            qkv = bf16LinearGradients(dh.reshaped([rows, 3 * d]), x: xn.reshaped([rows, d]), w: wn,
                                      input: input, weight: wantW, bias: wantB)
        }
        return (qkv.dx?.reshaped(xn.shape), [qkv.dw, projection.dw, qkv.db, projection.db])
    }
}
