/// Views and layout: reshape, permute, transpose, expand, narrow, chunk, split, contiguous.
/// Views share storage and record a backward that maps the gradient back to the input's shape.
extension Tensor {
    /// torch: `x.contiguous()`. Returns self when already contiguous.
    public func contiguous() -> Tensor {
        if isContiguous { return self }
        let y = Tensor.empty(shape, dtype: dtype, device: device)
        backend.stridedCopy(from: Buffer(storage: storage, offset: offset, dtype: dtype), srcStrides: strides,
                            to: y.buffer, dstStrides: y.strides, shape: shape)
        return y.recorded(IdentityBackward(x: self))
    }

    /// torch: `x.reshape(shape)`; one axis may be -1. A view when the layout allows, else a copy.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var target = newShape
        if let hole = target.firstIndex(of: -1) {
            let known = target.enumerated().filter { $0.offset != hole }.map(\.element).reduce(1, *)
            require(known > 0 && count % known == 0, "reshape: cannot infer -1 in \(newShape) for shape \(shape)")
            target[hole] = count / known
        }
        require(target.reduce(1, *) == count && target.allSatisfy { $0 >= 0 },
                     "reshape: shape \(shape) (\(count) elements) cannot become \(newShape)")
        if target == shape { return self }
        // torch: reshape is a view whenever the strides allow one (always for a contiguous input, and for
        // squeeze/unsqueeze of any input); otherwise it copies through contiguous().
        if let s = isContiguous ? Tensor.contiguousStrides(target) : viewStrides(target) {
            let y = Tensor(storage: storage, shape: target, strides: s, offset: offset, dtype: dtype)
            return y.recorded(ReshapeBackward(x: self))
        }
        let x = contiguous()
        let y = Tensor(storage: x.storage, shape: target, offset: x.offset, dtype: dtype)
        return y.recorded(ReshapeBackward(x: x))
    }

    /// Strides viewing this tensor as `target` without a copy, or nil when impossible. Walks runs of axes
    /// that are contiguous with each other and requires each run to map onto whole target axes
    /// (torch: `at::detail::computeStride`).
    private func viewStrides(_ target: [Int]) -> [Int]? {
        if count == 0 || rank == 0 { return Tensor.contiguousStrides(target) }
        var out = [Int](repeating: 0, count: target.count)
        var viewAxis = target.count - 1
        var base = strides[rank - 1], runCount = 1, viewCount = 1
        for a in stride(from: rank - 1, through: 0, by: -1) {
            runCount *= shape[a]
            // A run ends at axis 0 or where the next-outer axis does not continue it.
            guard a == 0 || (shape[a - 1] != 1 && strides[a - 1] != runCount * base) else { continue }
            while viewAxis >= 0 && (viewCount < runCount || target[viewAxis] == 1) {
                out[viewAxis] = viewCount * base
                viewCount *= target[viewAxis]
                viewAxis -= 1
            }
            if viewCount != runCount { return nil }
            if a > 0 { base = strides[a - 1]; runCount = 1; viewCount = 1 }
        }
        return viewAxis == -1 ? out : nil
    }

    public func flattened(from start: Int = 0) -> Tensor {
        let s = axis(start, "flatten")
        return reshaped(Array(shape[..<s]) + [shape[s...].reduce(1, *)])
    }

    /// torch: `x.permute(dims)`.
    public func permuted(_ dims: [Int]) -> Tensor {
        let d = dims.map { axis($0, "permute") }
        require(Set(d).count == rank && d.count == rank, "permute: \(dims) is not a permutation of \(rank) axes")
        let y = Tensor(storage: storage, shape: d.map { shape[$0] }, strides: d.map { strides[$0] }, offset: offset, dtype: dtype)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, a) in d.enumerated() { inverse[a] = i }
        return y.recorded(PermuteBackward(x: self, inverse: inverse))
    }

    /// torch: `x.transpose(a, b)`.
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var dims = Array(0..<rank)
        dims.swapAt(axis(a, "transpose"), axis(b, "transpose"))
        return permuted(dims)
    }

    /// torch: `x.unsqueeze(axis)`.
    public func unsqueezed(_ a: Int) -> Tensor {
        let r = a < 0 ? a + rank + 1 : a
        require(r >= 0 && r <= rank, "unsqueeze: axis \(a) out of range for shape \(shape)")
        var s = shape
        s.insert(1, at: r)
        return reshaped(s)
    }

    /// torch: `x.squeeze(axis)`; the axis must have size 1.
    public func squeezed(_ a: Int) -> Tensor {
        let r = axis(a, "squeeze")
        require(shape[r] == 1, "squeeze: axis \(a) of shape \(shape) has size \(shape[r])")
        var s = shape
        s.remove(at: r)
        return reshaped(s)
    }

    /// torch: `x.expand(shape)` (broadcast view, no copy); -1 keeps the size of an existing axis.
    public func expanded(_ sizes: [Int]) -> Tensor {
        let extra = sizes.count - rank
        let target = sizes.enumerated().map { $0.element == -1 && $0.offset >= extra ? shape[$0.offset - extra] : $0.element }
        guard extra >= 0, target.allSatisfy({ $0 >= 0 }), broadcastShape(shape, target) == target else {
            fatalError("expand: shape \(shape) cannot expand to \(sizes)")
        }
        let y = Tensor(storage: storage, shape: target, strides: broadcastStrides(to: target), offset: offset, dtype: dtype)
        return y.recorded(ExpandBackward(x: self))
    }

    /// torch: `x.narrow(axis, start, length)`, i.e. `x[..., start:start+length, ...]`.
    public func narrowed(_ a: Int, start: Int, length: Int) -> Tensor {
        let r = axis(a, "narrow")
        require(start >= 0 && length >= 0 && start + length <= shape[r],
                     "narrow: [\(start), \(start + length)) out of range for axis \(a) of shape \(shape)")
        var s = shape
        s[r] = length
        let y = Tensor(storage: storage, shape: s, strides: strides, offset: offset + start * strides[r], dtype: dtype)
        return y.recorded(NarrowBackward(x: self, axis: r, start: start))
    }

    /// torch: `x.split(sizes, dim)`.
    public func split(_ sizes: [Int], axis a: Int) -> [Tensor] {
        let r = axis(a, "split")
        require(sizes.reduce(0, +) == shape[r], "split: sizes \(sizes) do not add up to \(shape[r]) (axis \(a) of \(shape))")
        var start = 0
        return sizes.map { n in
            defer { start += n }
            return narrowed(r, start: start, length: n)
        }
    }

    /// torch: `x.chunk(n, dim)`: pieces of ceil(size / n), the last one smaller; fewer than n pieces when
    /// the size runs out: 7 rows in 3 chunks are 3, 3, 1; 5 rows in 4 chunks are 2, 2, 1.
    public func chunk(_ n: Int, axis a: Int) -> [Tensor] {
        let r = axis(a, "chunk")
        require(n > 0, "chunk: \(n) chunks requested for axis \(a) of shape \(shape)")
        let size = shape[r], piece = Swift.max(1, (size + n - 1) / n)
        if size == 0 { return Array(repeating: self.narrowed(r, start: 0, length: 0), count: n) }
        let sizes = stride(from: 0, to: size, by: piece).map { min(piece, size - $0) }
        return split(sizes, axis: r)
    }
}

struct IdentityBackward: Backward {
    let x: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy] }
}

struct ReshapeBackward: Backward {
    let x: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy.reshaped(x.shape)] }
}

struct PermuteBackward: Backward {
    let x: Tensor, inverse: [Int]
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy.permuted(inverse).contiguous()] }
}

struct ExpandBackward: Backward {
    let x: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy.unbroadcast(to: x.shape)] }
}

/// Scatters the slice's gradient into zeros of the input's shape. The pieces of one tensor (`chunk`, `split`,
/// `select`: attention's q, k, v out of one qkv projection) each give a full-size term; as a running-sum node the
/// second and later pieces add their slice into the sum the first one made, in place, instead of each zero-filling
/// a full-size tensor that the walk then adds whole. The values are the walk's `sum + term` (the term is zero
/// outside the slice; a -0 there stays -0). Only a sum this node made and the walk has not handed to anyone is
/// written (`isPrivateGradientSum`).
struct NarrowBackward: RunningSumBackward {
    let x: Tensor, axis: Int, start: Int
    var inputs: [Tensor] { [x] }
    /// Slices whose rows before `axis` number at most this many are added in place one contiguous run per row.
    static let inPlaceRows = 64

    func gradients(_ dy: Tensor) -> [Tensor?] { [term(dy)] }

    func gradients(_ dy: Tensor, running: [Tensor?]) -> [Tensor?] {
        guard let sum = running[0] else {
            let first = term(dy)
            first.isPrivateGradientSum = true       // only the walk holds it until it hands it on
            return [first]
        }
        let rows = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
        guard sum.isPrivateGradientSum, sum.isContiguous, sum.shape == x.shape, sum.dtype == dy.dtype,
              sum.device == dy.device, rows <= NarrowBackward.inPlaceRows else {
            let next = sum + term(dy)                   // a fresh tensor: the walk's alone again
            next.isPrivateGradientSum = true
            return [next]
        }
        let g = dy.contiguous(), run = dy.shape[axis] * inner, row = x.shape[axis] * inner
        if sum.device != .cpu && rows > 1 && run > 0 {
            // A GPU: 2 launches (the slice plus the term into a temporary, copied back) instead of one axpy per row
            // (adaLN's 6-way chunk of [N, 6·D] made 5·N launches of D elements each). The same sums: axpy's y + 1·x.
            let slice = Buffer(storage: sum.storage, offset: sum.offset + start * inner, dtype: sum.dtype)
            let added = Tensor.empty([rows, run], dtype: sum.dtype, device: sum.device)
            sum.backend.binary(.add, slice, [row, 1], g.buffer, [run, 1], added.buffer, shape: [rows, run])
            sum.backend.stridedCopy(from: added.buffer, srcStrides: [run, 1], to: slice, dstStrides: [row, 1], shape: [rows, run])
            return [sum]
        }
        for r in 0..<rows where run > 0 {
            sum.backend.axpy(alpha: 1, x: Buffer(storage: g.storage, offset: g.offset + r * run, dtype: g.dtype),
                             y: Buffer(storage: sum.storage, offset: sum.offset + r * row + start * inner, dtype: sum.dtype),
                             count: run)
        }
        return [sum]
    }

    /// dy scattered into zeros of x's shape (contiguous).
    private func term(_ dy: Tensor) -> Tensor {
        let dx = Tensor.zeros(x.shape, dtype: dy.dtype, device: dy.device)
        let g = dy.contiguous()
        dx.backend.stridedCopy(from: g.buffer, srcStrides: g.strides,
                               to: Buffer(storage: dx.storage, offset: start * dx.strides[axis], dtype: dx.dtype),
                               dstStrides: dx.strides, shape: g.shape)
        return dx
    }
}
