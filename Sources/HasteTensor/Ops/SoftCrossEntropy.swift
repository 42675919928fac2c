/// Where the rows of a tensor's last axis start, from the tensor's first element: each outer index times its stride
/// (the last axis itself has stride 1). A view such as the teacher's logits without their class row and column keeps
/// its strides: no copy before a kernel reads it row by row.
public struct RowLayout: Sendable {
    /// The axes before the last, and their strides (elements).
    public let outerShape: [Int], outerStrides: [Int]

    /// Element offset of row r from the first element (rows counted over the outer axes in row-major order).
    @inlinable public func start(_ r: Int) -> Int {
        var rest = r, at = 0
        for axis in stride(from: outerShape.count - 1, through: 0, by: -1) {
            let n = outerShape[axis]
            at += rest % n * outerStrides[axis]
            rest /= n
        }
        return at
    }
}

extension Tensor {
    /// The rows of the last axis as a `RowLayout` and the buffer at this view's first element, or nil when that
    /// axis is not of stride 1.
    func lastAxisRows() -> (Buffer, RowLayout)? {
        guard rank >= 1, shape[rank - 1] == 1 || strides[rank - 1] == 1 else { return nil }
        return (Buffer(storage: storage, offset: offset, dtype: dtype),
                RowLayout(outerShape: Array(shape.dropLast()), outerStrides: Array(strides.dropLast())))
    }

    /// Mean over the rows of the last axis of the cross-entropy between the softmax of `target` (no gradient flows
    /// into it) and the log-softmax of self: torch `-(F.softmax(target, -1) * F.log_softmax(self, -1)).sum(-1).mean()`,
    /// the attention-alignment loss of HASTE per layer pair. Where the backend has the one-pass kernel
    /// (`softCrossEntropyRuns`) each pair of rows is read once, softmax(self) − softmax(target) is kept for the
    /// backward (one [rows, cols] tensor instead of the composite's probabilities and log-probabilities) and two
    /// exponentials are taken per element instead of three; elsewhere the composite runs. The same formulas per row
    /// (the composite's within float32 rounding: the row sums are ordered differently).
    ///
    /// bfloat16 logits (an autocast op's output) are read as their float32 values, as torch's autocast runs
    /// log-softmax in float32: the loss is float32 and their gradient is rounded to bf16.
    public func softCrossEntropy(target: Tensor) -> Tensor {
        require(shape == target.shape && rank >= 1, "softCrossEntropy: logits \(shape) and target \(target.shape) must have one shape")
        requireTargetDType(target)
        if dtype.isLowFloat { return to(.float32).softCrossEntropy(target: target) }
        guard let (mean, difference) = softCrossEntropyKernel(target: readableTarget(target)) else {
            return -target.detached().to(dtype).softmax(axis: -1).sumOfProducts(logSoftmax(axis: -1), axis: -1).mean()
        }
        return mean.recorded(SoftCrossEntropyBackward(x: self, difference: difference))
    }

    /// `softCrossEntropy` of the first `heads` heads of attention logits [N, H, Tq, Tk] against those of `target`
    /// [N, Ht, Tq, Tk] (no gradient flows into it): torch `-(F.softmax(t[:, :heads], -1) * F.log_softmax(x[:, :heads],
    /// -1)).sum(-1).mean()`, HASTE's attention-alignment loss of one layer pair. The values of `narrowed(1, start: 0,
    /// length: heads).softCrossEntropy(target: …)`, forward and backward; the backward writes self's whole gradient in
    /// one pass (zeros in the other heads), and where the walk offers it rounded to bf16 (the logits of an aligned
    /// block under autocast bf16, whose gradient is rounded: `LowGradientBackward`) as a bf16 tensor: no float32
    /// gradient of the used heads, no zero-filled float32 tensor, no copy between them and no rounding pass.
    public func softCrossEntropy(target: Tensor, leadingHeads heads: Int) -> Tensor {
        require(rank == 4 && target.rank == 4 && shape[0] == target.shape[0] && shape[2...] == target.shape[2...],
                "softCrossEntropy: logits \(shape) and target \(target.shape) must be [N, H, Tq, Tk] with one N, Tq, Tk")
        require(heads >= 1 && heads <= shape[1] && heads <= target.shape[1],
                "softCrossEntropy: \(heads) leading heads of logits \(shape) and target \(target.shape)")
        requireTargetDType(target)
        if dtype.isLowFloat && !(dtype == .bfloat16 && backend.softCrossEntropyReadsLow(dtype: .float32)) {
            return to(.float32).softCrossEntropy(target: target, leadingHeads: heads)       // widened first (the same values)
        }
        let t = readableTarget(target.detached().narrowed(1, start: 0, length: heads))
        guard let (mean, difference) = detached().narrowed(1, start: 0, length: heads).softCrossEntropyKernel(target: t) else {
            if dtype.isLowFloat { return to(.float32).softCrossEntropy(target: target, leadingHeads: heads) }
            return narrowed(1, start: 0, length: heads).softCrossEntropy(target: t)
        }
        return mean.recorded(SoftCrossEntropyHeadsBackward(x: self, difference: difference, heads: heads))
    }

    /// The dtype the loss computes in: float32 for bfloat16 or float16 logits, else theirs.
    private var lossDType: DType { dtype.isLowFloat ? .float32 : dtype }

    /// float32 or float64 logits and a target of their dtype, or bfloat16 (float16) logits and/or a bfloat16 target
    /// where the other is float32 (autocast bf16 on CUDA: the student's aligned logits and a frozen teacher's, as torch's
    /// autocast leaves them).
    private func requireTargetDType(_ target: Tensor) {
        let c = lossDType
        require(c.isComputeFloat && (target.dtype == c || (c == .float32 && target.dtype == .bfloat16)),
                "softCrossEntropy: needs float32 or float64 logits and a target of their dtype (or bfloat16 logits and/or target with float32), got \(dtype) and \(target.dtype)")
    }

    /// The target as the kernel reads it: a bfloat16 one as it is where the backend reads it so
    /// (`softCrossEntropyReadsLow`), else widened (exact: the same values, so the same bits either way).
    private func readableTarget(_ target: Tensor) -> Tensor {
        target.dtype == lossDType || backend.softCrossEntropyReadsLow(dtype: lossDType) ? target : target.detached().to(lossDType)
    }

    /// The one-pass kernel's mean loss (no autograd) and softmax(self) − softmax(target) [rows, cols], or nil where
    /// the backend has none for these tensors (the caller runs the composite).
    private func softCrossEntropyKernel(target: Tensor) -> (Tensor, Tensor)? {
        let cols = shape[rank - 1], rows = cols == 0 ? 0 : count / cols
        // No Autocast case: softmax, log-softmax and the sums ignore it (float32 under it, as torch autocast keeps them).
        guard rows > 0, backend.softCrossEntropyRuns(dtype: lossDType), let (x, xRows) = lastAxisRows(),
              let (t, tRows) = target.lastAxisRows(), target.device == device else { return nil }
        let rowLoss = Tensor.empty([rows], dtype: lossDType, device: device)
        let difference = Tensor.empty([rows, cols], dtype: lossDType, device: device)
        backend.softCrossEntropyForward(x: x, xRows: xRows, t: t, tRows: tRows, rows: rows, cols: cols,
                                        loss: rowLoss.buffer, difference: difference.buffer)
        return (GradMode.withoutGrad { rowLoss.mean() }, difference)
    }
}

/// d(mean CE)/dx = (softmax(x) − softmax(target)) · dy / rows, from the difference [rows, cols] the forward kept.
struct SoftCrossEntropyBackward: Backward {
    let x: Tensor, difference: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        [(difference * (dy / Double(difference.shape[0]))).reshaped(x.shape)]
    }
}

/// `SoftCrossEntropyBackward` for the leading `heads` heads of x [N, H, Tq, Tk], scattered into x's shape (zeros in
/// the other heads, as the narrow's backward scatters it); offered bf16, the scaled difference rounded once and the
/// zeros in one kernel (`softCrossEntropyBackwardLow`), with the scale dy / rows computed as there, on the device.
/// The walk always offers bf16 for bf16 logits (their gradient is rounded either way).
struct SoftCrossEntropyHeadsBackward: LowGradientBackward {
    let x: Tensor, difference: Tensor, heads: Int
    var inputs: [Tensor] { [x] }

    func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, low: [nil]) }

    func gradients(_ dy: Tensor, low: [DType?]) -> [Tensor?] {
        let scale = dy / Double(difference.shape[0])
        let used = heads * x.shape[2] * x.shape[3], full = x.shape[1] * x.shape[2] * x.shape[3]
        if low[0] == .bfloat16 {
            let dx = Tensor.empty(x.shape, dtype: .bfloat16, device: x.device)
            if x.backend.softCrossEntropyBackwardLow(difference: difference.buffer, scale: scale.contiguous().buffer, dx: dx.buffer,
                                                     outer: x.shape[0], used: used, full: full) { return [dx] }
        }
        let term = (difference * scale).reshaped([x.shape[0], heads, x.shape[2], x.shape[3]])
        return NarrowBackward(x: x, axis: 1, start: 0).gradients(term)
    }
}
