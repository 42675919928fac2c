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
    /// `w2·act(w1·x + b1) + b2` as `Linear`, `activation`, `Linear` compute it under `Autocast.run(.bfloat16)`, with
    /// the hidden activations as bf16 tensors (see above), or nil where that path does not apply: not on CUDA, not
    /// Autocast bf16, or an activation whose derivative reads its output (`derivativeReadsOnlyInput`). The output
    /// is a float32 carrier, as fc2's.
    public func autocastMLP(_ w1: Tensor, _ b1: Tensor?, _ activation: UnaryOp, _ w2: Tensor, _ b2: Tensor?) -> Tensor? {
        guard case .cuda = device, Autocast.lowering(dtype) == .bfloat16, activation.derivativeReadsOnlyInput else { return nil }
        let low = DType.bfloat16
        let xn = narrowed(low), w1n = w1.narrowed(low), w2n = w2.narrowed(low)
        let (h, g, y) = Autocast.core {
            GradMode.withoutGrad {
                let h = xn.linear(w1n, b1?.narrowed(low))
                let g = h.unaryLowValues(activation)
                return (h, g, g.linear(w2n, b2?.narrowed(low)))
            }
        }
        // Recorded also when nothing is (autocastGemm's reason: a checkpoint's forward notes what it reads).
        return y.to(.float32).recorded(BF16MLPBackward(x: self, w1: w1, b1: b1, w2: w2, b2: b2, activation: activation,
                                                       xn: xn, w1n: w1n, w2n: w2n, h: h, g: g))
    }

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

/// The backward of `autocastMLP`: d̃y = bf16(dy); dg = d̃y·w̃2, dw2 = d̃yᵀ·g, db2 = Σ d̃y; dh = bf16(dg·f'(h));
/// dx = dh·w̃1, dw1 = dhᵀ·x̃, db1 = Σ dh, each rounded to bf16 once and returned as a float32 carrier
/// (`bf16Gradients`), as the two `BF16LinearBackward`s and the activation's backward between them compute them.
struct BF16MLPBackward: Backward {
    let x: Tensor, w1: Tensor, b1: Tensor?, w2: Tensor, b2: Tensor?, activation: UnaryOp
    let xn: Tensor, w1n: Tensor, w2n: Tensor, h: Tensor, g: Tensor
    var inputs: [Tensor] { [x, w1, w2] + [b1, b2].compactMap { $0 } }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let hidden = w1.shape[0], inF = w1.shape[1], outF = w2.shape[0], rows = x.count / Swift.max(inF, 1)
        let first = x.isTracked || w1.isTracked || b1?.isTracked == true
        let grads = bf16Gradients(dy) { dyn in
            let d = dyn.reshaped([rows, outF])
            var dx: Tensor?, dw1: Tensor?, db1: Tensor?
            if first {
                let dh = h.reshaped([rows, hidden]).unaryBackwardLowValues(activation, d.matmul(w2n))
                dx = x.isTracked ? dh.matmul(w1n).reshaped(x.shape) : nil
                dw1 = w1.isTracked ? dh.transposed(0, 1).matmul(xn.reshaped([rows, inF])) : nil
                db1 = b1?.isTracked == true ? bf16ChannelSums(dh, axis: 1) : nil
            }
            return [dx, dw1, w2.isTracked ? d.transposed(0, 1).matmul(g.reshaped([rows, hidden])) : nil,
                    db1, b2?.isTracked == true ? bf16ChannelSums(d, axis: 1) : nil]
        }
        // `inputs` order: x, w1, w2, then the biases that exist.
        return [grads[0], grads[1], grads[2]] + (b1 == nil ? [] : [grads[3]]) + (b2 == nil ? [] : [grads[4]])
    }
}
