/// Losses and normalisations used by losses. torch: `F.cross_entropy(logits, targets)` (mean reduction),
/// `F.normalize(x, p=2, dim, eps)`.
public protocol LossKernels: AnyObject {
    /// logits [rows, classes] float (contiguous), targets [rows] int32 or int64 → loss (one element) =
    /// mean_r (log Σ_c exp(x[r, c]) − x[r, t_r]), stable (row max subtracted). Traps when a target is outside
    /// 0..<classes. Saves nothing: the backward recomputes each row's softmax from the logits.
    func crossEntropyForward(_ logits: Buffer, targets: Buffer, loss: Buffer, rows: Int, classes: Int)
    /// dx[r, c] = dy · (softmax(x[r, :])[c] − [c == t_r]) / rows; dy is the loss gradient (one element).
    func crossEntropyBackward(_ logits: Buffer, targets: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, classes: Int)
}

extension Tensor {
    /// torch: `F.cross_entropy(logits, targets)` with logits [N, C] and class indices [N] (int64 or int32),
    /// reduction "mean"; no class weights, ignore_index or label smoothing. Fused log-softmax + pick with its
    /// own backward, (softmax − onehot)/N.
    public func crossEntropy(targets: Tensor) -> Tensor {
        require(rank == 2 && shape[1] > 0, "crossEntropy: logits \(shape) must be [N, C] with C ≥ 1")
        require(dtype.isComputeFloat, "crossEntropy: logits need float32 or float64, got \(dtype) \(shape)")
        require(targets.dtype == .int64 || targets.dtype == .int32,
                     "crossEntropy: targets must be int64 or int32 class indices, got \(targets.dtype) \(targets.shape)")
        require(targets.shape == [shape[0]], "crossEntropy: targets \(targets.shape) for logits \(shape) (need [\(shape[0])])")
        require(targets.device == device, "crossEntropy: logits on \(device), targets on \(targets.device)")
        let x = contiguous(), t = targets.contiguous()
        let loss = Tensor.empty([], dtype: dtype, device: device)
        backend.crossEntropyForward(x.buffer, targets: t.buffer, loss: loss.buffer, rows: shape[0], classes: shape[1])
        return loss.recorded(CrossEntropyBackward(logits: x, targets: t))
    }

    /// torch: `F.normalize(x, p=2, dim=axis, eps=eps)` = x / Swift.max(‖x‖₂, eps). Composite; the clamp is applied
    /// to the squared norm, Swift.max(Σx², eps²), which selects the same value (√ is monotone) but keeps the
    /// gradient finite for all-zero slices (√ at 0 would give 0·∞). eps² must not underflow (float32:
    /// eps ≳ 1e-19; the default 1e-12 is fine).
    public func l2Normalized(axis a: Int = -1, eps: Double = 1e-12) -> Tensor {
        require(dtype.isComputeFloat, "l2Normalized: needs float32 or float64, got \(dtype) \(shape)")
        require(eps > 0 && eps * eps >= 1e-38, "l2Normalized: eps \(eps) must be in [1e-19, ∞) (input \(shape))")
        let ax = axis(a, "l2Normalized")
        let norm = square().sum(axis: ax, keepDims: true).clamp(min: eps * eps).sqrt()
        return self / norm
    }
}

/// Saves the logits and targets; the softmax is recomputed per row in the backward kernel.
struct CrossEntropyBackward: Backward {
    let logits: Tensor, targets: Tensor
    var inputs: [Tensor] { [logits] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dx = Tensor.empty(like: logits)
        logits.backend.crossEntropyBackward(logits.buffer, targets: targets.buffer, dy.contiguous().buffer, dx.buffer,
                                            rows: logits.shape[0], classes: logits.shape[1])
        return [dx]
    }
}
