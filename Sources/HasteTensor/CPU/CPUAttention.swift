import RealModule

/// Attention on the CPU. float32 on AVX-512F CPUs: whole heads per pool task (CPUAttentionPerHead.swift).
/// Otherwise (and for long sequences): GEMMs batched over the heads of a pass (each GEMM threads itself and is
/// never called inside our pool, STYLE §4.9) around row-softmax passes that run in parallel over fixed row chunks.
/// Rows are independent, so results are bitwise identical whatever the thread count, on either path.

/// Heads per pass: each pass runs GEMM → softmax → GEMM over a few heads so their [Tq, Tk] scores (1 MiB at
/// T = 256) stay in cache between the steps instead of streaming N·H·Tq·Tk floats through memory each time.
private let attentionHeadGroup = 4


extension CPUBackend {
    public func attentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape s: AttentionShape,
                                 scale: Double) {
        if perHead(s, scale: scale, needsHeadDim: true, [q, k, v, out, probs]) {
            return perHeadForward(q: q, k: k, v: v, probs: probs, out: out, s, scale: scale)
        }
        groupedAttentionForward(q: q, k: k, v: v, probs: probs, out: out, shape: s, scale: scale)
    }

    /// `attentionForward` pass by pass of heads (`attentionHeadGroup`), each product split across the threads.
    func groupedAttentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape s: AttentionShape,
                                 scale: Double) {
        let (tq, tk, dv) = (s.queries, s.keys, s.valueDim)
        let scratch = passScratch(s, dtype: out.dtype, if: probs == nil)
        forEachHeadGroup(s.batch) { h, g in
            let p = probs?.advanced(by: h * tq * tk) ?? scratch
            probabilities(q, k, into: p, s, scale: scale, h, g)
            probsTimesValues(p, v.advanced(by: h * tk * dv), out.advanced(by: h * tq * dv), s, g)
        }
    }

    /// P = softmax(scale·q·kᵀ) of heads h..<h+g into p: the same calls in the forward and in the backward that
    /// recomputes P, so both see the same bits.
    private func probabilities(_ q: Buffer, _ k: Buffer, into p: Buffer, _ s: AttentionShape, scale: Double, _ h: Int, _ g: Int) {
        let (tq, tk, dh) = (s.queries, s.keys, s.headDim)
        gemm(transA: false, transB: true, m: tq, n: tk, k: dh, alpha: scale,
             a: q.advanced(by: h * tq * dh), lda: max(dh, 1), strideA: tq * dh,
             b: k.advanced(by: h * tk * dh), ldb: max(dh, 1), strideB: tk * dh,
             beta: 0, c: p, ldc: max(tk, 1), strideC: tq * tk, batch: g)
        softmaxRows(p, p, rows: g * tq, cols: tk)
    }

    /// `attentionBackward` with P recomputed one pass of heads at a time (`probabilities`, as the forward made it)
    /// into a [heads per pass, Tq, Tk] workspace: the gradients are bitwise those from saved probabilities.
    public func attentionBackwardRecomputing(q: Buffer, k: Buffer, v: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?,
                                             dv: Buffer?, shape s: AttentionShape, scale: Double) {
        if perHead(s, scale: scale, needsHeadDim: true, [q, k, v, dOut, dq, dk, dv]) {
            return perHeadBackward(q: q, k: k, v: v, probs: nil, dOut: dOut, dq: dq, dk: dk, dv: dv, s, scale: scale)
        }
        groupedAttentionBackwardRecomputing(q: q, k: k, v: v, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: s, scale: scale)
    }

    /// `attentionBackwardRecomputing` pass by pass of heads (`attentionHeadGroup`), each product split across the threads.
    func groupedAttentionBackwardRecomputing(q: Buffer, k: Buffer, v: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?,
                                             dv: Buffer?, shape s: AttentionShape, scale: Double) {
        let p = passScratch(s, dtype: q.dtype, if: true)
        let ds = passScratch(s, dtype: q.dtype, if: dq != nil || dk != nil)
        forEachHeadGroup(s.batch) { h, g in
            probabilities(q, k, into: p, s, scale: scale, h, g)
            backwardPass(q: q, k: k, v: v, probs: p, dOut: dOut, dq: dq, dk: dk, dv: dv, ds: ds, s, scale: scale, h, g)
        }
    }

    public func attentionBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer,
                                  dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double) {
        if perHead(s, scale: scale, needsHeadDim: true, [q, k, v, probs, dOut, dq, dk, dv]) {
            return perHeadBackward(q: q, k: k, v: v, probs: probs, dOut: dOut, dq: dq, dk: dk, dv: dv, s, scale: scale)
        }
        groupedAttentionBackward(q: q, k: k, v: v, probs: probs, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: s, scale: scale)
    }

    /// `attentionBackward` pass by pass of heads (`attentionHeadGroup`), each product split across the threads.
    func groupedAttentionBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer,
                                  dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double) {
        let (tq, tk) = (s.queries, s.keys)
        let needScores = dq != nil || dk != nil
        // dS for one pass of heads only: the dq and dk GEMMs consume it right away, while in cache.
        let ds = passScratch(s, dtype: probs.dtype, if: needScores)
        forEachHeadGroup(s.batch) { h, g in
            backwardPass(q: q, k: k, v: v, probs: probs.advanced(by: h * tq * tk), dOut: dOut, dq: dq, dk: dk, dv: dv,
                         ds: ds, s, scale: scale, h, g)
        }
    }

    /// The backward of heads h..<h+g from their probabilities `probs`, with dS in `ds` (empty when neither dq nor dk).
    private func backwardPass(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?,
                              dv: Buffer?, ds: Buffer, _ s: AttentionShape, scale: Double, _ h: Int, _ g: Int) {
        let (tq, tk, dh, dvd) = (s.queries, s.keys, s.headDim, s.valueDim)
        scoresBackward(probs: probs, v: v.advanced(by: h * tk * dvd), dOut: dOut.advanced(by: h * tq * dvd),
                       dLogits: dq != nil || dk != nil ? ds : nil, dv: dv?.advanced(by: h * tk * dvd), s, g)
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

    public func softmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, shape s: AttentionShape) {
        if perHead(s, scale: 1, needsHeadDim: false, [logits, v, probs, out]) {
            return perHeadSoftmaxMatmulForward(logits: logits, v: v, probs: probs, out: out, s)
        }
        groupedSoftmaxMatmulForward(logits: logits, v: v, probs: probs, out: out, shape: s)
    }

    /// `softmaxMatmulForward` pass by pass of heads (`attentionHeadGroup`), each product split across the threads.
    func groupedSoftmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, shape s: AttentionShape) {
        let (tq, tk, dv) = (s.queries, s.keys, s.valueDim)
        forEachHeadGroup(s.batch) { h, g in
            let p = probs.advanced(by: h * tq * tk)
            softmaxRows(logits.advanced(by: h * tq * tk), p, rows: g * tq, cols: tk)
            probsTimesValues(p, v.advanced(by: h * tk * dv), out.advanced(by: h * tq * dv), s, g)
        }
    }

    public func softmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?,
                                      shape s: AttentionShape) {
        if perHead(s, scale: 1, needsHeadDim: false, [probs, v, dOut, dLogits, dv]) {
            return perHeadSoftmaxMatmulBackward(probs: probs, v: v, dOut: dOut, dLogits: dLogits, dv: dv, s)
        }
        groupedSoftmaxMatmulBackward(probs: probs, v: v, dOut: dOut, dLogits: dLogits, dv: dv, shape: s)
    }

    /// `softmaxMatmulBackward` pass by pass of heads (`attentionHeadGroup`), each product split across the threads.
    func groupedSoftmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?,
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

    /// y[r] = softmax(x[r]) for `rows` contiguous rows of `cols` (CPUSoftmax's kernel); x and y may be the same.
    private func softmaxRows(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        if rows > 0 && cols > 0 { softmaxForward(x, y, rows: rows, cols: cols) }
    }

    /// g[r] ← p[r] ⊙ (g[r] − ⟨g[r], p[r]⟩) in place: dS from dP (CPUSoftmax's backward, which reads each 16-lane
    /// block of dy before writing the same block of dx, so dx = dy is safe).
    private func softmaxBackwardRows(_ p: Buffer, _ g: Buffer, rows: Int, cols: Int) {
        if rows > 0 && cols > 0 { softmaxBackward(p, g, g, rows: rows, cols: cols) }
    }
}


/// The log-sum-exp (recompute) path on the CPU: the oracle for the flash kernels, not a fast path (the CPU keeps
/// the saved-probabilities path, `attentionRecomputesProbabilities` is false). One query row at a time, in
/// float64 whatever the buffers' dtype: logits, max, Σ exp and the products are accumulated in Double and rounded
/// once into the output. The backward works head by head (parallel over heads, serial inside one: dk and dv sum
/// over query rows in row order), so results do not depend on the thread count.
extension CPUBackend {
    public func attentionRecomputesProbabilities(_ shape: AttentionShape) -> Bool { false }
    public func attentionRoundsOperands(_ shape: AttentionShape, precision: ComputePrecision) -> Bool { false }

    public func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape s: AttentionShape,
                                    scale: Double) {
        switch q.dtype {
        case .float32:
            lseForward(q.pointer(Float.self), k.pointer(Float.self), v.pointer(Float.self), out.pointer(Float.self),
                       lse?.pointer(Float.self), s, scale)
        case .float64:
            lseForward(q.pointer(Double.self), k.pointer(Double.self), v.pointer(Double.self), out.pointer(Double.self),
                       lse?.pointer(Double.self), s, scale)
        default: fatalError("attentionForwardLSE: unsupported dtype \(q.dtype)")
        }
    }

    public func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                                     dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double) {
        switch q.dtype {
        case .float32:
            lseBackward(q.pointer(Float.self), k.pointer(Float.self), v.pointer(Float.self), out.pointer(Float.self),
                        lse.pointer(Float.self), dOut.pointer(Float.self), dq?.pointer(Float.self), dk?.pointer(Float.self),
                        dv?.pointer(Float.self), s, scale)
        case .float64:
            lseBackward(q.pointer(Double.self), k.pointer(Double.self), v.pointer(Double.self), out.pointer(Double.self),
                        lse.pointer(Double.self), dOut.pointer(Double.self), dq?.pointer(Double.self),
                        dk?.pointer(Double.self), dv?.pointer(Double.self), s, scale)
        default: fatalError("attentionBackwardLSE: unsupported dtype \(q.dtype)")
        }
    }

    /// Row by row: l_j = scale·⟨q_i, k_j⟩, m = max l, Σ = Σ_j exp(l_j − m), out_i = Σ_j exp(l_j − m)·v_j / Σ,
    /// lse_i = m + log Σ (Tk = 0: out_i = 0, lse_i = −∞).
    private func lseForward<T: BinaryFloatingPoint>(_ q: UnsafeMutablePointer<T>, _ k: UnsafeMutablePointer<T>,
                                                    _ v: UnsafeMutablePointer<T>, _ out: UnsafeMutablePointer<T>,
                                                    _ lse: UnsafeMutablePointer<T>?, _ s: AttentionShape, _ scale: Double) {
        let (tq, tk, dh, dv) = (s.queries, s.keys, s.headDim, s.valueDim)
        let pq = SendablePointer(q), pk = SendablePointer(k), pv = SendablePointer(v), po = SendablePointer(out)
        let pl = lse.map(SendablePointer.init)
        Parallel.chunks(s.batch * tq, chunk: max(1, Parallel.defaultChunk / max(1, tk * (dh + dv)))) { range in
            var logits = [Double](repeating: 0, count: tk), acc = [Double](repeating: 0, count: dv)
            for row in range {
                let h = row / tq
                let qi = pq.base + row * dh, kh = pk.base + h * tk * dh, vh = pv.base + h * tk * dv
                var m = -Double.infinity
                for j in 0..<tk {
                    var dot = 0.0
                    for d in 0..<dh { dot += Double(qi[d]) * Double(kh[j * dh + d]) }
                    logits[j] = scale * dot
                    m = max(m, logits[j])
                }
                for e in 0..<dv { acc[e] = 0 }
                var sum = 0.0
                for j in 0..<tk {
                    let p = Double.exp(logits[j] - m)
                    sum += p
                    for e in 0..<dv { acc[e] += p * Double(vh[j * dv + e]) }
                }
                for e in 0..<dv { po.base[row * dv + e] = T(sum > 0 ? acc[e] / sum : 0) }
                pl?.base[row] = T(sum > 0 ? m + Double.log(sum) : -Double.infinity)
            }
        }
    }

    /// Head by head, query row by query row: p_j = exp(scale·⟨q_i, k_j⟩ − lse_i), D_i = ⟨dOut_i, out_i⟩,
    /// dS_ij = p_j·(⟨dOut_i, v_j⟩ − D_i); dq_i = scale·Σ_j dS_ij·k_j, dk_j += scale·dS_ij·q_i, dv_j += p_j·dOut_i.
    private func lseBackward<T: BinaryFloatingPoint>(_ q: UnsafeMutablePointer<T>, _ k: UnsafeMutablePointer<T>,
                                                     _ v: UnsafeMutablePointer<T>, _ out: UnsafeMutablePointer<T>,
                                                     _ lse: UnsafeMutablePointer<T>, _ dOut: UnsafeMutablePointer<T>,
                                                     _ dq: UnsafeMutablePointer<T>?, _ dk: UnsafeMutablePointer<T>?,
                                                     _ dv: UnsafeMutablePointer<T>?, _ s: AttentionShape, _ scale: Double) {
        let (tq, tk, dh, dvd) = (s.queries, s.keys, s.headDim, s.valueDim)
        let pq = SendablePointer(q), pk = SendablePointer(k), pv = SendablePointer(v), po = SendablePointer(out)
        let pl = SendablePointer(lse), pg = SendablePointer(dOut)
        let pdq = dq.map(SendablePointer.init), pdk = dk.map(SendablePointer.init), pdv = dv.map(SendablePointer.init)
        Parallel.chunks(s.batch, chunk: 1) { range in
            for h in range {
                let qh = pq.base + h * tq * dh, kh = pk.base + h * tk * dh, vh = pv.base + h * tk * dvd
                let oh = po.base + h * tq * dvd, gh = pg.base + h * tq * dvd, lh = pl.base + h * tq
                var gk = [Double](repeating: 0, count: tk * dh), gv = [Double](repeating: 0, count: tk * dvd)
                var gq = [Double](repeating: 0, count: dh)
                for i in 0..<tq {
                    var delta = 0.0
                    for e in 0..<dvd { delta += Double(gh[i * dvd + e]) * Double(oh[i * dvd + e]) }
                    for d in 0..<dh { gq[d] = 0 }
                    for j in 0..<tk {
                        var dot = 0.0, dp = 0.0
                        for d in 0..<dh { dot += Double(qh[i * dh + d]) * Double(kh[j * dh + d]) }
                        for e in 0..<dvd { dp += Double(gh[i * dvd + e]) * Double(vh[j * dvd + e]) }
                        let p = Double.exp(scale * dot - Double(lh[i]))
                        let ds = p * (dp - delta)
                        for d in 0..<dh {
                            gq[d] += ds * Double(kh[j * dh + d])
                            gk[j * dh + d] += ds * Double(qh[i * dh + d])
                        }
                        for e in 0..<dvd { gv[j * dvd + e] += p * Double(gh[i * dvd + e]) }
                    }
                    if let pdq { for d in 0..<dh { pdq.base[h * tq * dh + i * dh + d] = T(scale * gq[d]) } }
                }
                if let pdk { for x in 0..<tk * dh { pdk.base[h * tk * dh + x] = T(scale * gk[x]) } }
                if let pdv { for x in 0..<tk * dvd { pdv.base[h * tk * dvd + x] = T(gv[x]) } }
            }
        }
    }
}
