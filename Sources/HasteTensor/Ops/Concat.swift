/// Kernels of the Movement family: gathers and scatters by index, selection by mask, comparisons.
/// Views, cat and stack need none of their own (they use `MemoryKernels.stridedCopy`).
public protocol MovementKernels: AnyObject {
    /// torch.index_select forward. x is [outer, size, inner] contiguous, indices [count] (int32 or int64),
    /// y [outer, count, inner]: y[o, j, :] = x[o, indices[j], :]. Any element dtype. Traps on an index
    /// outside [0, size), naming index_select.
    func indexSelect(_ x: Buffer, indices: Buffer, _ y: Buffer, outer: Int, size: Int, inner: Int, count: Int)
    /// index_select backward (torch `index_add_`): dx[o, indices[j], :] += dy[o, j, :] with dx [outer, size,
    /// inner] accumulated into (the caller zeroes it). Float dtypes. Repeated indices add up, in index
    /// order for every element, so the result is bitwise identical whatever the thread count.
    func indexAdd(_ dy: Buffer, indices: Buffer, _ dx: Buffer, outer: Int, size: Int, inner: Int, count: Int)
    /// torch.where: out = condition ? a : b over `shape`, reading each operand through element strides
    /// (0 on broadcast axes). condition is bool; a, b and out share one dtype; out is contiguous.
    func select(_ condition: Buffer, _ conditionStrides: [Int], _ a: Buffer, _ aStrides: [Int],
                _ b: Buffer, _ bStrides: [Int], _ out: Buffer, shape: [Int])
    /// out[i] = x[i] ∘ scalar as bool, x float32/float64 contiguous (torch.gt / torch.lt with a scalar).
    func compare(_ op: CompareOp, _ x: Buffer, scalar: Double, _ out: Buffer, count: Int)
}

extension Tensor {
    /// torch.cat(tensors, dim=axis). Inputs share dtype, device and every size but `axis`'s; they may be
    /// non-contiguous views (each is copied once, straight into its slice of the output).
    public static func cat(_ tensors: [Tensor], axis a: Int) -> Tensor {
        require(!tensors.isEmpty, "cat: needs at least one tensor")
        let first = tensors[0]
        let r = first.axis(a, "cat")
        for t in tensors {
            var same = t.rank == first.rank
            if same { for i in 0..<t.rank where i != r && t.shape[i] != first.shape[i] { same = false } }
            require(same, "cat: shapes \(tensors.map(\.shape)) differ outside axis \(a)")
            require(t.dtype == first.dtype, "cat: dtypes \(tensors.map(\.dtype)) differ (convert with to(_:))")
            require(t.device == first.device, "cat: tensors on \(tensors.map(\.device))")
        }
        var shape = first.shape
        shape[r] = tensors.reduce(0) { $0 + $1.shape[r] }
        let y = Tensor.empty(shape, dtype: first.dtype, device: first.device)
        var start = 0
        for t in tensors {
            let dst = Buffer(storage: y.storage, offset: start * y.strides[r], dtype: y.dtype)
            if t.count > 0 {
                y.backend.stridedCopy(from: t.stridedBuffer,
                                      srcStrides: t.strides, to: dst, dstStrides: y.strides, shape: t.shape)
            }
            start += t.shape[r]
        }
        return y.recorded(CatBackward(xs: tensors, axis: r))
    }

    /// torch.stack(tensors, dim=axis): equal shapes, joined along a new axis (-1 appends it last).
    public static func stack(_ tensors: [Tensor], axis a: Int) -> Tensor {
        require(!tensors.isEmpty, "stack: needs at least one tensor")
        let rank = tensors[0].rank
        let r = a < 0 ? a + rank + 1 : a
        require(r >= 0 && r <= rank, "stack: axis \(a) out of range for shape \(tensors[0].shape)")
        require(tensors.allSatisfy { $0.shape == tensors[0].shape },
                     "stack: shapes \(tensors.map(\.shape)) differ (stack needs equal shapes)")
        return cat(tensors.map { $0.unsqueezed(r) }, axis: r)
    }
}

/// Each input's gradient is its slice of dy: a narrow view, no copy.
struct CatBackward: Backward {
    let xs: [Tensor], axis: Int
    var inputs: [Tensor] { xs }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        var start = 0
        return xs.map { x in
            defer { start += x.shape[axis] }
            return x.isTracked ? dy.narrowed(axis, start: start, length: x.shape[axis]) : nil
        }
    }
}
