import RealModule

/// Attention on the CPU: OpenBLAS GEMMs batched over the heads of a pass (each GEMM threads itself and is
/// never called inside our pool, STYLE §4.9) around row-softmax passes that run in parallel over fixed row
/// chunks. Rows are independent, so results are bitwise identical whatever the thread count.

/// Heads per pass: each pass runs GEMM → softmax → GEMM over a few heads so their [Tq, Tk] scores (1 MiB at
/// T = 256) stay in cache between the steps instead of streaming N·H·Tq·Tk floats through memory each time.
private let attentionHeadGroup = 4

extension Buffer {
    /// The buffer `count` elements further on.
    fileprivate func advanced(by count: Int) -> Buffer { Buffer(storage: storage, offset: offset + count, dtype: dtype) }
}

extension CPUBackend {
    public func attentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape s: AttentionShape,
                                 scale: Double) {
        let (tq, tk, dh, dv) = (s.queries, s.keys, s.headDim, s.valueDim)
        let scratch = passScratch(s, dtype: out.dtype, if: probs == nil)
        forEachHeadGroup(s.batch) { h, g in
            let p = probs?.advanced(by: h * tq * tk) ?? scratch
            gemm(transA: false, transB: true, m: tq, n: tk, k: dh, alpha: scale,
                 a: q.advanced(by: h * tq * dh), lda: max(dh, 1), strideA: tq * dh,
                 b: k.advanced(by: h * tk * dh), ldb: max(dh, 1), strideB: tk * dh,
                 beta: 0, c: p, ldc: max(tk, 1), strideC: tq * tk, batch: g)
            softmaxRows(p, p, rows: g * tq, cols: tk)
            probsTimesValues(p, v.advanced(by: h * tk * dv), out.advanced(by: h * tq * dv), s, g)
        }
    }

    public func attentionBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer,
                                  dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double) {
        let (tq, tk, dh, dvd) = (s.queries, s.keys, s.headDim, s.valueDim)
        let needScores = dq != nil || dk != nil
        // dS for one pass of heads only: the dq and dk GEMMs consume it right away, while in cache.
        let ds = passScratch(s, dtype: probs.dtype, if: needScores)
        forEachHeadGroup(s.batch) { h, g in
            scoresBackward(probs: probs.advanced(by: h * tq * tk), v: v.advanced(by: h * tk * dvd),
                           dOut: dOut.advanced(by: h * tq * dvd), dLogits: needScores ? ds : nil,
                           dv: dv?.advanced(by: h * tk * dvd), s, g)
            if let dq {   // [Tq, Tk]·[Tk, Dh]
                gemm(transA: false, transB: false, m: tq, n: dh, k: tk, alpha: scale,
                     a: ds, lda: max(tk, 1), strideA: tq * tk, b: k.advanced(by: h * tk * dh), ldb: max(dh, 1), strideB: tk * dh,
                     beta: 0, c: dq.advanced(by: h * tq * dh), ldc: max(dh, 1), strideC: tq * dh, batch: g)
            }
            if let dk {   // [Tq, Tk]ᵀ·[Tq, Dh]
                gemm(transA: true, transB: false, m: tk, n: dh, k: tq, alpha: scale,
                     a: ds, lda: max(tk, 1), strideA: tq * tk, b: q.advanced(by: h * tq * dh), ldb: max(dh, 1), strideB: tq * dh,
                     beta: 0, c: dk.advanced(by: h * tk * dh), ldc: max(dh, 1), strideC: tk * dh, batch: g)
            }
        }
    }

    public func softmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, shape s: AttentionShape) {
        let (tq, tk, dv) = (s.queries, s.keys, s.valueDim)
        forEachHeadGroup(s.batch) { h, g in
            let p = probs.advanced(by: h * tq * tk)
            softmaxRows(logits.advanced(by: h * tq * tk), p, rows: g * tq, cols: tk)
            probsTimesValues(p, v.advanced(by: h * tk * dv), out.advanced(by: h * tq * dv), s, g)
        }
    }

    public func softmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?,
                                      shape s: AttentionShape) {
        let (tq, tk, dvd) = (s.queries, s.keys, s.valueDim)
        forEachHeadGroup(s.batch) { h, g in
            scoresBackward(probs: probs.advanced(by: h * tq * tk), v: v.advanced(by: h * tk * dvd),
                           dOut: dOut.advanced(by: h * tq * dvd), dLogits: dLogits?.advanced(by: h * tq * tk),
                           dv: dv?.advanced(by: h * tk * dvd), s, g)
        }
    }

    /// A [heads per pass, Tq, Tk] workspace (empty unless `needed`), freed with its storage after the call.
    private func passScratch(_ s: AttentionShape, dtype: DType, if needed: Bool) -> Buffer {
        let count = needed ? min(attentionHeadGroup, s.batch) * s.queries * s.keys : 0
        return Buffer(storage: Storage(byteCount: count * dtype.byteSize, device: .cpu), offset: 0, dtype: dtype)
    }

    /// Calls body(first head, heads in pass) over passes of `attentionHeadGroup` heads.
    private func forEachHeadGroup(_ batch: Int, _ body: (Int, Int) -> Void) {
        var h = 0
        while h < batch {
            let g = min(attentionHeadGroup, batch - h)
            body(h, g)
            h += g
        }
    }

    /// For `g` heads: dv = Pᵀ·dOut; dLogits = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = dOut·vᵀ computed in place.
    private func scoresBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?,
                                _ s: AttentionShape, _ g: Int) {
        let (tq, tk, dvd) = (s.queries, s.keys, s.valueDim)
        if let dv {   // [Tq, Tk]ᵀ·[Tq, Dv]
            gemm(transA: true, transB: false, m: tk, n: dvd, k: tq, alpha: 1,
                 a: probs, lda: max(tk, 1), strideA: tq * tk, b: dOut, ldb: max(dvd, 1), strideB: tq * dvd,
                 beta: 0, c: dv, ldc: max(dvd, 1), strideC: tk * dvd, batch: g)
        }
        guard let dLogits else { return }
        gemm(transA: false, transB: true, m: tq, n: tk, k: dvd, alpha: 1,
             a: dOut, lda: max(dvd, 1), strideA: tq * dvd, b: v, ldb: max(dvd, 1), strideB: tk * dvd,
             beta: 0, c: dLogits, ldc: max(tk, 1), strideC: tq * tk, batch: g)
        softmaxBackwardRows(probs, dLogits, rows: g * tq, cols: tk)
    }

    /// out = P·v for `g` heads: [Tq, Tk]·[Tk, Dv].
    private func probsTimesValues(_ probs: Buffer, _ v: Buffer, _ out: Buffer, _ s: AttentionShape, _ g: Int) {
        gemm(transA: false, transB: false, m: s.queries, n: s.valueDim, k: s.keys, alpha: 1,
             a: probs, lda: max(s.keys, 1), strideA: s.queries * s.keys,
             b: v, ldb: max(s.valueDim, 1), strideB: s.keys * s.valueDim,
             beta: 0, c: out, ldc: max(s.valueDim, 1), strideC: s.queries * s.valueDim, batch: g)
    }

    /// y[r] = softmax(x[r]) for `rows` contiguous rows of `cols`; x and y may be the same buffer.
    private func softmaxRows(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        if rows == 0 || cols == 0 { return }
        let chunk = max(1, Parallel.defaultChunk / cols)
        switch y.dtype {
        case .float32:
            let px = SendablePointer(x.pointer(Float.self)), py = SendablePointer(y.pointer(Float.self))
            Parallel.chunks(rows, chunk: chunk) { range in
                for r in range { softmaxRowFloat(px.base + r * cols, py.base + r * cols, cols) }
            }
        case .float64:
            let px = SendablePointer(x.pointer(Double.self)), py = SendablePointer(y.pointer(Double.self))
            Parallel.chunks(rows, chunk: chunk) { range in
                for r in range { softmaxRowScalarExp(px.base + r * cols, py.base + r * cols, cols) }
            }
        default: preconditionFailure("attention softmax: unsupported dtype \(y.dtype)")
        }
    }

    /// g[r] ← p[r] ⊙ (g[r] − ⟨g[r], p[r]⟩) in place: dS from dP for `rows` rows of `cols`.
    private func softmaxBackwardRows(_ p: Buffer, _ g: Buffer, rows: Int, cols: Int) {
        if rows == 0 || cols == 0 { return }
        let chunk = max(1, Parallel.defaultChunk / cols)
        switch g.dtype {
        case .float32:
            let pp = SendablePointer(p.pointer(Float.self)), pg = SendablePointer(g.pointer(Float.self))
            Parallel.chunks(rows, chunk: chunk) { range in
                for r in range { softmaxBackwardRow(pp.base + r * cols, pg.base + r * cols, cols) }
            }
        case .float64:
            let pp = SendablePointer(p.pointer(Double.self)), pg = SendablePointer(g.pointer(Double.self))
            Parallel.chunks(rows, chunk: chunk) { range in
                for r in range { softmaxBackwardRow(pp.base + r * cols, pg.base + r * cols, cols) }
            }
        default: preconditionFailure("attention softmax backward: unsupported dtype \(g.dtype)")
        }
    }
}

/// max over p[0..<n] (n ≥ 1) with 16 lanes. The lane loop of compare-selects vectorizes to `max` instructions;
/// `pointwiseMax` and mask `replace` measured ~100× slower here (STYLE §4.8).
@inline(__always)
private func rowMax<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> T {
    var i = 0, m = p[0]
    if n >= 16 {
        let raw = UnsafeRawPointer(p)
        var acc = raw.loadUnaligned(as: SIMD16<T>.self)
        i = 16
        while i + 16 <= n {
            let v = raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.stride, as: SIMD16<T>.self)
            for j in 0..<16 { acc[j] = v[j] > acc[j] ? v[j] : acc[j] }
            i += 16
        }
        for j in 0..<16 where acc[j] > m { m = acc[j] }
    }
    while i < n { if p[i] > m { m = p[i] }; i += 1 }
    return m
}

/// Σ a[i]·b[i] over n elements with 16 lanes, lanes combined in a fixed order.
@inline(__always)
private func rowDot<T: KernelFloat>(_ a: UnsafeMutablePointer<T>, _ b: UnsafeMutablePointer<T>, _ n: Int) -> T {
    var acc = SIMD16<T>(repeating: 0)
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    var i = 0
    while i + 16 <= n {
        let o = i * MemoryLayout<T>.stride
        acc += ra.loadUnaligned(fromByteOffset: o, as: SIMD16<T>.self) * rb.loadUnaligned(fromByteOffset: o, as: SIMD16<T>.self)
        i += 16
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// g ← p ⊙ (g − ⟨g, p⟩) over one row: the softmax Jacobian-vector product.
@inline(__always)
private func softmaxBackwardRow<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ g: UnsafeMutablePointer<T>, _ n: Int) {
    let d = rowDot(g, p, n)
    let rp = UnsafeRawPointer(p), rg = UnsafeMutableRawPointer(g)
    var i = 0
    while i + 16 <= n {
        let o = i * MemoryLayout<T>.stride
        let pv = rp.loadUnaligned(fromByteOffset: o, as: SIMD16<T>.self)
        let gv = rg.loadUnaligned(fromByteOffset: o, as: SIMD16<T>.self)
        rg.storeBytes(of: pv * (gv - d), toByteOffset: o, as: SIMD16<T>.self)
        i += 16
    }
    while i < n { g[i] = p[i] * (g[i] - d); i += 1 }
}

/// Max-subtracted softmax of one row with the scalar `exp` (float64: the gradcheck path).
@inline(__always)
private func softmaxRowScalarExp<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int) {
    let m = rowMax(x, n)
    for i in 0..<n { y[i] = T.exp(x[i] - m) }
    let inv = 1 / rowSum(y, n)
    for i in 0..<n { y[i] *= inv }
}

/// Max-subtracted softmax of one float32 row, 16 lanes at a time through `expLanes`; the tail is padded
/// to a full vector so every element takes the same exp.
@inline(__always)
private func softmaxRowFloat(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    let m = rowMax(x, n)
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        let o = i * MemoryLayout<Float>.stride
        let e = expLanes(rx.loadUnaligned(fromByteOffset: o, as: SIMD16<Float>.self) - m)
        ry.storeBytes(of: e, toByteOffset: o, as: SIMD16<Float>.self)
        acc += e
        i += 16
    }
    var sum = acc.sum()
    if i < n {
        var t = SIMD16<Float>(repeating: -.infinity)
        for j in 0..<(n - i) { t[j] = x[i + j] - m }
        let e = expLanes(t)
        for j in 0..<(n - i) { y[i + j] = e[j]; sum += e[j] }
    }
    let inv = 1 / sum
    i = 0
    while i + 16 <= n {
        let o = i * MemoryLayout<Float>.stride
        ry.storeBytes(of: ry.loadUnaligned(fromByteOffset: o, as: SIMD16<Float>.self) * inv, toByteOffset: o, as: SIMD16<Float>.self)
        i += 16
    }
    while i < n { y[i] *= inv; i += 1 }
}

/// e^x for x ≤ 0 in 16 lanes (Cephes expf: within 2 ulp of libm over [−87, 0]). x = n·ln2 + r with
/// |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n assembled in the exponent bits. n comes from the
/// 1.5·2²³ rounding trick, so no float→int conversion (STYLE §4.8). Inputs below −87.3 (e^x < 2⁻¹²⁶, far
/// below a softmax denominator ≥ 1) are clamped so 2^n stays a normal number; NaN propagates.
@inline(__always)
private func expLanes(_ x0: SIMD16<Float>) -> SIMD16<Float> {
    let lo = SIMD16<Float>(repeating: -87.3)
    let x = x0.replacing(with: lo, where: x0 .< lo)      // measured fastest here, unlike in rowMax
    let magic: Float = 12_582_912                // 1.5·2²³: adding it rounds to an integer in the low bits
    let t = x * 1.442_695_04 + magic             // n = round(x / ln2), held in t's mantissa
    let n = t - magic
    var r = x - n * 0.693_359_375                // ln2 split in two for an exact first product
    r = r + n * 2.121_944_4e-4
    var p = SIMD16<Float>(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_950_7e-3
    p = p * r + 8.333_451_907_3e-3
    p = p * r + 4.166_579_589_4e-2
    p = p * r + 1.666_666_545_9e-1
    p = p * r + 5.000_000_120_1e-1
    p = p * (r * r) + r + 1
    let bits = unsafeBitCast(t, to: SIMD16<Int32>.self) &- Int32(bitPattern: 0x4B40_0000)   // = n
    let scale = unsafeBitCast((bits &+ 127) &<< 23, to: SIMD16<Float>.self)
    return p * scale
}
