/// Autocast bf16 on CUDA: the attention that returns its logits (HASTE's aligned blocks, the teacher's logit layers)
/// with its operands in bf16, as `autocastAdaLNBranch` does for the blocks without logits.
///
/// The general path (modulatedLayerNorm, `linear`, `splitHeads`, `attentionWithLogits` under autocast, `transposed`/
/// `reshaped`, `linear`, gatedResidual) keeps float32 carriers of everything between its bf16 GEMMs: qkv's output and
/// its heads, q·scale, the logits twice (the GEMM's widened output and its rounded softmax) and the probabilities,
/// the attention's output, and backward the mirror image. Here those are bf16 tensors: h̃ = x̃·w̃ᵀ + b̃ (N, T, 3D), its
/// heads q̃, k̃, ṽ (bf16 copies), q̃s = bf16(q̃·scale), L̃ = q̃s·k̃ᵀ (a bf16 GEMM: N·H × T × T), P̃ = bf16(softmax(L̃))
/// (`softmaxForwardLow`), Õ = P̃·ṽ merged into proj's operand õ, ỹ = õ·p̃wᵀ + p̃b. The logits leave as L̃ itself, a
/// bf16 tensor that autograd tracks (torch's autocast leaves q·kᵀ bf16; the general path returns a float32 carrier
/// of the same values): its gradient has its dtype, the loss's term rounded to bf16 and added to the softmax's as
/// torch adds two bf16 gradients (Graph.swift `gradientSum`); the loss reads it as it is (`softCrossEntropyReadsLow`),
/// so no float32 copy of N·H·T·T is written, read and held until the backward. Every value is the general path's, bit
/// for bit on the emulated device: the same GEMMs on the same bf16 operands, the float32 kernels' arithmetic on widened
/// values, and each rounding the general path makes (a second rounding of a bf16 value is the identity).
///
/// Two autograd nodes share one tape: the output's (`BF16LogitsAttentionOutputBackward`: the gated residual, proj,
/// P̃·ṽ and the softmax, inputs x, gate, proj's parameters and the logits) and the logits' (`…LogitsBackward`: q̃s·k̃ᵀ,
/// qkv, the LayerNorm, inputs x, shift, scale and qkv's parameters). The output's runs first (the logits are its
/// input): it hands dṽ to the tape and the softmax's gradient to the logits, whose node then has the whole d̃L.
extension Tensor {
    /// `(x + gate·proj(attention(heads of qkv(modulatedLayerNorm(x, shift, scale)))), logits)` under Autocast bf16 on
    /// CUDA, as SiT's aligned blocks compute it (`SiTAttention` with logits inside an adaLN half-block), or nil where
    /// `autocastAdaLNBranch` would not apply. logits: [N, H, T, T] = (q·Dh^-½)·kᵀ, bf16 (the general path: a float32
    /// carrier of these values; `.to(.float32)` widens them, differentiably).
    public static func autocastAdaLNAttentionWithLogits(_ x: Tensor, shift: Tensor, scale: Tensor, gate: Tensor, eps: Double,
                                                       _ branch: BF16Branch) -> (output: Tensor, logits: Tensor)? {
        guard case let .attention(w, b, pw, pb, heads) = branch, x.backend.fusedBranchesInBF16, x.rank == 3, x.count > 0,
              branch.applies(to: x), branch.outFeatures == x.shape[2] else { return nil }
        let (n, d) = (x.shape[0], x.shape[2])
        guard [shift, scale, gate].allSatisfy({ $0.shape == [n, d] && $0.dtype == .float32 && $0.device == x.device }) else { return nil }
        let inputs = [x, shift, scale, gate] + branch.parameters
        let records = GradMode.isEnabled && inputs.contains { $0.isTracked }
        let front = BF16AdaLNFront(x, shift: shift, scale: scale, eps: eps)
        let (core, l) = BF16LogitsAttention.forward(front.xn, w, b, pw, pb, heads: heads)
        let g = gate.contiguous()
        let out = Tensor.empty(x.shape, dtype: .float32, device: x.device)
        x.backend.gatedResidualForward(front.x.buffer, gate: g.buffer, core.y.buffer, out.buffer, batch: n, tokens: x.shape[1],
                                       cols: d, low: .bfloat16)
        guard records else {
            if let reads = CheckpointReads.current { reads.note(inputs) }
            return (out, l)
        }
        let tape = BF16LogitsAttentionTape(front: front, core: core, gate: g, shift: shift, scale: scale, branch: branch)
        let logits = l.recorded(BF16LogitsAttentionLogitsBackward(tape: tape))
        return (out.recorded(BF16LogitsAttentionOutputBackward(tape: tape, logits: logits)), logits)
    }

    /// `(proj(attention(heads of qkv(x))), logits)` under Autocast bf16 on CUDA without a gradient (a frozen teacher's
    /// logit layers), the output a float32 carrier and the logits the bf16 tensor L̃ itself, as torch's autocast leaves
    /// them (the alignment loss reads a bf16 target as it is: `softCrossEntropyReadsLow`; no float32 copy of
    /// N·H·T·T made and held until the loss); nil where it does not apply (recording, or `autocastBranch` would not).
    public static func autocastAttentionBranchWithLogits(_ x: Tensor, _ branch: BF16Branch) -> (output: Tensor, logits: Tensor)? {
        guard case let .attention(w, b, pw, pb, heads) = branch, x.rank == 3, branch.applies(to: x) else { return nil }
        let inputs = [x] + branch.parameters
        guard !(GradMode.isEnabled && inputs.contains { $0.isTracked }) else { return nil }
        let (core, logits) = BF16LogitsAttention.forward(x.narrowed(.bfloat16), w, b, pw, pb, heads: heads)
        if let reads = CheckpointReads.current { reads.note(inputs) }
        return (core.y.to(.float32), logits)
    }
}

/// modulatedLayerNorm's forward writing the branch's bf16 operand (as `autocastAdaLNBranch`), and what its backward reads.
struct BF16AdaLNFront {
    let x: Tensor, scaleRounded: Tensor, mean: Tensor, rstd: Tensor, xn: Tensor

    init(_ x: Tensor, shift: Tensor, scale: Tensor, eps: Double) {
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let xc = x.contiguous(), sh = shift.contiguous(), sc = scale.contiguous()
        // As modulatedLayerNorm under Autocast: 1 + scale is a bf16 op in torch (scale is a bf16 Linear output): the
        // forward uses (sc + 1) rounded, − 1, and writes it for the backward.
        scaleRounded = Tensor.empty([n, d], dtype: .float32, device: x.device)
        mean = Tensor.empty([n * t], dtype: .float32, device: x.device)
        rstd = Tensor.empty(like: mean)
        xn = Tensor.empty([n, t, d], dtype: .bfloat16, device: x.device)
        x.backend.modulatedLayerNormForward(xc.buffer, shift: sh.buffer, scale: sc.buffer, xn.buffer, mean: mean.buffer,
                                            rstd: rstd.buffer, batch: n, tokens: t, cols: d, eps: eps, roundedScale: scaleRounded.buffer)
        self.x = xc
    }

    /// From d̃x̃n (bf16): dx (plus `residual` where given), dshift and dscale (rounded once, as the general path's rounded
    /// 1 + scale rounds it), each where wanted.
    func backward(_ dxn: Tensor, x wantX: Bool, shift wantShift: Bool, scale wantScale: Bool, residual: Tensor? = nil)
        -> (dx: Tensor?, dshift: Tensor?, dscale: Tensor?) {
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let dx = Tensor.empty(like: x)
        let dshift = wantShift ? Tensor.empty([n, d], dtype: .float32, device: x.device) : nil
        let dscale = wantScale ? Tensor.empty([n, d], dtype: .float32, device: x.device) : nil
        x.backend.modulatedLayerNormBackward(x.buffer, scale: scaleRounded.buffer, mean: mean.buffer, rstd: rstd.buffer,
                                             dxn.buffer, dx: dx.buffer, residual: residual?.buffer, dshift: dshift?.buffer,
                                             dscale: dscale?.buffer, batch: n, tokens: t, cols: d, dscaleLow: .bfloat16)
        return (wantX ? dx : nil, dshift, dscale)
    }
}

/// The attention core on bf16 operands from x̃n [N, T, D]: ỹ (bf16 [N, T, D]) and the bf16 tensors the backward reads;
/// `forward` also returns the bf16 logits L̃, which the backward does not read (the tape does not keep them).
struct BF16LogitsAttention {
    let y: Tensor
    let xn: Tensor, wn: Tensor, pwn: Tensor, qs: Tensor, k: Tensor, v: Tensor, p: Tensor, o: Tensor
    let heads: Int, scale: Double

    static func forward(_ xn: Tensor, _ w: Tensor, _ b: Tensor?, _ pw: Tensor, _ pb: Tensor?,
                        heads: Int) -> (core: BF16LogitsAttention, logits: Tensor) {
        Autocast.core {
            GradMode.withoutGrad {
                let (n, t, d) = (xn.shape[0], xn.shape[1], xn.shape[2]), dh = d / heads, low = DType.bfloat16
                let scale = 1 / Double(dh).squareRoot(), wn = w.narrowed(low), pwn = pw.narrowed(low)
                let h = xn.linear(wn, b?.narrowed(low))                                          // (N, T, 3D) bf16
                let (q, k, v) = (h.heads(0, of: 3, heads, bf16: true), h.heads(1, of: 3, heads, bf16: true),
                                 h.heads(2, of: 3, heads, bf16: true))                           // (N, H, T, Dh) each
                let qs = q.unaryLowValues(.affine(scale: scale, shift: 0))                       // bf16(q·scale)
                let l = qs.matmul(k.transposed(-1, -2))                                          // (N, H, T, T) bf16
                let p = l.softmaxLowValues()
                let o = Tensor.empty([n, t, d], dtype: low, device: xn.device)
                p.matmul(v).mergeHeads(into: o, 0)                                               // (N, T, D) bf16
                let y = o.linear(pwn, pb?.narrowed(low))
                return (BF16LogitsAttention(y: y, xn: xn, wn: wn, pwn: pwn, qs: qs, k: k, v: v, p: p, o: o, heads: heads, scale: scale),
                        l)
            }
        }
    }
}

extension Tensor {
    /// bf16(softmax(self)) over the last axis of this bf16 tensor, no autograd (`softmaxForwardLow`: the aligned
    /// attention runs on CUDA only, whose backend has it).
    func softmaxLowValues() -> Tensor {
        let x = contiguous(), y = Tensor.empty(shape, dtype: dtype, device: device)
        let cols = shape[rank - 1], rows = cols == 0 ? 0 : count / cols
        let ran = backend.softmaxForwardLow(x.buffer, y.buffer, rows: rows, cols: cols)
        require(ran, "internal: \(device) has no bf16 softmax")
        return y
    }

    /// bf16(softmax backward) as a bf16 tensor, from this bf16 softmax output and a bf16 dy, no autograd
    /// (`softmaxBackwardLow`, as `softmaxLowValues`).
    func softmaxBackwardLowValues(_ dy: Tensor) -> Tensor {
        let y = contiguous(), g = dy.contiguous(), dx = Tensor.empty(shape, dtype: dtype, device: device)
        let cols = shape[rank - 1], rows = cols == 0 ? 0 : count / cols
        let ran = backend.softmaxBackwardLow(y.buffer, g.buffer, dx.buffer, rows: rows, cols: cols)
        require(ran, "internal: \(device) has no bf16 softmax backward")
        return dx
    }
}

/// What both nodes read (a struct: `Tensor.savedBytes` counts its tensors), and dṽ handed from the output's node to
/// the logits' (`handoff.dv`; nil: the output had no gradient).
struct BF16LogitsAttentionTape {
    final class Handoff { var dv: Tensor? }
    let front: BF16AdaLNFront, core: BF16LogitsAttention, gate: Tensor, shift: Tensor, scale: Tensor, branch: BF16Branch
    let handoff = Handoff()

    /// qkv's and proj's parameters as the branch's slots (w, pw, b, pb).
    var slots: [Tensor?] { branch.slots }
}

/// out = x + gate·ỹ: dx = dout (the residual; the LayerNorm's term comes from the logits' node), dgate and d̃y (the
/// gated residual's bf16 kernels), proj's backward to dõ, dP̃ = dÕ·ṽᵀ and dṽ = P̃ᵀ·dÕ (bf16 GEMMs), and the logits'
/// gradient bf16(P̃·(dP̃ − Σ dP̃·P̃)) as a bf16 tensor (the walk adds the loss's term, rounded, to it in bf16).
struct BF16LogitsAttentionOutputBackward: InPlaceGradientBackward {
    let tape: BF16LogitsAttentionTape, logits: Tensor
    private var proj: (w: Tensor, b: Tensor?) { (tape.slots[1]!, tape.slots[3]) }
    var inputs: [Tensor] { [tape.front.x, tape.gate, proj.w] + (proj.b.map { [$0] } ?? []) + [logits] }

    func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, into: inputs.map { _ in nil }) }

    func gradients(_ dout: Tensor, into: [Tensor?]) -> [Tensor?] {
        GradMode.withoutGrad {
            Autocast.core {
                let core = tape.core, x = tape.front.x, (n, t, d) = (x.shape[0], x.shape[1], x.shape[2]), dc = dout.contiguous()
                let dgate = tape.gate.isTracked ? Tensor.empty(like: tape.gate) : nil
                let dy = Tensor.empty([n, t, d], dtype: .bfloat16, device: x.device)
                x.backend.gatedResidualBackward(gate: tape.gate.buffer, core.y.buffer, dc.buffer, dy: dy.buffer, dgate: dgate?.buffer,
                                                batch: n, tokens: t, cols: d, low: .bfloat16)
                let g = bf16LinearGradients(dy.reshaped([n * t, d]), x: core.o.reshaped([n * t, d]), w: core.pwn, input: logits.isTracked,
                                            weight: proj.w.isTracked, bias: proj.b?.isTracked == true)
                var dl: Tensor?                       // (nothing upstream of the attention tracked: no dṽ, no d̃L)
                if logits.isTracked {
                    let dO = g.dx!.reshaped([n, t, d]).heads(0, of: 1, core.heads, bf16: true)    // (N, H, T, Dh) bf16
                    tape.handoff.dv = core.p.transposed(-1, -2).matmul(dO)
                    dl = core.p.softmaxBackwardLowValues(dO.matmul(core.v.transposed(-1, -2)))
                }
                let params = bf16Carriers([g.dw] + (proj.b != nil ? [g.db] : []), into: Array(into.dropFirst(2).dropLast()))
                return [x.isTracked ? dc : nil, dgate] + params + [dl]
            }
        }
    }
}

/// From the logits' whole gradient dL: d̃L = bf16(dL), dq̃s = d̃L·k̃ and dk̃ = d̃Lᵀ·q̃s (bf16 GEMMs), dq̃ = bf16(dq̃s·scale),
/// with dṽ (from the output's node) into qkv's bf16 gradient, qkv's backward, the LayerNorm's backward. dL comes as
/// d̃L itself (the logits are bf16: the walk rounds each term and adds them in bf16).
struct BF16LogitsAttentionLogitsBackward: InPlaceGradientBackward, RoundsIncomingGradient {
    let tape: BF16LogitsAttentionTape
    var incomingLow: DType { .bfloat16 }
    private var qkv: (w: Tensor, b: Tensor?) { (tape.slots[0]!, tape.slots[2]) }
    var inputs: [Tensor] { [tape.front.x, tape.shift, tape.scale, qkv.w] + (qkv.b.map { [$0] } ?? []) }

    func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, into: inputs.map { _ in nil }) }

    func gradients(_ dl: Tensor, into: [Tensor?]) -> [Tensor?] {
        GradMode.withoutGrad {
            Autocast.core {
                let core = tape.core, front = tape.front, (n, t, d) = (front.x.shape[0], front.x.shape[1], front.x.shape[2])
                let dln = dl.narrowed(.bfloat16)
                let dqs = dln.matmul(core.k), dk = dln.transposed(-1, -2).matmul(core.qs)
                let dq = core.qs.unaryBackwardLowValues(.affine(scale: core.scale, shift: 0), dqs)
                let dh = Tensor.empty([n, t, 3 * d], dtype: .bfloat16, device: front.x.device)
                dq.mergeHeads(into: dh, 0)
                dk.mergeHeads(into: dh, 1)
                (tape.handoff.dv ?? Tensor.zeros(dk.shape, dtype: .bfloat16, device: dk.device)).mergeHeads(into: dh, 2)
                tape.handoff.dv = nil                 // read once: not held for the rest of the backward walk
                let wantInput = front.x.isTracked || tape.shift.isTracked || tape.scale.isTracked
                let g = bf16LinearGradients(dh.reshaped([n * t, 3 * d]), x: core.xn.reshaped([n * t, d]), w: core.wn,
                                            input: wantInput, weight: qkv.w.isTracked, bias: qkv.b?.isTracked == true)
                var lead: [Tensor?] = [nil, nil, nil]
                if let dxn = g.dx {
                    let r = front.backward(dxn.reshaped([n, t, d]), x: front.x.isTracked, shift: tape.shift.isTracked,
                                           scale: tape.scale.isTracked)
                    lead = [r.dx, r.dshift, r.dscale]
                }
                return lead + bf16Carriers([g.dw] + (qkv.b != nil ? [g.db] : []), into: Array(into.dropFirst(3)))
            }
        }
    }
}
