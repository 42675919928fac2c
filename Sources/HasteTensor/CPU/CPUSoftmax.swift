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

    public func softCrossEntropyRuns(dtype: DType) -> Bool { dtype == .float32 || dtype == .float64 }

    public func softCrossEntropyForward(x: Buffer, xRows: RowLayout, t: Buffer, tRows: RowLayout, rows: Int, cols: Int,
                                        loss: Buffer, difference: Buffer) {
        switch x.dtype {
        case .float32:
            softCrossEntropyRows(x.pointer(Float.self), xRows, t.pointer(Float.self), tRows, rows, cols,
                                 loss.pointer(Float.self), difference.pointer(Float.self))
        case .float64:
            softCrossEntropyRows(x.pointer(Double.self), xRows, t.pointer(Double.self), tRows, rows, cols,
                                 loss.pointer(Double.self), difference.pointer(Double.self))
        default: fatalError("softCrossEntropyForward: unsupported dtype \(x.dtype)")
        }
    }

    /// bf16(difference · s) in the first `used` of each of `outer` rows of `full`, zeros after: the float32 product
    /// rounded once as `cast` rounds (`bfloat16Bits`), so the values of the float32 gradient a rounding node rounds.
    public func softCrossEntropyBackwardLow(difference: Buffer, scale: Buffer, dx: Buffer, outer: Int, used: Int, full: Int) -> Bool {
        guard difference.dtype == .float32, scale.dtype == .float32, dx.dtype == .bfloat16, used <= full else { return false }
        let s = scale.pointer(Float.self)[0]
        let d = SendablePointer(difference.pointer(Float.self)), y = SendablePointer(dx.pointer(UInt16.self))
        Parallel.chunks(outer * full) { r in
            for i in r {
                let o = i / full, c = i - o * full
                y.base[i] = c < used ? (d.base[o * used + c] * s).bfloat16Bits : 0
            }
        }
        return true
    }

    /// Per row: p = softmax(t) (softmaxRow, into the difference row), e = exp(x − m) with Z = Σ e (sumExpShifted,
    /// into a row of scratch), loss = −Σ p·((x − m) − log Z) (logSoftmaxRow's terms, summed in 16 lanes as rowDot),
    /// difference = e·(1/Z) − p (softmaxRow's scaling): each input row read once, one exponential per element of each.
    private func softCrossEntropyRows<T: SoftmaxExp>(_ x: UnsafeMutablePointer<T>, _ xRows: RowLayout,
                                                     _ t: UnsafeMutablePointer<T>, _ tRows: RowLayout, _ rows: Int,
                                                     _ cols: Int, _ loss: UnsafeMutablePointer<T>,
                                                     _ difference: UnsafeMutablePointer<T>) {
        let px = SendablePointer(x), pt = SendablePointer(t), pl = SendablePointer(loss), pd = SendablePointer(difference)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / cols)) { range in
            let e = UnsafeMutablePointer<T>.allocate(capacity: cols)
            defer { e.deallocate() }
            for r in range {
                let xr = px.base + xRows.start(r), p = pd.base + r * cols
                softmaxRow(pt.base + tRows.start(r), p, cols)
                let m = rowMax(xr, cols)
                let z = sumExpShifted(xr, cols, m, store: e), logZ = T.log(z), inv = 1 / z
                let mv = SIMD16<T>(repeating: m), lv = SIMD16<T>(repeating: logZ), iv = SIMD16<T>(repeating: inv)
                var acc = SIMD16<T>(repeating: 0)
                var i = 0
                while i + 16 <= cols {
                    let pv = loadSIMD16(p, i)
                    acc += pv * ((loadSIMD16(xr, i) - mv) - lv)
                    storeSIMD16(loadSIMD16(e, i) * iv - pv, p, i)
                    i += 16
                }
                var ce = acc.sum()
                while i < cols {
                    ce += p[i] * ((xr[i] - m) - logZ)
                    p[i] = e[i] * inv - p[i]
                    i += 1
                }
                pl.base[r] = -ce
            }
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
