/// Softmax and log-softmax along one axis. torch: `F.softmax(x, dim)`, `F.log_softmax(x, dim)`.
/// The kernels work on rows of the last axis; other axes are swapped last (permute + contiguous) first.
public protocol SoftmaxKernels: AnyObject {
    /// x, y: [rows, cols] contiguous, cols ≥ 1. y[r, :] = exp(x[r, :] − m) / Σ exp(x[r, :] − m), m = the row max.
    func softmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int)
    /// dx = y · (dy − Σ_c dy·y) per row; y is the forward output.
    func softmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int)
    /// y[r, :] = x[r, :] − m − log Σ exp(x[r, :] − m).
    func logSoftmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int)
    /// dx = dy − exp(y) · Σ_c dy per row; y is the forward output (log-probabilities).
    func logSoftmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int)
    /// Whether `softCrossEntropyForward` runs here for this dtype (else `Tensor.softCrossEntropy` runs the composite).
    func softCrossEntropyRuns(dtype: DType) -> Bool
    /// Whether `softCrossEntropyForward` computing in `dtype` also reads bfloat16 logits and/or a bfloat16 target
    /// (widened on load, exact: the student's aligned logits and a frozen teacher's as autocast leaves them);
    /// elsewhere such tensors are widened first.
    func softCrossEntropyReadsLow(dtype: DType) -> Bool
    /// For each row r of `cols` entries (x's at xRows.start(r) elements past x's first, t's at tRows.start(r) past
    /// t's, each contiguous; x and t of the computing dtype, or bfloat16 where `softCrossEntropyReadsLow`):
    /// loss[r] = −Σ_c softmax(t_r)[c] · logSoftmax(x_r)[c] and difference[r, :] = softmax(x_r) − softmax(t_r) (loss
    /// [rows] and difference [rows, cols] contiguous, of the computing dtype).
    func softCrossEntropyForward(x: Buffer, xRows: RowLayout, t: Buffer, tRows: RowLayout, rows: Int, cols: Int,
                                 loss: Buffer, difference: Buffer)
    /// bfloat16 x, y [rows, cols]: y = bf16(softmax(x)), softmaxForward's float32 result on the widened values rounded
    /// once; false (nothing done) where the backend has no such kernel.
    func softmaxForwardLow(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) -> Bool
    /// bfloat16 y, dy, dx [rows, cols]: dx = softmaxBackward's float32 result on the widened values, rounded to
    /// bfloat16; false (nothing done) where the backend has no such kernel.
    func softmaxBackwardLow(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) -> Bool
    /// The soft cross-entropy's gradient as a bfloat16 tensor, zero-padded: for each of `outer` rows, dx[o, c] =
    /// bf16(difference[o, c] · scale[0]) for c < used (difference: float32 [outer, used] contiguous; scale: one
    /// float32 on the device) and 0 for used ≤ c < full (dx: bfloat16 [outer, full]): the float32 product rounded
    /// once. false (nothing done) where the backend has no such kernel.
    func softCrossEntropyBackwardLow(difference: Buffer, scale: Buffer, dx: Buffer, outer: Int, used: Int, full: Int) -> Bool
}

extension SoftmaxKernels {
    public func softmaxForwardLow(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) -> Bool { false }
    public func softmaxBackwardLow(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) -> Bool { false }
    public func softCrossEntropyBackwardLow(difference: Buffer, scale: Buffer, dx: Buffer, outer: Int, used: Int,
                                            full: Int) -> Bool { false }
    public func softCrossEntropyRuns(dtype: DType) -> Bool { false }
    public func softCrossEntropyReadsLow(dtype: DType) -> Bool { false }
    public func softCrossEntropyForward(x: Buffer, xRows: RowLayout, t: Buffer, tRows: RowLayout, rows: Int, cols: Int,
                                        loss: Buffer, difference: Buffer) {
        fatalError("softCrossEntropyForward: this backend has no such kernel (softCrossEntropyRuns is false)")
    }
}

extension Tensor {
    /// torch: `F.softmax(x, dim=axis)`. Numerically stable (row max subtracted).
    public func softmax(axis: Int = -1) -> Tensor { softmaxFamily(axis: axis, log: false) }

    /// torch: `F.log_softmax(x, dim=axis)`. Numerically stable (row max subtracted).
    public func logSoftmax(axis: Int = -1) -> Tensor { softmaxFamily(axis: axis, log: true) }

    private func softmaxFamily(axis a: Int, log: Bool) -> Tensor {
        let op = log ? "logSoftmax" : "softmax"
        require(dtype.isComputeFloat, "\(op): needs float32 or float64, got \(dtype) \(shape)")
        let ax = axis(a, op)
        if ax != rank - 1 {
            // Swap the axis last; a transposition is its own inverse.
            var perm = Array(0..<rank)
            perm.swapAt(ax, rank - 1)
            return permuted(perm).softmaxFamily(axis: -1, log: log).permuted(perm).contiguous()
        }
        let x = contiguous()
        let y = Tensor.empty(like: x)
        let cols = shape[rank - 1], rows = cols == 0 ? 0 : count / cols
        if rows > 0 {
            if log { backend.logSoftmaxForward(x.buffer, y.buffer, rows: rows, cols: cols) }
            else { backend.softmaxForward(x.buffer, y.buffer, rows: rows, cols: cols) }
        }
        return y.recorded(SoftmaxBackward(x: x, y: y.detached(), log: log))
    }
}

/// Saves only the output: both gradients are functions of y and dy.
struct SoftmaxBackward: Backward {
    let x: Tensor, y: Tensor, log: Bool
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dx = Tensor.empty(like: y)
        let cols = y.shape[y.rank - 1], rows = cols == 0 ? 0 : y.count / cols
        guard rows > 0 else { return [dx] }
        let g = dy.contiguous()
        if log { y.backend.logSoftmaxBackward(y.buffer, g.buffer, dx.buffer, rows: rows, cols: cols) }
        else { y.backend.softmaxBackward(y.buffer, g.buffer, dx.buffer, rows: rows, cols: cols) }
        return [dx]
    }
}
