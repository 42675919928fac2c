/// Autocast bf16 on CUDA: a two-layer MLP `fc2(act(fc1(x)))` whose hidden activations stay real bf16 tensors.
///
/// torch under `autocast(bfloat16)`: fc1's output h is a bf16 tensor, the activation reads it and writes a bf16 g
/// (float32 inside, rounded once), fc2 reads g as it is; in the backward dg (fc2's bf16 input gradient) and h give
/// dh = bf16(dg·f'(h)), which fc1's backward reads. The general path (`linear`, the activation, `linear`) computes
/// the same values on float32 carriers: fc1's output widened, the activation in float32, fc2 rounding it on the way
/// in; and backward the same with dg widened and dh rounded by fc1's backward. Here the carriers are skipped: for
/// SiT-XL/2's [N·T, 4608] hidden layer that is a widen, a float32 activation and a narrowing per layer and
/// direction (2 + 4 + 4 + 4 + 4 + 2 bytes per element forward instead of 2 + 2) and the float32 input and output the
/// activation's backward kept. The same bits as the general path: the GEMMs are the same calls on the same bf16
/// operands, and `unaryLow` is `unary`'s float32 formula rounded once, as fc2's narrowing rounded it.
extension Tensor {
    /// y = low(f(x)) for a tensor of a low dtype, no autograd: the backend's `unaryLow`, or widened, `unary`,
    /// rounded (the same values) where it has none.
    func unaryLowValues(_ op: UnaryOp) -> Tensor {
        let x = contiguous(), y = Tensor.empty(shape, dtype: dtype, device: device)
        if backend.unaryLow(op, x: x.buffer, y: y.buffer, count: count) { return y }
        return GradMode.withoutGrad { x.to(.float32).unary(op).to(dtype) }
    }

    /// dx = low(dy·f'(x)) for this low tensor x and a low dy, no autograd (`unaryBackwardLow`, or widened, the float32
    /// kernel, rounded).
    func unaryBackwardLowValues(_ op: UnaryOp, _ dy: Tensor) -> Tensor {
        let x = contiguous(), d = dy.contiguous(), dx = Tensor.empty(shape, dtype: dtype, device: device)
        if backend.unaryBackwardLow(op, x: x.buffer, dy: d.buffer, dx: dx.buffer, count: count) { return dx }
        let xw = x.to(.float32), dw = d.to(.float32), out = Tensor.empty(like: xw)
        backend.unaryBackward(op, x: xw.buffer, y: xw.buffer, dy: dw.buffer, dx: out.buffer, count: count)
        return out.to(dtype)
    }
}

/// The MLP branch on bf16 operands: h̃ = x̃·w̃1ᵀ + b̃1, g̃ = bf16(act(h̃)), ỹ = g̃·w̃2ᵀ + b̃2; backward from d̃y: dg = d̃y·w̃2,
/// dw2 = d̃yᵀ·g̃, db2 = Σ d̃y; dh = bf16(dg·f'(h̃)); dx = dh·w̃1, dw1 = dhᵀ·x̃, db1 = Σ dh — the two `BF16LinearBackward`s
/// and the activation's backward between them. For GELU(tanh) where the backend has it (cuBLASLt's epilogues on
/// CUDA, `linearBiasGeluTanh`/`geluTanhInputGradient`), the activation and its gradient ride in fc1's and fc2's
/// GEMMs instead, as Transformer Engine's MLP: g̃ = bf16(gelu(u)) of the float32 u whose rounding is h̃, and
/// dh = bf16(dg·gelu′(h̃)) of the float32 dg — each one bf16 rounding fewer than the general path, so the values
/// differ from it by at most about one bf16 step where a rounding moved; `HASTE_GEMM_GELU_EPILOGUE=0` keeps the
/// general path's bits.
struct BF16MLPTape: BF16BranchTape {
    /// g: the activation's output, nil where it is recomputed from h in backward (`BF16Branch.recomputesMLPActivation`).
    let xn: Tensor, w1n: Tensor, w2n: Tensor, h: Tensor, g: Tensor?, activation: UnaryOp

    static func forward(_ xn: Tensor, _ w1: Tensor, _ b1: Tensor?, _ activation: UnaryOp, _ w2: Tensor, _ b2: Tensor?,
                        records: Bool) -> (y: Tensor, tape: BF16BranchTape?) {
        let low = DType.bfloat16, w1n = w1.narrowed(low), w2n = w2.narrowed(low)
        let keep = !BF16Branch.recomputesMLPActivation
        // GELU(tanh) in fc1's epilogue where the backend has it; not where backward recomputes g from h (the
        // kernel's g of the rounded h would not be the epilogue's g of the float32 one).
        let b1n = b1?.narrowed(low)
        let fused = activation == .geluTanh && keep
            ? b1n.flatMap { xn.linearBiasGeluTanhEpilogue(w1n, $0, keepsPreActivation: records) } : nil
        let h = fused.map { $0.preActivation ?? $0.y } ?? xn.linear(w1n, b1n)   // (fused without records: no tape reads h)
        let g = fused?.y ?? h.unaryLowValues(activation)
        let y = g.linear(w2n, b2?.narrowed(low))
        let tape = records ? BF16MLPTape(xn: xn, w1n: w1n, w2n: w2n, h: h, g: keep ? g : nil, activation: activation) : nil
        return (y, tape)
    }

    func backward(_ dyn: Tensor, input: Bool, wanted: [Bool]) -> (dx: Tensor?, parameters: [Tensor?]) {
        let hidden = w1n.shape[0], inF = w1n.shape[1], outF = w2n.shape[0], rows = xn.count / Swift.max(inF, 1)
        let (wantW1, wantW2, wantB1, wantB2) = (wanted[0], wanted[1], wanted[2], wanted[3])
        let first = input || wantW1 || wantB1
        // fc2's input g, recomputed (the forward's kernel on its h) only where dw2 reads it: h stands in otherwise.
        let gv = wantW2 ? g ?? h.unaryLowValues(activation) : h
        let dy2 = dyn.reshaped([rows, outF]).contiguous(), h2 = h.reshaped([rows, hidden])
        // dh (and fc1's bias gradient) from fc2's input-gradient GEMM where the backend has GELU's gradient in
        // its epilogue: no dg tensor, no GELU backward kernel, no column sums of dh.
        var fused: (dh: Tensor, db: Tensor?)? = nil
        if first && activation == .geluTanh && h.backend.gemmEpilogues.contains(.geluTanh) && dy2.dtype == .bfloat16
            && h2.dtype == .bfloat16 {
            let dh = Tensor.empty([rows, hidden], dtype: .bfloat16, device: h.device)
            let db = wantB1 ? Tensor.empty([hidden], dtype: .bfloat16, device: h.device) : nil
            if h.backend.geluTanhInputGradient(rows: rows, outF: outF, hidden: hidden, dy: dy2.buffer, weight: w2n.contiguous().buffer,
                                               preActivation: h2.contiguous().buffer, dh: dh.buffer, biasGradient: db?.buffer) {
                fused = (dh, db)
            }
        }
        let fc2 = bf16LinearGradients(dy2, x: gv.reshaped([rows, hidden]), w: w2n,
                                      input: first && fused == nil, weight: wantW2, bias: wantB2)
        var fc1: (dx: Tensor?, dw: Tensor?, db: Tensor?) = (nil, nil, nil)
        if let dh = fused?.dh ?? fc2.dx.map({ h2.unaryBackwardLowValues(activation, $0) }) {
            fc1 = bf16LinearGradients(dh, x: xn.reshaped([rows, inF]), w: w1n, input: input, weight: wantW1,
                                      bias: wantB1 && fused?.db == nil)
            if let db = fused?.db { fc1.db = db }
        }
        return (fc1.dx?.reshaped(xn.shape), [fc1.dw, fc2.dw, fc1.db, fc2.db])
    }
}
