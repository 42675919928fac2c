/// Indexing: gathers by index, selection by mask, slicing views and comparisons producing masks.
/// Kernels are in `MovementKernels` (Concat.swift); CPU reference in CPU/CPUMovement.swift.

/// Comparison with a scalar. torch: `x > s` (`torch.gt`), `x < s` (`torch.lt`).
public enum CompareOp: Sendable { case greater, less }

extension Tensor {
    /// torch.index_select(x, axis, indices): picks `indices` (1-D or 0-D, int64 or int32, each in
    /// [0, size)) along `axis`; repeats allowed. The result has `indices.count` entries along `axis`.
    public func indexSelect(axis a: Int, indices: Tensor) -> Tensor {
        let r = axis(a, "index_select")
        require(indices.dtype == .int64 || indices.dtype == .int32,
                     "index_select: indices must be int64 or int32, got \(indices.dtype) \(indices.shape)")
        require(indices.rank <= 1, "index_select: indices must be 1-D, got shape \(indices.shape)")
        require(indices.device == device, "index_select: x on \(device), indices on \(indices.device)")
        let x = contiguous(), idx = indices.contiguous()
        var outShape = shape
        outShape[r] = idx.count
        let y = Tensor.empty(outShape, dtype: dtype, device: device)
        let outer = shape[..<r].reduce(1, *), inner = shape[(r + 1)...].reduce(1, *)
        if idx.count > 0 {   // validates indices even when other axes are empty
            backend.indexSelect(x.buffer, indices: idx.buffer, y.buffer, outer: outer, size: shape[r], inner: inner,
                                count: idx.count)
        }
        return y.recorded(IndexSelectBackward(x: self, indices: idx, axis: r))
    }

    /// torch.where(condition, a, b) with broadcasting: a where condition (bool) is true, else b.
    /// a and b share one dtype; the gradient goes to a where true and to b where false, summed back
    /// over broadcast axes.
    public static func where_(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
        require(condition.dtype == .bool, "where: condition must be bool, got \(condition.dtype) \(condition.shape)")
        require(a.dtype == b.dtype, "where: dtypes \(a.dtype) and \(b.dtype) (convert with to(_:))")
        require(condition.device == a.device && a.device == b.device,
                     "where: operands on \(condition.device), \(a.device) and \(b.device)")
        guard let ab = broadcastShape(a.shape, b.shape), let shape = broadcastShape(condition.shape, ab) else {
            fatalError("where: shapes \(condition.shape), \(a.shape) and \(b.shape) do not broadcast")
        }
        let out = Tensor.empty(shape, dtype: a.dtype, device: a.device)
        out.backend.select(condition.stridedBuffer, condition.broadcastStrides(to: shape), a.stridedBuffer,
                           a.broadcastStrides(to: shape), b.stridedBuffer, b.broadcastStrides(to: shape),
                           out.buffer, shape: shape)
        return out.recorded(WhereBackward(condition: condition.detached(), a: a, b: b))
    }

    /// torch: `x[:, range]` on `axis` (`x.narrow`): a view.
    public subscript(axis axis: Int, range: Range<Int>) -> Tensor {
        narrowed(axis, start: range.lowerBound, length: range.count)
    }

    /// torch: `x.select(axis, index)`, e.g. `x[:, i]`: a view without that axis; index may be negative.
    public func select(axis a: Int, index: Int) -> Tensor {
        let r = axis(a, "select")
        let i = index < 0 ? index + shape[r] : index
        require(i >= 0 && i < shape[r], "select: index \(index) out of range for axis \(a) of shape \(shape)")
        return narrowed(r, start: i, length: 1).squeezed(r)
    }

    /// torch: `x > s`, a bool mask (no gradient).
    public func greater(_ s: Double) -> Tensor { compare(.greater, s, "greater") }
    /// torch: `x < s`, a bool mask (no gradient).
    public func less(_ s: Double) -> Tensor { compare(.less, s, "less") }

    private func compare(_ op: CompareOp, _ s: Double, _ name: String) -> Tensor {
        require(dtype != .float16 && dtype != .bfloat16, "\(name): convert \(dtype) \(shape) to float32 first")
        // Integers compare exactly in float64 (int64 up to 2^53, all that labels and indices need).
        let x = (dtype.isComputeFloat ? self : to(.float64)).contiguous()
        let y = Tensor.empty(shape, dtype: .bool, device: device)
        if count > 0 { backend.compare(op, x.buffer, scalar: s, y.buffer, count: count) }
        return y
    }

    /// This tensor's storage and offset as a kernel operand read through `strides` (any layout).
    var stridedBuffer: Buffer { Buffer(storage: storage, offset: offset, dtype: dtype) }
}

/// Scatter-adds dy back along the axis: repeated indices accumulate (torch `index_add_`).
struct IndexSelectBackward: Backward {
    let x: Tensor, indices: Tensor, axis: Int
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dx = Tensor.zeros(x.shape, dtype: dy.dtype, device: dy.device)
        if dy.count > 0 {
            let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
            dx.backend.indexAdd(dy.contiguous().buffer, indices: indices.buffer, dx.buffer, outer: outer,
                                size: x.shape[axis], inner: inner, count: indices.count)
        }
        return [dx]
    }
}

/// dy masked by the condition for a (zeros where false), and by its negation for b, then unbroadcast.
struct WhereBackward: Backward {
    let condition: Tensor, a: Tensor, b: Tensor
    var inputs: [Tensor] { [a, b] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let zero = Tensor.zeros([], dtype: dy.dtype, device: dy.device)
        let da = a.isTracked ? Tensor.where_(condition, dy, zero).unbroadcast(to: a.shape) : nil
        let db = b.isTracked ? Tensor.where_(condition, zero, dy).unbroadcast(to: b.shape) : nil
        return [da, db]
    }
}
