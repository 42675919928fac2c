/// Movement kernels (Ops/Concat.swift, Ops/Indexing.swift): row gathers and scatter-adds by index, mask
/// selection and scalar comparisons. Gathers and selections only move elements, so they are generic over
/// the element's width; scatter-adds are float and add in index order for every element.
extension CPUBackend {
    public func indexSelect(_ x: Buffer, indices: Buffer, _ y: Buffer, outer: Int, size: Int, inner: Int, count: Int) {
        CPUBackend.checkIndices(indices, count: count, limit: size, "index_select", "an axis of size \(size)")
        switch x.dtype.byteSize {
        case 8: CPUBackend.gather(UInt64.self, x, indices, y, outer: outer, size: size, inner: inner, count: count)
        case 4: CPUBackend.gather(UInt32.self, x, indices, y, outer: outer, size: size, inner: inner, count: count)
        case 2: CPUBackend.gather(UInt16.self, x, indices, y, outer: outer, size: size, inner: inner, count: count)
        default: CPUBackend.gather(UInt8.self, x, indices, y, outer: outer, size: size, inner: inner, count: count)
        }
    }

    public func indexAdd(_ dy: Buffer, indices: Buffer, _ dx: Buffer, outer: Int, size: Int, inner: Int, count: Int) {
        CPUBackend.checkIndices(indices, count: count, limit: size, "index_select backward", "an axis of size \(size)")
        switch dx.dtype {
        case .float32: CPUBackend.scatterAdd(Float.self, dy, indices, dx, outer: outer, size: size, inner: inner, count: count)
        case .float64: CPUBackend.scatterAdd(Double.self, dy, indices, dx, outer: outer, size: size, inner: inner, count: count)
        default: fatalError("index_select backward: unsupported dtype \(dx.dtype)")
        }
    }

    /// Traps naming `op` at the first index outside [0, limit): an out-of-range row would read or write
    /// outside the tensor.
    static func checkIndices(_ indices: Buffer, count: Int, limit: Int, _ op: String, _ what: @autoclosure () -> String) {
        func check<I: BinaryInteger>(_ p: UnsafeMutablePointer<I>) {
            for n in 0..<count where p[n] < 0 || p[n] >= limit {
                fatalError("\(op): index \(p[n]) at position \(n) is out of range [0, \(limit)) for \(what())")
            }
        }
        switch indices.dtype {
        case .int32: check(indices.pointer(Int32.self))
        case .int64: check(indices.pointer(Int64.self))
        default: fatalError("\(op): indices must be int32 or int64, got \(indices.dtype)")
        }
    }

    /// Element-width dispatch on the index type, then the row gather.
    static func gather<E>(_: E.Type, _ x: Buffer, _ indices: Buffer, _ y: Buffer, outer: Int, size: Int, inner: Int,
                          count: Int) {
        if indices.dtype == .int32 {
            gatherRows(x.pointer(E.self), indices.pointer(Int32.self), y.pointer(E.self), outer, size, inner, count)
        } else {
            gatherRows(x.pointer(E.self), indices.pointer(Int64.self), y.pointer(E.self), outer, size, inner, count)
        }
    }

    /// y[o, j, :] = x[o, idx[j], :]; x [outer, size, inner], y [outer, count, inner]. Indices are checked.
    static func gatherRows<E, I: BinaryInteger>(_ x: UnsafeMutablePointer<E>, _ idx: UnsafeMutablePointer<I>,
                                                _ y: UnsafeMutablePointer<E>, _ outer: Int, _ size: Int,
                                                _ inner: Int, _ count: Int) {
        let rows = outer * count
        if rows * inner == 0 { return }
        let px = SendablePointer(x), pi = SendablePointer(idx), py = SendablePointer(y)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / inner)) { range in
            for row in range {
                let o = row / count, j = row - o * count
                (py.base + row * inner).update(from: px.base + (o * size + Int(pi.base[j])) * inner, count: inner)
            }
        }
    }

    static func scatterAdd<T: KernelFloat>(_: T.Type, _ dy: Buffer, _ indices: Buffer, _ dx: Buffer, outer: Int,
                                           size: Int, inner: Int, count: Int) {
        if indices.dtype == .int32 {
            scatterAddRows(dy.pointer(T.self), indices.pointer(Int32.self), dx.pointer(T.self), outer, size, inner, count)
        } else {
            scatterAddRows(dy.pointer(T.self), indices.pointer(Int64.self), dx.pointer(T.self), outer, size, inner, count)
        }
    }

    /// dx[o, idx[j], :] += dy[o, j, :]. Each chunk owns a range of dx's (o, column) pairs and walks j in
    /// order, so no two threads touch one element and each sum has a fixed order (deterministic).
    static func scatterAddRows<T: KernelFloat, I: BinaryInteger>(_ dy: UnsafeMutablePointer<T>,
                                                                 _ idx: UnsafeMutablePointer<I>,
                                                                 _ dx: UnsafeMutablePointer<T>, _ outer: Int,
                                                                 _ size: Int, _ inner: Int, _ count: Int) {
        let columns = outer * inner
        if columns == 0 || count == 0 { return }
        let pg = SendablePointer(dy), pi = SendablePointer(idx), pd = SendablePointer(dx)
        Parallel.chunks(columns, chunk: max(16, Parallel.defaultChunk / count)) { range in
            var p = range.lowerBound
            while p < range.upperBound {
                let o = p / inner, c0 = p - o * inner, c1 = min(inner, c0 + range.upperBound - p)
                for j in 0..<count {
                    let src = pg.base + (o * count + j) * inner, dst = pd.base + (o * size + Int(pi.base[j])) * inner
                    for c in c0..<c1 { dst[c] += src[c] }
                }
                p += c1 - c0
            }
        }
    }

    public func select(_ condition: Buffer, _ conditionStrides: [Int], _ a: Buffer, _ aStrides: [Int],
                       _ b: Buffer, _ bStrides: [Int], _ out: Buffer, shape: [Int]) {
        let sc = conditionStrides, sa = aStrides, sb = bStrides
        switch out.dtype.byteSize {
        case 8: selectStrided(UInt64.self, condition, sc, a, sa, b, sb, out, shape)
        case 4: selectStrided(UInt32.self, condition, sc, a, sa, b, sb, out, shape)
        case 2: selectStrided(UInt16.self, condition, sc, a, sa, b, sb, out, shape)
        default: selectStrided(UInt8.self, condition, sc, a, sa, b, sb, out, shape)
        }
    }

    /// Row-major walk: offsets per row from the outer axes, a strided inner loop.
    private func selectStrided<E>(_: E.Type, _ condition: Buffer, _ sc0: [Int], _ a: Buffer, _ sa0: [Int],
                                  _ b: Buffer, _ sb0: [Int], _ out: Buffer, _ shape0: [Int]) {
        let shape = shape0.isEmpty ? [1] : shape0
        let sc = sc0.isEmpty ? [0] : sc0, sa = sa0.isEmpty ? [0] : sa0, sb = sb0.isEmpty ? [0] : sb0
        let rank = shape.count, inner = shape[rank - 1]
        let ic = sc[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1]
        let rows = shape.dropLast().reduce(1, *)
        if rows * inner == 0 { return }
        let pc = SendablePointer(condition.pointer(Bool.self)), pa = SendablePointer(a.pointer(E.self))
        let pb = SendablePointer(b.pointer(E.self)), po = SendablePointer(out.pointer(E.self))
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / inner)) { range in
            for row in range {
                var rem = row, oc = 0, oa = 0, ob = 0
                for axis in stride(from: rank - 2, through: 0, by: -1) {
                    let i = rem % shape[axis]
                    rem /= shape[axis]
                    oc += i * sc[axis]; oa += i * sa[axis]; ob += i * sb[axis]
                }
                let c = pc.base + oc, x = pa.base + oa, y = pb.base + ob, o = po.base + row * inner
                for j in 0..<inner { o[j] = c[j * ic] ? x[j * ia] : y[j * ib] }
            }
        }
    }

    public func compare(_ op: CompareOp, _ x: Buffer, scalar: Double, _ out: Buffer, count: Int) {
        switch x.dtype {
        // torch compares a float32 tensor with a Python scalar in float32: round the scalar the same way.
        case .float32: compare(op, x.pointer(Float.self), Float(scalar), out.pointer(Bool.self), count)
        case .float64: compare(op, x.pointer(Double.self), scalar, out.pointer(Bool.self), count)
        default: fatalError("compare \(op): unsupported dtype \(x.dtype)")
        }
    }

    private func compare<T: KernelFloat>(_ op: CompareOp, _ x: UnsafeMutablePointer<T>, _ s: T,
                                         _ y: UnsafeMutablePointer<Bool>, _ count: Int) {
        let px = SendablePointer(x), py = SendablePointer(y)
        Parallel.chunks(count) { r in
            let v = px.base, m = py.base
            switch op {
            case .greater: for i in r { m[i] = v[i] > s }
            case .less: for i in r { m[i] = v[i] < s }
            }
        }
    }
}
