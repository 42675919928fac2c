import CKernels

/// Whole heads per pool task: float32 on AVX-512F CPUs (haste's own GEMM), every product and softmax pass of a head
/// on one thread, the heads spread over the pool. One fork-join per call instead of three per pass of heads, and a
/// head's [Tq, Tk] scores stay in its thread's L2 from the product that makes them to the ones that use them.
/// The same products (AVX512Sgemm.runSerial: the batched path runs items of this size so, and a split product gives
/// the same bits anyway, K never being split) and the same row kernels (softmaxRow, softmaxBackwardRow) as the
/// grouped path (CPUAttention.swift, `grouped…`), so the results are bitwise the same (tests compare the two).
extension CPUBackend {
    /// Heads whose [Tq, Tk] scores have at most this many elements run whole on one thread (two such per-thread
    /// workspaces: 8 MiB at most); longer sequences keep the grouped path, whose products split across threads.
    static let perHeadScores = 1 << 20

    /// Whether a call of shape `s` takes the per-head path: float32 buffers on haste's AVX-512 GEMM, no empty
    /// dimension (those are the grouped path's BLAS edge cases), a non-zero scale, scores within `perHeadScores`, and
    /// at least as many heads as threads (fewer heads use more threads split product by product).
    func perHead(_ s: AttentionShape, scale: Double, needsHeadDim: Bool, _ buffers: [Buffer?]) -> Bool {
        s.batch >= max(1, Parallel.threads) && perHeadRuns(s, scale: scale, needsHeadDim: needsHeadDim, buffers)
    }

    /// `perHead` but for the thread count (a choice of speed, not of what the per-head kernels can run).
    private func perHeadRuns(_ s: AttentionShape, scale: Double, needsHeadDim: Bool, _ buffers: [Buffer?]) -> Bool {
        CPUKernels.level == 2 && buffers.allSatisfy { $0 == nil || $0!.dtype == .float32 }
            && s.queries > 0 && s.keys > 0 && s.valueDim > 0
            && (!needsHeadDim || s.headDim > 0) && scale != 0 && s.queries * s.keys <= CPUBackend.perHeadScores
    }

    /// This thread's workspace `slot` of n floats (haste_thread_scratch_f32).
    private func headScratch(_ slot: Int32, _ n: Int) -> UnsafeMutablePointer<Float> {
        guard let p = haste_thread_scratch_f32(slot, n) else {
            fatalError("attention: could not allocate a \(n * 4)-byte per-thread workspace (out of memory)")
        }
        return p
    }

    /// Row strides (elements) of one head's matrices: q and dq, k and dk, v and dv, out and dOut. `contiguous`: heads
    /// stored one after another ([Tq, Dh], [Tk, Dh], [Tk, Dv], [Tq, Dv]); `packed`: rows of a fused qkv projection
    /// [N, T, 3·D] and of a merged [N, T, D] output. A leading dimension changes no bit of a product.
    struct HeadRows {
        let q: Int, k: Int, v: Int, out: Int
        static func contiguous(_ s: AttentionShape) -> HeadRows { HeadRows(q: s.headDim, k: s.headDim, v: s.valueDim, out: s.valueDim) }
        static func packed(width d: Int) -> HeadRows { HeadRows(q: 3 * d, k: 3 * d, v: 3 * d, out: d) }
    }

    /// P = softmax(scale·q·kᵀ) of one head into p ([Tq, Tk]): `probabilities` for one head. With `logits`, scale·q·kᵀ
    /// goes there and P is computed from it (the same bits as in place).
    private func headProbabilities(_ q: UnsafeMutablePointer<Float>, _ k: UnsafeMutablePointer<Float>,
                                   into p: UnsafeMutablePointer<Float>, logits: UnsafeMutablePointer<Float>? = nil,
                                   _ s: AttentionShape, scale: Double, _ rows: HeadRows) {
        let (tq, tk, dh) = (s.queries, s.keys, s.headDim), l = logits ?? p
        AVX512Sgemm(transA: false, transB: true, m: tq, n: tk, k: dh, alpha: Float(scale), a: q, lda: rows.q, b: k,
                    ldb: rows.k, beta: 0, c: l, ldc: tk).runSerial()
        for r in 0..<tq { softmaxRow(l + r * tk, p + r * tk, tk) }
    }

    /// out = P·v for one head: `probsTimesValues` for one head.
    private func headProbsTimesValues(_ p: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                                      _ out: UnsafeMutablePointer<Float>, _ s: AttentionShape, _ rows: HeadRows) {
        AVX512Sgemm(transA: false, transB: false, m: s.queries, n: s.valueDim, k: s.keys, alpha: 1, a: p, lda: s.keys,
                    b: v, ldb: rows.v, beta: 0, c: out, ldc: rows.out).runSerial()
    }

    /// dv = Pᵀ·dOut and dLogits = P ⊙ (dP − rowsum(dP ⊙ P)), dP = dOut·vᵀ, for one head: `scoresBackward` for one head.
    private func headScoresBackward(_ p: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                                    _ dOut: UnsafeMutablePointer<Float>, _ dLogits: UnsafeMutablePointer<Float>?,
                                    _ dv: UnsafeMutablePointer<Float>?, _ s: AttentionShape, _ rows: HeadRows) {
        let (tq, tk, dvd) = (s.queries, s.keys, s.valueDim)
        if let dv {
            AVX512Sgemm(transA: true, transB: false, m: tk, n: dvd, k: tq, alpha: 1, a: p, lda: tk, b: dOut, ldb: rows.out,
                        beta: 0, c: dv, ldc: rows.v).runSerial()
        }
        guard let dLogits else { return }
        AVX512Sgemm(transA: false, transB: true, m: tq, n: tk, k: dvd, alpha: 1, a: dOut, lda: rows.out, b: v, ldb: rows.v,
                    beta: 0, c: dLogits, ldc: tk).runSerial()
        for r in 0..<tq { softmaxBackwardRow(p + r * tk, dLogits + r * tk, dLogits + r * tk, tk) }
    }

    /// The backward of one head from its probabilities p (computed here when `recompute`): dv, then dS into this
    /// thread's workspace, dq = scale·dS·k and dk = scale·dSᵀ·q. `perHeadBackward` for one head.
    private func headBackward(_ q: UnsafeMutablePointer<Float>, _ k: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                              _ p: UnsafeMutablePointer<Float>, recompute: Bool, _ dOut: UnsafeMutablePointer<Float>,
                              _ dq: UnsafeMutablePointer<Float>?, _ dk: UnsafeMutablePointer<Float>?,
                              _ dv: UnsafeMutablePointer<Float>?, _ s: AttentionShape, scale: Double, _ rows: HeadRows) {
        let (tq, tk, dh) = (s.queries, s.keys, s.headDim)
        if recompute { headProbabilities(q, k, into: p, s, scale: scale, rows) }
        let ds = dq != nil || dk != nil ? headScratch(1, tq * tk) : nil
        headScoresBackward(p, v, dOut, ds, dv, s, rows)
        guard let ds else { return }
        if let dq {   // [Tq, Tk]·[Tk, Dh]
            AVX512Sgemm(transA: false, transB: false, m: tq, n: dh, k: tk, alpha: Float(scale), a: ds, lda: tk, b: k,
                        ldb: rows.k, beta: 0, c: dq, ldc: rows.q).runSerial()
        }
        if let dk {   // [Tq, Tk]ᵀ·[Tq, Dh]
            AVX512Sgemm(transA: true, transB: false, m: tk, n: dh, k: tq, alpha: Float(scale), a: ds, lda: tk, b: q,
                        ldb: rows.q, beta: 0, c: dk, ldc: rows.k).runSerial()
        }
    }

    func perHeadForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, _ s: AttentionShape,
                                scale: Double) {
        let (tq, tk, dh, dv) = (s.queries, s.keys, s.headDim, s.valueDim)
        let pq = SendablePointer(q.pointer(Float.self)), pk = SendablePointer(k.pointer(Float.self))
        let pv = SendablePointer(v.pointer(Float.self)), po = SendablePointer(out.pointer(Float.self))
        let pp = probs.map { SendablePointer($0.pointer(Float.self)) }
        let rows = HeadRows.contiguous(s)
        Parallel.forEach(s.batch) { h in
            let p = pp.map { $0.base + h * tq * tk } ?? headScratch(0, tq * tk)
            headProbabilities(pq.base + h * tq * dh, pk.base + h * tk * dh, into: p, s, scale: scale, rows)
            headProbsTimesValues(p, pv.base + h * tk * dv, po.base + h * tq * dv, s, rows)
        }
    }

    /// The backward of every head from its saved probabilities, or (probs nil) with P recomputed as the forward made it.
    func perHeadBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, dOut: Buffer, dq: Buffer?, dk: Buffer?,
                                 dv: Buffer?, _ s: AttentionShape, scale: Double) {
        let (tq, tk, dh, dvd) = (s.queries, s.keys, s.headDim, s.valueDim)
        let pq = SendablePointer(q.pointer(Float.self)), pk = SendablePointer(k.pointer(Float.self))
        let pv = SendablePointer(v.pointer(Float.self)), pg = SendablePointer(dOut.pointer(Float.self))
        let pp = probs.map { SendablePointer($0.pointer(Float.self)) }
        let pdq = dq.map { SendablePointer($0.pointer(Float.self)) }, pdk = dk.map { SendablePointer($0.pointer(Float.self)) }
        let pdv = dv.map { SendablePointer($0.pointer(Float.self)) }
        let rows = HeadRows.contiguous(s)
        Parallel.forEach(s.batch) { h in
            headBackward(pq.base + h * tq * dh, pk.base + h * tk * dh, pv.base + h * tk * dvd,
                         pp.map { $0.base + h * tq * tk } ?? headScratch(0, tq * tk), recompute: pp == nil,
                         pg.base + h * tq * dvd, pdq.map { $0.base + h * tq * dh }, pdk.map { $0.base + h * tk * dh },
                         pdv.map { $0.base + h * tk * dvd }, s, scale: scale, rows)
        }
    }

    /// `Tensor.packedQKVAttention` on the per-head path: head (b, h) reads q, k, v at columns h·Dh, D + h·Dh and
    /// 2D + h·Dh of qkv's rows (stride 3D) and writes its output at columns h·Dh of out's rows (stride D); with
    /// logits, scale·q·kᵀ into them and the probabilities into this thread's workspace (as `attentionLogits` and
    /// `perHeadSoftmaxMatmulForward`), else the probabilities in the workspace (as `perHeadForward`). The products
    /// are the same AVX512Sgemm calls with other leading dimensions, which change no bit; the same row kernels.
    /// Every call alike (with or without logits and gradient).
    public func packedQKVAttentionRuns(batch: Int, tokens t: Int, heads: Int, headDim dh: Int, scale: Double, logits: Bool,
                                       gradient: Bool) -> Bool {
        perHead(packedShape(batch, t, heads, dh), scale: scale, needsHeadDim: true, [])
    }

    private func packedShape(_ batch: Int, _ t: Int, _ heads: Int, _ dh: Int) -> AttentionShape {
        AttentionShape(batch: batch * heads, queries: t, keys: t, headDim: dh, valueDim: dh)
    }

    public func packedQKVAttention(qkv: Buffer, out: Buffer, logits: Buffer?, probs: Buffer?, batch: Int, tokens t: Int,
                                   heads: Int, headDim dh: Int, scale: Double) {
        let s = packedShape(batch, t, heads, dh)
        precondition(perHeadRuns(s, scale: scale, needsHeadDim: true, [qkv, out, logits, probs]), "packedQKVAttention: not a per-head shape")
        let d = heads * dh, rows = HeadRows.packed(width: d)
        let px = SendablePointer(qkv.pointer(Float.self)), po = SendablePointer(out.pointer(Float.self))
        let pl = logits.map { SendablePointer($0.pointer(Float.self)) }
        let pp = probs.map { SendablePointer($0.pointer(Float.self)) }
        Parallel.forEach(s.batch) { i in
            let (b, h) = (i / heads, i % heads)
            let q = px.base + b * t * 3 * d + h * dh, p = pp.map { $0.base + i * t * t } ?? headScratch(0, t * t)
            headProbabilities(q, q + d, into: p, logits: pl.map { $0.base + i * t * t }, s, scale: scale, rows)
            headProbsTimesValues(p, q + 2 * d, po.base + b * t * d + h * dh, s, rows)
        }
    }

    /// `Tensor.packedQKVAttention`'s backward on the per-head path: `perHeadBackward` per head (from the probabilities
    /// the forward kept, or recomputed where probs is nil) with q, k, v read and dq, dk, dv written at their columns
    /// of the [N, T, 3D] rows and dOut read at its columns of the [N, T, D] rows: the same AVX512Sgemm calls and row
    /// kernels, other leading dimensions.
    public func packedQKVAttentionBackward(qkv: Buffer, probs: Buffer?, dOut: Buffer, dqkv: Buffer, batch: Int,
                                           tokens t: Int, heads: Int, headDim dh: Int, scale: Double) {
        let s = packedShape(batch, t, heads, dh)
        precondition(perHeadRuns(s, scale: scale, needsHeadDim: true, [qkv, probs, dOut, dqkv]),
                     "packedQKVAttentionBackward: not a per-head shape")
        let d = heads * dh, rows = HeadRows.packed(width: d)
        let px = SendablePointer(qkv.pointer(Float.self)), pg = SendablePointer(dOut.pointer(Float.self))
        let pd = SendablePointer(dqkv.pointer(Float.self)), pp = probs.map { SendablePointer($0.pointer(Float.self)) }
        Parallel.forEach(s.batch) { i in
            let (b, h) = (i / heads, i % heads)
            let q = px.base + b * t * 3 * d + h * dh, dq = pd.base + b * t * 3 * d + h * dh
            let p = pp.map { $0.base + i * t * t } ?? headScratch(0, t * t)
            headBackward(q, q + d, q + 2 * d, p, recompute: pp == nil, pg.base + b * t * d + h * dh,
                         dq, dq + d, dq + 2 * d, s, scale: scale, rows)
        }
    }

    func perHeadSoftmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, _ s: AttentionShape) {
        let (tq, tk, dv) = (s.queries, s.keys, s.valueDim)
        let pl = SendablePointer(logits.pointer(Float.self)), pp = SendablePointer(probs.pointer(Float.self))
        let pv = SendablePointer(v.pointer(Float.self)), po = SendablePointer(out.pointer(Float.self))
        Parallel.forEach(s.batch) { h in
            let l = pl.base + h * tq * tk, p = pp.base + h * tq * tk
            for r in 0..<tq { softmaxRow(l + r * tk, p + r * tk, tk) }
            headProbsTimesValues(p, pv.base + h * tk * dv, po.base + h * tq * dv, s, .contiguous(s))
        }
    }

    func perHeadSoftmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?,
                                              _ s: AttentionShape) {
        let (tq, tk, dvd) = (s.queries, s.keys, s.valueDim)
        let pp = SendablePointer(probs.pointer(Float.self)), pv = SendablePointer(v.pointer(Float.self))
        let pg = SendablePointer(dOut.pointer(Float.self))
        let pdl = dLogits.map { SendablePointer($0.pointer(Float.self)) }, pdv = dv.map { SendablePointer($0.pointer(Float.self)) }
        Parallel.forEach(s.batch) { h in
            headScoresBackward(pp.base + h * tq * tk, pv.base + h * tk * dvd, pg.base + h * tq * dvd,
                               pdl.map { $0.base + h * tq * tk }, pdv.map { $0.base + h * tk * dvd }, s, .contiguous(s))
        }
    }
}
