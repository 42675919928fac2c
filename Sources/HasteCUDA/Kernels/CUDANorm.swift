import HasteTensor

extension CUDABackend {
    /// LayerNorm: one block per row for the forward and dx (rows of up to 1 280 columns by warp with the same bits:
    /// CUDANormWarp.swift). Statistics are two-pass in float (the mean, then the
    /// mean of squared deviations from it: stable whatever the offset), where the CPU makes one shifted pass;
    /// both are within float32 rounding of the exact moments, summed in a different order. dweight/dbias are
    /// per-chunk partial column sums (fixed chunks of `normChunkRows` rows) then a column reduction in chunk
    /// order: no atomics, the same bits every run (the CPU's chunks differ, so its sums round differently).
    static let normSource = KernelSource(family: "norm", kernels: [
        "layer_norm_forward", "layer_norm_backward_dx", "layer_norm_backward_partials", "layer_norm_backward_reduce",
    ] + normWarpKernels + ["layer_norm_stats"], code: normWarpCode + "\n" + groupNormStatsCode + "\n" + #"""
    /// Rows by block (grid-stride), blockDim.x a multiple of 32. w and b may be null.
    extern "C" __global__ void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, i64 rows, i64 cols, float eps) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = x + r * cols;
            float* yr = y + r * cols;
            float m, rs;
            haste_row_mean_rstd(xr, cols, eps, scratch, &m, &rs);
            if (threadIdx.x == 0) { mean[r] = m; rstd[r] = rs; }
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) {
                float v = (xr[i] - m) * rs;
                if (w) v = v * w[i];
                if (b) v = v + b[i];
                yr[i] = v;
            }
        }
    }

    /// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w (w may be null), one block per row.
    extern "C" __global__ void layer_norm_backward_dx(const float* x, const float* w, const float* mean, const float* rstd, const float* dy, float* dx, i64 rows, i64 cols) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = x + r * cols;
            const float* gr = dy + r * cols;
            float* dr = dx + r * cols;
            float m = mean[r], rs = rstd[r];
            float sg = 0.0f, sgx = 0.0f;
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) {
                float g = w ? gr[i] * w[i] : gr[i];
                sg += g;
                sgx += g * ((xr[i] - m) * rs);
            }
            float a = haste_block_sum(sg, scratch) / (float)cols;
            float c = haste_block_sum(sgx, scratch) / (float)cols;
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) {
                float g = w ? gr[i] * w[i] : gr[i];
                float xh = (xr[i] - m) * rs;
                dr[i] = rs * (g - a - xh * c);
            }
        }
    }

    /// part[chunk, 0, j] = Σ dy·x̂ and part[chunk, 1, j] = Σ dy over the chunk's rows, in row order; one thread
    /// per (chunk, column).
    extern "C" __global__ void layer_norm_backward_partials(const float* x, const float* mean, const float* rstd, const float* dy, float* part, i64 rows, i64 cols, i64 chunkRows) {
        i64 chunks = (rows + chunkRows - 1) / chunkRows;
        HASTE_GRID_STRIDE_LOOP(p, chunks * cols) {
            i64 chunk = p / cols, j = p % cols;
            i64 r0 = chunk * chunkRows, r1 = r0 + chunkRows < rows ? r0 + chunkRows : rows;
            float sw = 0.0f, sb = 0.0f;
            for (i64 r = r0; r < r1; r++) {
                float d = dy[r * cols + j];
                sw += d * ((x[r * cols + j] - mean[r]) * rstd[r]);
                sb += d;
            }
            part[(chunk * 2) * cols + j] = sw;
            part[(chunk * 2 + 1) * cols + j] = sb;
        }
    }

    /// dw[j] = Σ_chunk part[chunk, 0, j], db[j] = Σ_chunk part[chunk, 1, j], in chunk order (either may be null).
    extern "C" __global__ void layer_norm_backward_reduce(const float* part, float* dw, float* db, i64 chunks, i64 cols) {
        HASTE_GRID_STRIDE_LOOP(j, cols) {
            float sw = 0.0f, sb = 0.0f;
            for (i64 c = 0; c < chunks; c++) {
                sw += part[(c * 2) * cols + j];
                sb += part[(c * 2 + 1) * cols + j];
            }
            if (dw) dw[j] = sw;
            if (db) db[j] = sb;
        }
    }
    """#)

    /// Rows per partial-sum chunk of the dweight/dbias reduction (fixed: the result depends on it).
    static let normChunkRows = 64

    /// Blocks for a one-block-per-row kernel (rows beyond the grid are taken by grid-stride).
    static func rowBlocks(_ rows: Int) -> Int { Swift.max(1, Swift.min(rows, 65_535)) }

    public func layerNormForward(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                 rows: Int, cols: Int, eps: Double) {
        requireFloat32(x, "layerNorm")
        if let weight { requireFloat32(weight, "layerNorm") }
        if let bias { requireFloat32(bias, "layerNorm") }
        if rows == 0 || cols == 0 { return }
        let warp = CUDABackend.rowWarpSuffix(cols: cols), shape = CUDABackend.rowLaunch(rows, warp: !warp.isEmpty)
        // y in bf16 (`layerNormWritesBF16`: the by-warp kernels only), stored rounded to nearest even.
        let y16 = y.dtype == .bfloat16 ? "_y16" : ""
        if !y16.isEmpty && warp.isEmpty { CUDABackend.fail("layerNorm on \(device): a bfloat16 output for \(cols) columns (by-warp rows only: layerNormWritesBF16)") }
        if y16.isEmpty { requireFloat32(y, "layerNorm") }
        launch(CUDABackend.normSource, "layer_norm_forward" + y16 + warp, grid: shape.grid, block: shape.block, [
            .pointer(address(x)), .pointer(weight.map(address) ?? 0), .pointer(bias.map(address) ?? 0),
            .pointer(address(y)), .pointer(address(mean)), .pointer(address(rstd)),
            .int64(Int64(rows)), .int64(Int64(cols)), .float(Float(eps)),
        ])
    }

    public func layerNormWritesBF16(cols: Int) -> Bool { !CUDABackend.rowWarpSuffix(cols: cols).isEmpty }

    public func layerNormBackward(_ x: Buffer, weight: Buffer?, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                  dweight: Buffer?, dbias: Buffer?, rows: Int, cols: Int) {
        requireFloat32(x, "layerNorm backward"); requireFloat32(dy, "layerNorm backward")
        if let weight { requireFloat32(weight, "layerNorm backward") }
        if cols == 0 { return }
        if rows > 0 {
            let warp = CUDABackend.rowWarpSuffix(cols: cols), shape = CUDABackend.rowLaunch(rows, warp: !warp.isEmpty)
            launch(CUDABackend.normSource, "layer_norm_backward_dx" + warp, grid: shape.grid, block: shape.block, [
                .pointer(address(x)), .pointer(weight.map(address) ?? 0), .pointer(address(mean)), .pointer(address(rstd)),
                .pointer(address(dy)), .pointer(address(dx)), .int64(Int64(rows)), .int64(Int64(cols)),
            ])
        }
        if dweight == nil && dbias == nil { return }
        let chunkRows = CUDABackend.normChunkRows, chunks = (rows + chunkRows - 1) / chunkRows
        let partBytes = Swift.max(chunks, 1) * 2 * cols * 4
        let part = allocator.allocate(byteCount: partBytes)
        if chunks > 0 {
            launch(CUDABackend.normSource, "layer_norm_backward_partials", grid: Dim3(CUDABackend.blocks(chunks * cols)),
                   block: Dim3(256), [
                .pointer(address(x)), .pointer(address(mean)), .pointer(address(rstd)), .pointer(address(dy)),
                .pointer(part), .int64(Int64(rows)), .int64(Int64(cols)), .int64(Int64(chunkRows)),
            ])
        }
        // rows = 0: no chunks, and the reduction writes zeros (empty sums), like the CPU.
        launch(CUDABackend.normSource, "layer_norm_backward_reduce", grid: Dim3(CUDABackend.blocks(cols)), block: Dim3(256), [
            .pointer(part), .pointer(dweight.map(address) ?? 0), .pointer(dbias.map(address) ?? 0),
            .int64(Int64(chunks)), .int64(Int64(cols)),
        ])
        allocator.release(part, byteCount: partBytes)   // one stream, in order: the kernels above run first
    }
}
