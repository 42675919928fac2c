/// Reductions over axes. torch: `x.sum(dims, keepdim)`, `x.mean(dims, keepdim)`, `x.amax(dims, keepdim)`,
/// `x.var(dims, correction, keepdim)`.
public protocol ReduceKernels: AnyObject {
    /// x viewed as [outer, reduce, inner] (contiguous) → y [outer, inner]: y[o, i] = Σ_r x[o, r, i],
    /// summed in index order per fixed chunk (bitwise reproducible). x and y float32 or float64, or x bfloat16
    /// and y float32: each element widened (exactly), then the float32 sums in the float32 order.
    func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int)
    /// Same layout: y[o, i] = max_r x[o, r, i]; a NaN anywhere in the slice makes the result NaN (torch.amax).
    /// `reduce` ≥ 1.
    func reduceMax(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int)
    /// dx[o, r, i] = dy[o, i] / k where x[o, r, i] == y[o, i] and k is the number of such ties, else 0
    /// (torch.amax splits the gradient evenly among ties). x, dx: [outer, reduce, inner]; y, dy: [outer, inner].
    func reduceMaxBackward(_ x: Buffer, _ y: Buffer, _ dy: Buffer, _ dx: Buffer, outer: Int, reduce: Int, inner: Int)
}

/// A tensor laid out for a reduction kernel: contiguous [outer, reduce, inner]; `permutation` is the one
/// applied to bring non-adjacent reduced axes last (nil when the axes were already adjacent).
struct GroupedReduction {
    let x: Tensor, outer: Int, reduce: Int, inner: Int, permutation: [Int]?
}

extension Tensor {
    /// Normalised, sorted, de-duplicated axes; traps naming `op`.
    func reductionAxes(_ axes: [Int], _ op: String) -> [Int] {
        Array(Set(axes.map { axis($0, op) })).sorted()
    }

    /// The shape after reducing `axes` (kept as 1 or dropped).
    func reducedShape(_ axes: [Int], keepDims: Bool) -> [Int] {
        keepDims ? shape.enumerated().map { axes.contains($0.offset) ? 1 : $0.element }
                 : shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
    }

    /// Brings `axes` together: a contiguous tensor viewed as [outer, reduce, inner]. Adjacent axes need no
    /// copy beyond `contiguous()`; others are permuted last (inner = 1).
    func groupedForReduction(_ axes: [Int]) -> GroupedReduction {
        let r = axes.reduce(1) { $0 * shape[$1] }
        if let first = axes.first, axes.last! - first + 1 == axes.count {
            return GroupedReduction(x: contiguous(), outer: shape[..<first].reduce(1, *), reduce: r,
                                    inner: shape[(axes.last! + 1)...].reduce(1, *), permutation: nil)
        }
        let keep = (0..<rank).filter { !axes.contains($0) }
        let moved = permuted(keep + axes).contiguous()
        return GroupedReduction(x: moved, outer: keep.reduce(1) { $0 * shape[$1] }, reduce: r, inner: 1,
                                permutation: keep + axes)
    }

    /// torch: `x.sum(dim=axes, keepdim=keepDims)`; all axes when `axes` is nil.
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = reductionAxes(axes ?? Array(0..<rank), "sum")
        require(dtype.isComputeFloat, "sum: needs float32 or float64, got \(dtype) \(shape)")
        let g = groupedForReduction(ax)
        let y = Tensor.empty(reducedShape(ax, keepDims: keepDims), dtype: dtype, device: device)
        if y.count > 0 { backend.reduceSum(g.x.buffer, y.buffer, outer: g.outer, reduce: g.reduce, inner: g.inner) }
        return y.recorded(SumBackward(x: self, keptShape: reducedShape(ax, keepDims: true)))
    }

    public func sum(axis: Int, keepDims: Bool = false) -> Tensor { sum(axes: [axis], keepDims: keepDims) }

    /// torch: `(self * other).sum(dim=axis)` for two tensors of one shape, bit for bit (values and gradients), without
    /// keeping the product for the backward: the composite's sum node holds it as its input (the attention loss's
    /// P·log Q, [B, H, T, T] per aligned layer). Each gradient is the expanded dy times the other operand, as the
    /// composite's nodes compute it.
    public func sumOfProducts(_ other: Tensor, axis: Int) -> Tensor {
        require(shape == other.shape, "sumOfProducts: shapes \(shape) and \(other.shape) differ")
        let ax = reductionAxes([axis], "sumOfProducts")
        let y = GradMode.withoutGrad { (self * other).sum(axes: ax) }
        return y.recorded(SumOfProductsBackward(a: self, b: other, keptShape: reducedShape(ax, keepDims: true)))
    }

    /// Σ over `axes` of a bfloat16 tensor, in float32: `to(.float32).sum(axes:)` bit for bit without the widened
    /// copy (a bf16 bias gradient over every token). No autograd.
    func sumWidened(axes: [Int]) -> Tensor {
        require(dtype == .bfloat16 && !(GradMode.isEnabled && isTracked), "sumWidened: a bfloat16 tensor outside autograd, got \(dtype) \(shape)")
        let ax = reductionAxes(axes, "sum")
        let g = groupedForReduction(ax)
        let y = Tensor.empty(reducedShape(ax, keepDims: false), dtype: .float32, device: device)
        if y.count > 0 { backend.reduceSum(g.x.buffer, y.buffer, outer: g.outer, reduce: g.reduce, inner: g.inner) }
        return y
    }

    /// torch: `x.mean(dim=axes, keepdim=keepDims)`.
    public func mean(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = reductionAxes(axes ?? Array(0..<rank), "mean")
        let n = ax.reduce(1) { $0 * shape[$1] }
        return sum(axes: ax, keepDims: keepDims) * (1.0 / Double(Swift.max(n, 1)))
    }

    public func mean(axis: Int, keepDims: Bool = false) -> Tensor { mean(axes: [axis], keepDims: keepDims) }

    /// torch: `x.amax(dim=axes, keepdim=keepDims)`; all axes when `axes` is nil. NaN propagates; the gradient
    /// is split evenly among tied maxima.
    public func max(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = reductionAxes(axes ?? Array(0..<rank), "max")
        require(dtype.isComputeFloat, "max: needs float32 or float64, got \(dtype) \(shape)")
        require(ax.allSatisfy { shape[$0] > 0 }, "max: cannot reduce empty axes \(ax) of shape \(shape)")
        let g = groupedForReduction(ax)
        let y = Tensor.empty(reducedShape(ax, keepDims: keepDims), dtype: dtype, device: device)
        if y.count > 0 { backend.reduceMax(g.x.buffer, y.buffer, outer: g.outer, reduce: g.reduce, inner: g.inner) }
        return y.recorded(MaxBackward(x: self, grouped: g, y: y.detached()))
    }

    /// torch: `x.amax(dim=axis, keepdim=keepDims)` (values only, ties share the gradient; not torch.max's
    /// (values, indices) pair, whose gradient goes to one index).
    public func max(axis: Int, keepDims: Bool = false) -> Tensor { max(axes: [axis], keepDims: keepDims) }

    /// torch: `x.var(dim=axes, correction=unbiased ? 1 : 0, keepdim=keepDims)`; all axes when nil.
    /// Two-pass composite (mean, then mean squared deviation): exact and differentiable. With no degrees of
    /// freedom left (n ≤ correction) the result is NaN or inf, as in torch.
    public func variance(axes: [Int]? = nil, keepDims: Bool = false, unbiased: Bool = false) -> Tensor {
        let ax = reductionAxes(axes ?? Array(0..<rank), "variance")
        require(dtype.isComputeFloat, "variance: needs float32 or float64, got \(dtype) \(shape)")
        let n = ax.reduce(1) { $0 * shape[$1] }
        let deviation = self - mean(axes: ax, keepDims: true)
        return deviation.square().sum(axes: ax, keepDims: keepDims) * (1.0 / Double(n - (unbiased ? 1 : 0)))
    }
}

/// Broadcasts the reduced gradient back over the summed axes.
struct SumBackward: Backward {
    let x: Tensor, keptShape: [Int]
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy.reshaped(keptShape).expanded(x.shape).contiguous()] }
}

/// Keeps the two operands (no product); d(a) = dy·b, d(b) = dy·a, dy broadcast over the summed axis by the multiply
/// itself (the composite's SumBackward first copies it out to the full shape: the same values, one pass more).
struct SumOfProductsBackward: Backward {
    let a: Tensor, b: Tensor, keptShape: [Int]
    var inputs: [Tensor] { [a, b] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let g = dy.reshaped(keptShape)
        return [a.isTracked ? g * b.detached() : nil, b.isTracked ? g * a.detached() : nil]
    }
}

/// Saves the grouped input (the kernel's layout) and the output; ties are recounted in the backward kernel.
struct MaxBackward: Backward {
    let x: Tensor, grouped: GroupedReduction, y: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let g = grouped
        let dx = Tensor.empty(g.x.shape, dtype: x.dtype, device: x.device)
        if dx.count > 0 {
            x.backend.reduceMaxBackward(g.x.buffer, y.buffer, dy.contiguous().buffer, dx.buffer,
                                        outer: g.outer, reduce: g.reduce, inner: g.inner)
        }
        guard let p = g.permutation else { return [dx.reshaped(x.shape)] }
        var inverse = [Int](repeating: 0, count: p.count)
        for (i, a) in p.enumerated() { inverse[a] = i }
        return [dx.permuted(inverse)]   // the graph makes gradients contiguous where needed
    }
}
