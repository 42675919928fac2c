import HasteTensor

/// Attention on CUDA, two paths.
///
/// 1. Saved probabilities (`attentionForward` / `attentionBackward`, and `softmaxMatmul*` for the aligned blocks,
///    whose logits are returned): logits and products by the driver's strided-batched GEMM over all heads at once,
///    row softmax and its backward by the kernels below, [heads, Tq, Tk] workspaces from the caching allocator
///    (released once the kernels that use them are queued: one stream, in order). Used for head dims > 128 (the
///    VAE's single 512-wide head) and wherever logits are needed.
///
/// 2. Flash attention (`attentionForwardLSE` / `attentionBackwardLSE`, for Dh, Dv ≤ 128): CUDAFlashAttention.swift.
extension CUDABackend {
    static let attentionSource = KernelSource(family: "attention", kernels: [
        "attention_softmax_rows", "attention_softmax_backward_rows",
    ], code: #"""
    /// y[r] = softmax(scale·x[r]) over rows of `cols`, one block per row (grid-stride over rows); x may be y
    /// (each element is read and written by one thread only). Like the CPU: y = exp(scale·x − m)·(1/Σ exp).
    extern "C" __global__ void attention_softmax_rows(const float* x, float* y, i64 rows, i64 cols, float scale) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = x + r * cols;
            float* yr = y + r * cols;
            float m = -INFINITY;
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, scale * xr[i]);
            m = haste_block_max(m, scratch);
            float s = 0.0f;
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) {
                float e = expf(scale * xr[i] - m);
                yr[i] = e;
                s += e;
            }
            float inv = 1.0f / haste_block_sum(s, scratch);
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = yr[i] * inv;
        }
    }

    /// g[r] ← p[r] ⊙ (g[r] − ⟨g[r], p[r]⟩) in place: dS from dP, one block per row.
    extern "C" __global__ void attention_softmax_backward_rows(const float* p, float* g, i64 rows, i64 cols) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* pr = p + r * cols;
            float* gr = g + r * cols;
            float s = 0.0f;
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) s += gr[i] * pr[i];
            s = haste_block_sum(s, scratch);
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) gr[i] = pr[i] * (gr[i] - s);
        }
    }
    """#)

    public func attentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape s: AttentionShape,
                                 scale: Double) {
        for b in [q, k, v, out] { requireFloat32(b, "attention") }
        let (tq, tk, dh) = (s.queries, s.keys, s.headDim)
        let bytes = s.batch * tq * tk * 4
        let workspace = probs == nil ? allocator.allocate(byteCount: bytes) : 0
        let p = probs.map(address) ?? workspace
        // S = q·kᵀ (the scale is folded into the softmax), then P = softmax(scale·S) in place.
        rowMajorGemm(transA: false, transB: true, m: tq, n: tk, k: dh, alpha: 1, a: address(q), lda: Swift.max(dh, 1),
                     strideA: tq * dh, b: address(k), ldb: Swift.max(dh, 1), strideB: tk * dh, beta: 0, c: p,
                     ldc: Swift.max(tk, 1), strideC: tq * tk, batch: s.batch)
        softmaxRows(p, p, rows: s.batch * tq, cols: tk, scale: Float(scale))
        probsTimesValues(p, address(v), address(out), s)
        if probs == nil { allocator.release(workspace, byteCount: bytes) }
    }

    public func attentionBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?,
                                  dv: Buffer?, shape s: AttentionShape, scale: Double) {
        for b in [q, k, v, probs, dOut] { requireFloat32(b, "attention backward") }
        let (tq, tk, dh) = (s.queries, s.keys, s.headDim)
        let needScores = dq != nil || dk != nil
        let bytes = s.batch * tq * tk * 4
        let ds = needScores ? allocator.allocate(byteCount: bytes) : 0
        scoresBackward(probs: address(probs), v: address(v), dOut: address(dOut), dLogits: needScores ? ds : nil,
                       dv: dv.map(address), s)
        if let dq {   // scale·dS·k: [Tq, Tk]·[Tk, Dh]
            rowMajorGemm(transA: false, transB: false, m: tq, n: dh, k: tk, alpha: Float(scale), a: ds, lda: Swift.max(tk, 1),
                         strideA: tq * tk, b: address(k), ldb: Swift.max(dh, 1), strideB: tk * dh, beta: 0,
                         c: address(dq), ldc: Swift.max(dh, 1), strideC: tq * dh, batch: s.batch)
        }
        if let dk {   // scale·dSᵀ·q: [Tq, Tk]ᵀ·[Tq, Dh]
            rowMajorGemm(transA: true, transB: false, m: tk, n: dh, k: tq, alpha: Float(scale), a: ds, lda: Swift.max(tk, 1),
                         strideA: tq * tk, b: address(q), ldb: Swift.max(dh, 1), strideB: tq * dh, beta: 0,
                         c: address(dk), ldc: Swift.max(dh, 1), strideC: tk * dh, batch: s.batch)
        }
        if needScores { allocator.release(ds, byteCount: bytes) }
    }

    public func softmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, shape s: AttentionShape) {
        for b in [logits, v, probs, out] { requireFloat32(b, "softmaxMatmul") }
        softmaxRows(address(logits), address(probs), rows: s.batch * s.queries, cols: s.keys, scale: 1)
        probsTimesValues(address(probs), address(v), address(out), s)
    }

    public func softmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?,
                                      shape s: AttentionShape) {
        for b in [probs, v, dOut] { requireFloat32(b, "softmaxMatmul backward") }
        scoresBackward(probs: address(probs), v: address(v), dOut: address(dOut), dLogits: dLogits.map(address),
                       dv: dv.map(address), s)
    }

    /// dv = Pᵀ·dOut; dLogits = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = dOut·vᵀ computed into dLogits, then in place.
    private func scoresBackward(probs: DevicePointer, v: DevicePointer, dOut: DevicePointer, dLogits: DevicePointer?,
                                dv: DevicePointer?, _ s: AttentionShape) {
        let (tq, tk, dvd) = (s.queries, s.keys, s.valueDim)
        if let dv {   // [Tq, Tk]ᵀ·[Tq, Dv]
            rowMajorGemm(transA: true, transB: false, m: tk, n: dvd, k: tq, alpha: 1, a: probs, lda: Swift.max(tk, 1),
                         strideA: tq * tk, b: dOut, ldb: Swift.max(dvd, 1), strideB: tq * dvd, beta: 0, c: dv,
                         ldc: Swift.max(dvd, 1), strideC: tk * dvd, batch: s.batch)
        }
        guard let dLogits else { return }
        rowMajorGemm(transA: false, transB: true, m: tq, n: tk, k: dvd, alpha: 1, a: dOut, lda: Swift.max(dvd, 1),
                     strideA: tq * dvd, b: v, ldb: Swift.max(dvd, 1), strideB: tk * dvd, beta: 0, c: dLogits,
                     ldc: Swift.max(tk, 1), strideC: tq * tk, batch: s.batch)
        let rows = s.batch * tq
        if rows > 0 && tk > 0 {
            launch(CUDABackend.attentionSource, "attention_softmax_backward_rows", grid: Dim3(CUDABackend.rowBlocks(rows)),
                   block: Dim3(256), [.pointer(probs), .pointer(dLogits), .int64(Int64(rows)), .int64(Int64(tk))])
        }
    }

    /// y = softmax(scale·x) over `rows` rows of `cols`.
    private func softmaxRows(_ x: DevicePointer, _ y: DevicePointer, rows: Int, cols: Int, scale: Float) {
        if rows == 0 || cols == 0 { return }
        launch(CUDABackend.attentionSource, "attention_softmax_rows", grid: Dim3(CUDABackend.rowBlocks(rows)), block: Dim3(256),
               [.pointer(x), .pointer(y), .int64(Int64(rows)), .int64(Int64(cols)), .float(scale)])
    }

    /// out = P·v for every head: [Tq, Tk]·[Tk, Dv].
    private func probsTimesValues(_ p: DevicePointer, _ v: DevicePointer, _ out: DevicePointer, _ s: AttentionShape) {
        rowMajorGemm(transA: false, transB: false, m: s.queries, n: s.valueDim, k: s.keys, alpha: 1, a: p,
                     lda: Swift.max(s.keys, 1), strideA: s.queries * s.keys, b: v, ldb: Swift.max(s.valueDim, 1),
                     strideB: s.keys * s.valueDim, beta: 0, c: out, ldc: Swift.max(s.valueDim, 1),
                     strideC: s.queries * s.valueDim, batch: s.batch)
    }
}
