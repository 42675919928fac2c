/// Sum reductions with SIMD16 lane accumulators (STYLE R13, §4.5).
extension CPUBackend {
    public func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) {
        switch x.dtype {
        case .float32: reduceSum(x.pointer(Float.self), y.pointer(Float.self), outer, reduce, inner)
        case .float64: reduceSum(x.pointer(Double.self), y.pointer(Double.self), outer, reduce, inner)
        default: preconditionFailure("reduceSum: unsupported dtype \(x.dtype)")
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
        // Column sums: add rows of length `inner` in index order; parallel over (outer, inner-chunk).
        let colChunk = 4096
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
}

/// Σ p[0..<n] with 16 lanes, lanes combined in a fixed order.
@inline(__always)
func rowSum<T: BinaryFloatingPoint & SIMDScalar>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> T {
    var acc = SIMD16<T>(repeating: 0)
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 16 <= n {
        acc += raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.stride, as: SIMD16<T>.self)
        i += 16
    }
    var s = acc.sum()
    while i < n { s += p[i]; i += 1 }
    return s
}
