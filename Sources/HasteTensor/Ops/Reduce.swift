/// Reductions over axes. torch: `x.sum(dims, keepdim)`, `x.mean(dims, keepdim)`.
public protocol ReduceKernels: AnyObject {
    /// x viewed as [outer, reduce, inner] (contiguous) → y [outer, inner]: y[o, i] = Σ_r x[o, r, i],
    /// summed in index order per fixed chunk (bitwise reproducible).
    func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int)
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

    /// Brings `axes` together: returns a contiguous tensor viewed as [outer, reduce, inner].
    func groupedForReduction(_ axes: [Int]) -> (Tensor, outer: Int, reduce: Int, inner: Int) {
        let r = axes.reduce(1) { $0 * shape[$1] }
        if let first = axes.first, axes.last! - first + 1 == axes.count {
            return (contiguous(), shape[..<first].reduce(1, *), r, shape[(axes.last! + 1)...].reduce(1, *))
        }
        let keep = (0..<rank).filter { !axes.contains($0) }
        let moved = permuted(keep + axes).contiguous()
        return (moved, keep.reduce(1) { $0 * shape[$1] }, r, 1)
    }

    /// torch: `x.sum(dim=axes, keepdim=keepDims)`; all axes when `axes` is nil.
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = reductionAxes(axes ?? Array(0..<rank), "sum")
        precondition(dtype.isComputeFloat, "sum: needs float32 or float64, got \(dtype) \(shape)")
        let (x, outer, r, inner) = groupedForReduction(ax)
        let y = Tensor.empty(reducedShape(ax, keepDims: keepDims), dtype: dtype, device: device)
        if y.count > 0 { backend.reduceSum(x.buffer, y.buffer, outer: outer, reduce: r, inner: inner) }
        return y.recorded(SumBackward(x: self, keptShape: reducedShape(ax, keepDims: true)))
    }

    public func sum(axis: Int, keepDims: Bool = false) -> Tensor { sum(axes: [axis], keepDims: keepDims) }

    /// torch: `x.mean(dim=axes, keepdim=keepDims)`.
    public func mean(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = reductionAxes(axes ?? Array(0..<rank), "mean")
        let n = ax.reduce(1) { $0 * shape[$1] }
        return sum(axes: ax, keepDims: keepDims) * (1.0 / Double(max(n, 1)))
    }

    public func mean(axis: Int, keepDims: Bool = false) -> Tensor { mean(axes: [axis], keepDims: keepDims) }
}

/// Broadcasts the reduced gradient back over the summed axes.
struct SumBackward: Backward {
    let x: Tensor, keptShape: [Int]
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy.reshaped(keptShape).expanded(x.shape).contiguous()] }
}
