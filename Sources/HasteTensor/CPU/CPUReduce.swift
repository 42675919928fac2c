/// Sum and max reductions with SIMD16 lane accumulators (STYLE R13, §4.5), plus the row helpers the
/// softmax, norm and loss kernels share (rowSum, rowMax, rowDot).
extension CPUBackend {
    public func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) {
        switch x.dtype {
        case .float32: reduceSum(x.pointer(Float.self), y.pointer(Float.self), outer, reduce, inner)
        case .float64: reduceSum(x.pointer(Double.self), y.pointer(Double.self), outer, reduce, inner)
        case .bfloat16 where y.dtype == .float32:      // widened into a scratch copy, then the float32 sums
            let n = outer * reduce * inner
            let wide = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(n, 1))
            defer { wide.deallocate() }
            let bits = x.pointer(UInt16.self)
            for i in 0..<n { wide[i] = Float(bitPattern: UInt32(bits[i]) << 16) }
            reduceSum(wide, y.pointer(Float.self), outer, reduce, inner)
        default: fatalError("reduceSum: unsupported dtype \(x.dtype)")
        }
    }

    private func reduceSum<T: BinaryFloatingPoint & SIMDScalar>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
                                                               _ outer: Int, _ reduce: Int, _ inner: Int) {
        let px = SendablePointer(x), py = SendablePointer(y)
        if inner == 1 {
            Parallel.chunks(outer, chunk: max(1, Parallel.defaultChunk / max(reduce, 1))) { rows in
                for o in rows { py.base[o] = rowSum(px.base + o * reduce, reduce) }
            }
            return
        }
        // Column sums: add rows of length `inner` in index order; parallel over (outer, inner-chunk). Each column
        // sums its rows in the same order however the columns are chunked. With few outer slices (a bias gradient:
        // one slice of M rows), columns go in chunks of 256 so the threads share it.
        let fewSlices = outer < 2 * Parallel.threads && reduce * inner >= 1 << 16
        let colChunk = fewSlices ? 256 : 4096
        if inner < colChunk {
            Parallel.chunks(outer, chunk: max(1, Parallel.defaultChunk / max(reduce * inner, 1))) { rows in
                for o in rows {
                    let out = py.base + o * inner
                    for i in 0..<inner { out[i] = 0 }
                    for r in 0..<reduce {
                        let row = px.base + (o * reduce + r) * inner
                        for i in 0..<inner { out[i] += row[i] }
                    }
                }
            }
            return
        }
        let colChunks = (inner + colChunk - 1) / colChunk
        Parallel.forEach(outer * colChunks) { job in
            let o = job / colChunks, c0 = (job % colChunks) * colChunk, c1 = min(inner, c0 + colChunk)
            let out = py.base + o * inner
            for i in c0..<c1 { out[i] = 0 }
            for r in 0..<reduce {
                let row = px.base + (o * reduce + r) * inner
                for i in c0..<c1 { out[i] += row[i] }
            }
        }
    }

    public func reduceMax(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) {
        switch x.dtype {
        case .float32: reduceMax(x.pointer(Float.self), y.pointer(Float.self), outer, reduce, inner)
        case .float64: reduceMax(x.pointer(Double.self), y.pointer(Double.self), outer, reduce, inner)
        default: fatalError("reduceMax: unsupported dtype \(x.dtype)")
        }
    }

    /// Rows (inner == 1) use SIMD16 lanes; columns fold whole rows of `inner` into the output in index order.
    private func reduceMax<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
                                           _ outer: Int, _ reduce: Int, _ inner: Int) {
        let px = SendablePointer(x), py = SendablePointer(y)
        if inner == 1 {
            Parallel.chunks(outer, chunk: max(1, Parallel.defaultChunk / reduce)) { rows in
                for o in rows { py.base[o] = rowMaxPropagatingNaN(px.base + o * reduce, reduce) }
            }
            return
        }
        Parallel.chunks(outer * inner, chunk: max(1, Parallel.defaultChunk / reduce)) { cols in
            for c in cols {
                let o = c / inner, i = c % inner
                let p = px.base + o * reduce * inner + i
                var m = p[0]
                for r in 1..<reduce { m = stickyMax(m, p[r * inner]) }
                py.base[c] = m
            }
        }
    }

    public func reduceMaxBackward(_ x: Buffer, _ y: Buffer, _ dy: Buffer, _ dx: Buffer, outer: Int, reduce: Int, inner: Int) {
        switch x.dtype {
        case .float32:
            reduceMaxBackward(x.pointer(Float.self), y.pointer(Float.self), dy.pointer(Float.self), dx.pointer(Float.self),
                              outer, reduce, inner)
        case .float64:
            reduceMaxBackward(x.pointer(Double.self), y.pointer(Double.self), dy.pointer(Double.self), dx.pointer(Double.self),
                              outer, reduce, inner)
        default: fatalError("reduceMaxBackward: unsupported dtype \(x.dtype)")
        }
    }

    /// One output element at a time: count its ties along `reduce` (stride `inner`), then write the shares.
    /// Not a hot path (amax appears in losses and metrics, not inside blocks).
    private func reduceMaxBackward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
                                                   _ dy: UnsafeMutablePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                                   _ outer: Int, _ reduce: Int, _ inner: Int) {
        let px = SendablePointer(x), py = SendablePointer(y), pdy = SendablePointer(dy), pdx = SendablePointer(dx)
        Parallel.chunks(outer * inner, chunk: max(1, Parallel.defaultChunk / reduce)) { cols in
            for c in cols {
                let o = c / inner, i = c % inner
                let base = o * reduce * inner + i
                let xs = px.base + base, ds = pdx.base + base
                let m = py.base[c]
                var ties = 0
                for r in 0..<reduce where xs[r * inner] == m { ties += 1 }
                let share = ties == 0 ? 0 : pdy.base[c] / T(ties)
                for r in 0..<reduce { ds[r * inner] = xs[r * inner] == m ? share : 0 }
            }
        }
    }
}

/// max that keeps a NaN once seen (torch.amax propagates NaN).
@inline(__always)
func stickyMax<T: KernelFloat>(_ m: T, _ v: T) -> T { v > m || v.isNaN && !m.isNaN ? v : m }

@inline(__always)
func loadSIMD16<T: SIMDScalar>(_ p: UnsafeMutablePointer<T>, _ i: Int) -> SIMD16<T> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<T>.self)
}

@inline(__always)
func storeSIMD16<T: SIMDScalar>(_ v: SIMD16<T>, _ p: UnsafeMutablePointer<T>, _ i: Int) {
    UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD16<T>.self)
}

/// Σ a[i]·b[i] with 16 lanes. Multiply then add, not `addProduct`: without an FMA target feature that is a
/// libm call per lane (×40 slower, measured).
@inline(__always)
func rowDot<T: KernelFloat>(_ a: UnsafeMutablePointer<T>, _ b: UnsafeMutablePointer<T>, _ n: Int) -> T {
    var acc = SIMD16<T>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        acc += loadSIMD16(a, i) * loadSIMD16(b, i)
        i += 16
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// Lane-wise max of two vectors, NaN in `v` skipped. Written per lane on purpose: in generic code the SIMD
/// mask operations (`.>`, `replace(with:where:)`) do not vectorise and cost ~8 ns per element (measured);
/// this loop compiles to packed max instructions.
@inline(__always)
func laneMax<T: KernelFloat>(_ acc: SIMD16<T>, _ v: SIMD16<T>) -> SIMD16<T> {
    var r = acc
    for l in 0..<16 { r[l] = v[l] > acc[l] ? v[l] : acc[l] }
    return r
}

/// The largest lane (NaN lanes of a later index skipped).
@inline(__always)
func largestLane<T: KernelFloat>(_ v: SIMD16<T>) -> T {
    var m = v[0]
    for l in 1..<16 { m = v[l] > m ? v[l] : m }
    return m
}

/// max p[0..<n] (n ≥ 1) with 16 lanes; NaNs may be skipped, which is enough where the max is only a shift
/// (softmax: a NaN input still makes its row NaN through exp).
@inline(__always)
func rowMax<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> T {
    var i = 0
    var m = -T.infinity
    if n >= 16 {
        var acc = loadSIMD16(p, 0)
        i = 16
        while i + 16 <= n {
            acc = laneMax(acc, loadSIMD16(p, i))
            i += 16
        }
        m = largestLane(acc)
    }
    while i < n { if p[i] > m { m = p[i] }; i += 1 }
    return m
}

/// max p[0..<n] (n ≥ 1) where any NaN makes the result NaN (torch.amax).
@inline(__always)
func rowMaxPropagatingNaN<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> T {
    var i = 0
    var m = p[0]
    if n >= 16 {
        var acc = loadSIMD16(p, 0)
        var probe = acc - acc                 // stays 0 unless some element is NaN or ±inf
        i = 16
        while i + 16 <= n {
            let v = loadSIMD16(p, i)
            acc = laneMax(acc, v)
            probe += v - v
            i += 16
        }
        m = largestLane(acc)
        if probe.sum().isNaN { m = p[0]; for j in 1..<i { m = stickyMax(m, p[j]) } }   // rare: rescan
    }
    while i < n { m = stickyMax(m, p[i]); i += 1 }
    return m
}
