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
    public func softCrossEntropy(target: Tensor) -> Tensor {
        require(shape == target.shape && rank >= 1, "softCrossEntropy: logits \(shape) and target \(target.shape) must have one shape")
        require(dtype == target.dtype && dtype.isComputeFloat, "softCrossEntropy: needs float32 or float64 logits and target of one dtype, got \(dtype) and \(target.dtype)")
        let cols = shape[rank - 1], rows = cols == 0 ? 0 : count / cols
        // No Autocast case: softmax, log-softmax and the sums ignore it (float32 under it, as torch autocast keeps them).
        guard rows > 0, backend.softCrossEntropyRuns(dtype: dtype), let (x, xRows) = lastAxisRows(),
              let (t, tRows) = target.lastAxisRows(), target.device == device else {
            return -target.detached().softmax(axis: -1).sumOfProducts(logSoftmax(axis: -1), axis: -1).mean()
        }
        let rowLoss = Tensor.empty([rows], dtype: dtype, device: device)
        let difference = Tensor.empty([rows, cols], dtype: dtype, device: device)
        backend.softCrossEntropyForward(x: x, xRows: xRows, t: t, tRows: tRows, rows: rows, cols: cols,
                                        loss: rowLoss.buffer, difference: difference.buffer)
        let mean = GradMode.withoutGrad { rowLoss.mean() }
        return mean.recorded(SoftCrossEntropyBackward(x: self, difference: difference))
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
