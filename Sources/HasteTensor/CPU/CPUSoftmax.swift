import CKernels
/// Softmax kernels: one row at a time, parallel over fixed chunks of rows (STYLE R13). Per row: a SIMD16
/// max, one pass writing e = exp16(x − m) into y while summing e in 16 lanes, one scaling pass — the row
/// stays in L1 between passes, so x is read from memory once and y written once. The row's tail (n mod 16)
/// goes through the same 16-lane exp, padded with −∞ (exp → 0), so every element takes one code path.
extension CPUBackend {
    public func softmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        switch x.dtype {
        case .float32: softmaxRows(x.pointer(Float.self), y.pointer(Float.self), rows, cols, log: false)
        case .float64: softmaxRows(x.pointer(Double.self), y.pointer(Double.self), rows, cols, log: false)
        default: fatalError("softmaxForward: unsupported dtype \(x.dtype)")
        }
    }

    public func logSoftmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        switch x.dtype {
        case .float32: softmaxRows(x.pointer(Float.self), y.pointer(Float.self), rows, cols, log: true)
        case .float64: softmaxRows(x.pointer(Double.self), y.pointer(Double.self), rows, cols, log: true)
        default: fatalError("logSoftmaxForward: unsupported dtype \(x.dtype)")
        }
    }

    public func softmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) {
        switch y.dtype {
        case .float32: softmaxBackwardRows(y.pointer(Float.self), dy.pointer(Float.self), dx.pointer(Float.self), rows, cols, log: false)
        case .float64: softmaxBackwardRows(y.pointer(Double.self), dy.pointer(Double.self), dx.pointer(Double.self), rows, cols, log: false)
        default: fatalError("softmaxBackward: unsupported dtype \(y.dtype)")
        }
    }

    public func logSoftmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) {
        switch y.dtype {
        case .float32: softmaxBackwardRows(y.pointer(Float.self), dy.pointer(Float.self), dx.pointer(Float.self), rows, cols, log: true)
        case .float64: softmaxBackwardRows(y.pointer(Double.self), dy.pointer(Double.self), dx.pointer(Double.self), rows, cols, log: true)
        default: fatalError("logSoftmaxBackward: unsupported dtype \(y.dtype)")
        }
    }

    private func softmaxRows<T: SoftmaxExp>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
                                            _ rows: Int, _ cols: Int, log: Bool) {
        let px = SendablePointer(x), py = SendablePointer(y)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / cols)) { range in
            for r in range {
                let xr = px.base + r * cols, yr = py.base + r * cols
                if log { logSoftmaxRow(xr, yr, cols) } else { softmaxRow(xr, yr, cols) }
            }
        }
    }

    /// softmax: dx = y·(dy − Σ dy·y); log-softmax: dx = dy − exp(y)·Σ dy, exp(y) in 16 lanes.
    private func softmaxBackwardRows<T: SoftmaxExp>(_ y: UnsafeMutablePointer<T>, _ dy: UnsafeMutablePointer<T>,
                                                    _ dx: UnsafeMutablePointer<T>, _ rows: Int, _ cols: Int, log: Bool) {
        let py = SendablePointer(y), pdy = SendablePointer(dy), pdx = SendablePointer(dx)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / cols)) { range in
            for r in range {
                let o = r * cols
                let yr = py.base + o, g = pdy.base + o, d = pdx.base + o
                var i = 0
                if log {
                    let s = rowSum(g, cols), sv = SIMD16<T>(repeating: s)
                    while i + 16 <= cols { storeSIMD16(loadSIMD16(g, i) - T.exp16(loadSIMD16(yr, i)) * sv, d, i); i += 16 }
                    while i < cols { d[i] = g[i] - T.exp(yr[i]) * s; i += 1 }
                } else {
                    softmaxBackwardRow(yr, g, d, cols)
                }
            }
        }
    }
}

/// Σ exp(x − m) over one row in 16 lanes, optionally storing each exp into `out`; the tail is padded with −∞.
@inline(__always)
func sumExpShifted<T: SoftmaxExp>(_ x: UnsafeMutablePointer<T>, _ n: Int, _ m: T, store out: UnsafeMutablePointer<T>?) -> T {
    if T.self == Float.self && CPUKernels.level > 0 {    // the same lanes in AVX-512 / AVX2 (activations.c), same sum
        var acc = SIMD16<Float>()
        withUnsafeMutableBytes(of: &acc) { a in
            haste_sum_exp_shifted_f32(Int32(CPUKernels.level), UnsafeRawPointer(x).assumingMemoryBound(to: Float.self), n,
                                      unsafeBitCast(m, to: Float.self), out.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) },
                                      a.baseAddress!.assumingMemoryBound(to: Float.self))
        }
        return unsafeBitCast(acc.sum(), to: T.self)
    }
    let mv = SIMD16<T>(repeating: m)
    var acc = SIMD16<T>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        let e = T.exp16(loadSIMD16(x, i) - mv)
        if let out { storeSIMD16(e, out, i) }
        acc += e
        i += 16
    }
    if i < n {
        var v = SIMD16<T>(repeating: -T.infinity)
        for l in 0..<(n - i) { v[l] = x[i + l] }
        let e = T.exp16(v - mv)
        if let out { for l in 0..<(n - i) { out[i + l] = e[l] } }
        acc += e
    }
    return acc.sum()
}

/// dx = y·(dy − Σ dy·y) for one row of the softmax y; dx may be dy (each 16-lane block of dy is read before the same
/// block of dx is written).
@inline(__always)
func softmaxBackwardRow<T: SoftmaxExp>(_ y: UnsafeMutablePointer<T>, _ dy: UnsafeMutablePointer<T>,
                                       _ dx: UnsafeMutablePointer<T>, _ n: Int) {
    let s = rowDot(dy, y, n), sv = SIMD16<T>(repeating: s)
    var i = 0
    while i + 16 <= n { storeSIMD16(loadSIMD16(y, i) * (loadSIMD16(dy, i) - sv), dx, i); i += 16 }
    while i < n { dx[i] = y[i] * (dy[i] - s); i += 1 }
}

/// y = exp(x − m) / Σ exp(x − m) for one row (m = the row max).
@inline(__always)
func softmaxRow<T: SoftmaxExp>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int) {
    let inv = 1 / sumExpShifted(x, n, rowMax(x, n), store: y), iv = SIMD16<T>(repeating: inv)
    var i = 0
    while i + 16 <= n { storeSIMD16(loadSIMD16(y, i) * iv, y, i); i += 16 }
    while i < n { y[i] *= inv; i += 1 }
}

/// y = (x − m) − log Σ exp(x − m) for one row. Subtracting m first keeps the log term's digits when |m| is
/// large (m + log s would round to m's ulp).
@inline(__always)
func logSoftmaxRow<T: SoftmaxExp>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int) {
    let m = rowMax(x, n)
    let logSum = T.log(sumExpShifted(x, n, m, store: nil))
    let mv = SIMD16<T>(repeating: m), lv = SIMD16<T>(repeating: logSum)
    var i = 0
    while i + 16 <= n { storeSIMD16((loadSIMD16(x, i) - mv) - lv, y, i); i += 16 }
    while i < n { y[i] = (x[i] - m) - logSum; i += 1 }
}
