import RealModule

/// Elementwise kernels. One generic loop per shape of work, specialised on a functor type so the op is
/// chosen once per kernel, never per element (STYLE §4.4).
protocol BinaryFn { static func apply<T: KernelFloat>(_ a: T, _ b: T) -> T }
enum AddFn: BinaryFn { @inline(__always) static func apply<T: KernelFloat>(_ a: T, _ b: T) -> T { a + b } }
enum SubFn: BinaryFn { @inline(__always) static func apply<T: KernelFloat>(_ a: T, _ b: T) -> T { a - b } }
enum MulFn: BinaryFn { @inline(__always) static func apply<T: KernelFloat>(_ a: T, _ b: T) -> T { a * b } }
enum DivFn: BinaryFn { @inline(__always) static func apply<T: KernelFloat>(_ a: T, _ b: T) -> T { a / b } }
enum MaxFn: BinaryFn { @inline(__always) static func apply<T: KernelFloat>(_ a: T, _ b: T) -> T { a.isNaN || a > b ? a : b } }
enum MinFn: BinaryFn { @inline(__always) static func apply<T: KernelFloat>(_ a: T, _ b: T) -> T { a.isNaN || a < b ? a : b } }

extension CPUBackend {
    public func binary(_ op: BinaryOp, _ a: Buffer, _ aStrides: [Int], _ b: Buffer, _ bStrides: [Int],
                       _ out: Buffer, shape: [Int]) {
        switch out.dtype {
        case .float32: binary(op, a.pointer(Float.self), aStrides, b.pointer(Float.self), bStrides, out.pointer(Float.self), shape)
        case .float64: binary(op, a.pointer(Double.self), aStrides, b.pointer(Double.self), bStrides, out.pointer(Double.self), shape)
        default: fatalError("binary \(op): unsupported dtype \(out.dtype)")
        }
    }

    private func binary<T: KernelFloat>(_ op: BinaryOp, _ a: UnsafeMutablePointer<T>, _ sa: [Int], _ b: UnsafeMutablePointer<T>,
                                 _ sb: [Int], _ out: UnsafeMutablePointer<T>, _ shape: [Int]) {
        switch op {
        case .add: stridedBinary(AddFn.self, a, sa, b, sb, out, shape)
        case .sub: stridedBinary(SubFn.self, a, sa, b, sb, out, shape)
        case .mul: stridedBinary(MulFn.self, a, sa, b, sb, out, shape)
        case .div: stridedBinary(DivFn.self, a, sa, b, sb, out, shape)
        case .maximum: stridedBinary(MaxFn.self, a, sa, b, sb, out, shape)
        case .minimum: stridedBinary(MinFn.self, a, sa, b, sb, out, shape)
        }
    }

    /// Merges adjacent axes where both operands step uniformly, so the inner loop is as long as possible.
    static func coalesce(_ shape: [Int], _ sa: [Int], _ sb: [Int]) -> ([Int], [Int], [Int]) {
        var shp: [Int] = [], a: [Int] = [], b: [Int] = []
        for i in 0..<shape.count where shape[i] != 1 {
            if let last = shp.last, a.last! == sa[i] * shape[i], b.last! == sb[i] * shape[i] {
                shp[shp.count - 1] = last * shape[i]
                a[a.count - 1] = sa[i]; b[b.count - 1] = sb[i]
            } else {
                shp.append(shape[i]); a.append(sa[i]); b.append(sb[i])
            }
        }
        if shp.isEmpty { return ([1], [0], [0]) }
        return (shp, a, b)
    }

    private func stridedBinary<F: BinaryFn, T: KernelFloat>(_: F.Type, _ a: UnsafeMutablePointer<T>, _ sa0: [Int],
                                                    _ b: UnsafeMutablePointer<T>, _ sb0: [Int],
                                                    _ out: UnsafeMutablePointer<T>, _ shape0: [Int]) {
        let (shape, sa, sb) = CPUBackend.coalesce(shape0, sa0, sb0)
        let rank = shape.count
        let inner = shape[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1]
        let rows = shape.dropLast().reduce(1, *)
        if rows * inner == 0 { return }
        let pa = SendablePointer(a), pb = SendablePointer(b), po = SendablePointer(out)
        // Chunk over whole elements when there is a single row, else over rows.
        if rows == 1 {
            Parallel.chunks(inner) { r in
                let x = pa.base, y = pb.base, o = po.base
                if ia == 1 && ib == 1 { for i in r { o[i] = F.apply(x[i], y[i]) } }
                else if ia == 1 && ib == 0 { let v = y[0]; for i in r { o[i] = F.apply(x[i], v) } }
                else if ia == 0 && ib == 1 { let v = x[0]; for i in r { o[i] = F.apply(v, y[i]) } }
                else { for i in r { o[i] = F.apply(x[i * ia], y[i * ib]) } }
            }
            return
        }
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / inner)) { range in
            for row in range {
                var rem = row, oa = 0, ob = 0
                for axis in stride(from: rank - 2, through: 0, by: -1) {
                    let c = rem % shape[axis]
                    rem /= shape[axis]
                    oa += c * sa[axis]; ob += c * sb[axis]
                }
                let x = pa.base + oa, y = pb.base + ob, o = po.base + row * inner
                if ia == 1 && ib == 1 { for i in 0..<inner { o[i] = F.apply(x[i], y[i]) } }
                else if ia == 1 && ib == 0 { let v = y[0]; for i in 0..<inner { o[i] = F.apply(x[i], v) } }
                else if ia == 0 && ib == 1 { let v = x[0]; for i in 0..<inner { o[i] = F.apply(v, y[i]) } }
                else { for i in 0..<inner { o[i] = F.apply(x[i * ia], y[i * ib]) } }
            }
        }
    }

    public func axpy(alpha: Double, x: Buffer, y: Buffer, count: Int) {
        switch y.dtype {
        case .float32: axpy(Float(alpha), x.pointer(Float.self), y.pointer(Float.self), count)
        case .float64: axpy(alpha, x.pointer(Double.self), y.pointer(Double.self), count)
        default: fatalError("axpy: unsupported dtype \(y.dtype)")
        }
    }

    private func axpy<T: KernelFloat>(_ alpha: T, _ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
        let px = SendablePointer(x), py = SendablePointer(y)
        Parallel.chunks(count) { r in
            let a = px.base, b = py.base
            if alpha == 1 { for i in r { b[i] += a[i] } } else { for i in r { b[i] += alpha * a[i] } }
        }
    }
}
