import HasteTensor

extension CUDABackend {
    /// The reduce family over x viewed as [outer, reduce, inner], float32 (sums also of bf16 x into float32 y).
    ///
    /// Sums: rows (inner = 1) take a 256-thread block each, every thread summing a strided subset in index order
    /// and the block combining them in a fixed tree; columns (inner > 1) take 32-column tiles with 8 lanes along
    /// `reduce`, each lane summing every 8th row in order and the 8 lane sums added in lane order. Long reductions
    /// over few outputs (a bias gradient, a loss mean) first sum fixed chunks of the reduced axis on many blocks,
    /// then the chunk sums in order. The orders are fixed by the shape (bitwise reproducible run to run) but are
    /// not the CPU's (16-lane SIMD rows, sequential columns): the sums agree within float32 summation error
    /// (at most 2(n − 1)·2⁻²⁴·Σ|x| apart).
    /// Max and its backward are exact: a max does not depend on the order (NaN propagates like torch.amax), and
    /// the backward counts ties per output as the CPU does.
    static let reduceSource = KernelSource(family: "reduce", kernels: ["reduce_sum_rows", "reduce_sum_cols", "reduce_sum_rows_bf16",
                                                                      "reduce_sum_cols_bf16", "reduce_max_rows", "reduce_max_cols", "reduce_max_backward"], code: #"""
    __device__ __forceinline__ float haste_sum_load(const float* p, i64 i) { return p[i]; }
    __device__ __forceinline__ float haste_sum_load(const u16* p, i64 i) { return haste_bf16_to_float(p[i]); }

    /// Work item (o, c): the sum of x[o, r, ·] over r in chunk c = [c·chunkLen, min(reduce, (c + 1)·chunkLen)),
    /// written to y[o·chunks + c, ·]. chunks = 1 is the whole reduction; chunks > 1 is the first of two passes
    /// (the second sums the partials [outer, chunks, inner] with chunks = 1), so long reductions over few
    /// outputs spread over many blocks. Rows (inner = 1): a block per work item. x is float32, or bf16 (the
    /// `_bf16` entry points: each element widened exactly, then the same float32 sums in the same order).
    template <typename T>
    __device__ __forceinline__ void haste_sum_rows(const T* x, float* y, i64 outer, i64 reduce, i64 chunks, i64 chunkLen, float* scratch) {
        for (i64 w = blockIdx.x; w < outer * chunks; w += gridDim.x) {
            i64 o = w / chunks, c = w - o * chunks, r0 = c * chunkLen, r1 = r0 + chunkLen;
            if (r1 > reduce) r1 = reduce;
            float s = 0.0f;
            for (i64 j = r0 + threadIdx.x; j < r1; j += blockDim.x) s += haste_sum_load(x, o * reduce + j);
            s = haste_block_sum(s, scratch);
            if (threadIdx.x == 0) y[w] = s;
        }
    }

    /// Columns (inner > 1), blockDim (32, 8): a tile of 32 columns of one work item per iteration, 8 lanes along
    /// the chunk, each summing every 8th row in order, the lane sums added in lane order.
    template <typename T>
    __device__ __forceinline__ void haste_sum_cols(const T* x, float* y, i64 outer, i64 reduce, i64 inner, i64 chunks, i64 chunkLen, float* part) {
        i64 colTiles = (inner + 31) / 32, tiles = outer * chunks * colTiles;
        int tx = threadIdx.x, ty = threadIdx.y;
        for (i64 t = blockIdx.x; t < tiles; t += gridDim.x) {
            i64 w = t / colTiles, col = (t - w * colTiles) * 32 + tx;
            i64 o = w / chunks, c = w - o * chunks, r0 = c * chunkLen, r1 = r0 + chunkLen;
            if (r1 > reduce) r1 = reduce;
            float s = 0.0f;
            if (col < inner)
                for (i64 r = r0 + ty; r < r1; r += 8) s += haste_sum_load(x, (o * reduce + r) * inner + col);
            part[ty * 32 + tx] = s;
            __syncthreads();
            if (ty == 0 && col < inner) {
                float total = part[tx];
                for (int l = 1; l < 8; ++l) total += part[l * 32 + tx];
                y[w * inner + col] = total;
            }
            __syncthreads();
        }
    }

    extern "C" __global__ void reduce_sum_rows(const float* x, float* y, i64 outer, i64 reduce, i64 chunks, i64 chunkLen) {
        __shared__ float scratch[32];
        haste_sum_rows(x, y, outer, reduce, chunks, chunkLen, scratch);
    }
    extern "C" __global__ void reduce_sum_rows_bf16(const u16* x, float* y, i64 outer, i64 reduce, i64 chunks, i64 chunkLen) {
        __shared__ float scratch[32];
        haste_sum_rows(x, y, outer, reduce, chunks, chunkLen, scratch);
    }
    extern "C" __global__ void reduce_sum_cols(const float* x, float* y, i64 outer, i64 reduce, i64 inner, i64 chunks, i64 chunkLen) {
        __shared__ float part[256];
        haste_sum_cols(x, y, outer, reduce, inner, chunks, chunkLen, part);
    }
    extern "C" __global__ void reduce_sum_cols_bf16(const u16* x, float* y, i64 outer, i64 reduce, i64 inner, i64 chunks, i64 chunkLen) {
        __shared__ float part[256];
        haste_sum_cols(x, y, outer, reduce, inner, chunks, chunkLen, part);
    }

    /// max that keeps a NaN once seen (CPUReduce.stickyMax).
    __device__ __forceinline__ float haste_sticky_max(float m, float v) { return (v > m || (isnan(v) && !isnan(m))) ? v : m; }

    extern "C" __global__ void reduce_max_rows(const float* x, float* y, i64 outer, i64 reduce) {
        __shared__ float scratch[32];
        for (i64 o = blockIdx.x; o < outer; o += gridDim.x) {
            const float* row = x + o * reduce;
            float m = -INFINITY;
            for (i64 j = threadIdx.x; j < reduce; j += blockDim.x) m = haste_sticky_max(m, row[j]);
            float nans = haste_block_sum(isnan(m) ? 1.0f : 0.0f, scratch);
            float best = haste_block_max(m, scratch);
            if (threadIdx.x == 0) y[o] = nans > 0.0f ? NAN : best;
        }
    }

    /// One thread per output, folding its column in index order as the CPU does.
    extern "C" __global__ void reduce_max_cols(const float* x, float* y, i64 outer, i64 reduce, i64 inner) {
        HASTE_GRID_STRIDE_LOOP(c, outer * inner) {
            i64 o = c / inner, i = c - o * inner;
            const float* p = x + o * reduce * inner + i;
            float m = p[0];
            for (i64 r = 1; r < reduce; ++r) m = haste_sticky_max(m, p[r * inner]);
            y[c] = m;
        }
    }

    /// dx = dy / k where x equals the max (k ties), else 0; a NaN max has no ties and gets no gradient.
    extern "C" __global__ void reduce_max_backward(const float* x, const float* y, const float* dy, float* dx, i64 outer, i64 reduce, i64 inner) {
        HASTE_GRID_STRIDE_LOOP(c, outer * inner) {
            i64 o = c / inner, i = c - o * inner, base = o * reduce * inner + i;
            float m = y[c];
            i64 ties = 0;
            for (i64 r = 0; r < reduce; ++r) if (x[base + r * inner] == m) ties += 1;
            float share = ties == 0 ? 0.0f : dy[c] / (float)ties;
            for (i64 r = 0; r < reduce; ++r) dx[base + r * inner] = x[base + r * inner] == m ? share : 0.0f;
        }
    }
    """#)

    public func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) {
        if x.dtype != .bfloat16 { requireFloat32(x, "sum") }
        requireFloat32(y, "sum")
        if outer * inner == 0 { return }
        if reduce == 0 { fill(y, count: outer * inner, value: 0); return }
        let (chunks, chunkLen) = CUDABackend.sumChunks(outer: outer, reduce: reduce, inner: inner)
        let bf16 = x.dtype == .bfloat16
        if chunks == 1 {
            sumPass(address(x), address(y), outer: outer, reduce: reduce, inner: inner, chunks: 1, chunkLen: reduce, bf16: bf16)
            return
        }
        let bytes = outer * chunks * inner * 4
        let partial = allocator.allocate(byteCount: bytes)
        sumPass(address(x), partial, outer: outer, reduce: reduce, inner: inner, chunks: chunks, chunkLen: chunkLen, bf16: bf16)
        sumPass(partial, address(y), outer: outer, reduce: chunks, inner: inner, chunks: 1, chunkLen: chunks)
        allocator.release(partial, byteCount: bytes)   // stream order: reused only by work queued after the second pass
    }

    /// How a sum splits its reduced axis: into chunks of at least 2048 rows (inner = 1) or 64 rows (columns) until
    /// about 512 work items keep the GPU busy; (1, reduce) when the outputs alone are enough. Fixed by the shape,
    /// so results are bitwise reproducible.
    static func sumChunks(outer: Int, reduce: Int, inner: Int) -> (Int, Int) {
        let items = inner == 1 ? outer : outer * ((inner + 31) / 32)
        let minLen = inner == 1 ? 2048 : 64
        if items >= 512 || reduce <= 2 * minLen { return (1, reduce) }
        let wanted = Swift.min((512 + items - 1) / items, reduce / minLen)
        let len = (reduce + wanted - 1) / wanted
        return ((reduce + len - 1) / len, len)
    }

    private func sumPass(_ x: DevicePointer, _ y: DevicePointer, outer: Int, reduce: Int, inner: Int, chunks: Int, chunkLen: Int,
                         bf16: Bool = false) {
        let suffix = bf16 ? "_bf16" : ""
        if inner == 1 {
            launch(CUDABackend.reduceSource, "reduce_sum_rows" + suffix, grid: Dim3(Swift.min(outer * chunks, 65_535)), block: Dim3(256),
                   [.pointer(x), .pointer(y), .int64(Int64(outer)), .int64(Int64(reduce)), .int64(Int64(chunks)), .int64(Int64(chunkLen))])
        } else {
            let tiles = outer * chunks * ((inner + 31) / 32)
            launch(CUDABackend.reduceSource, "reduce_sum_cols" + suffix, grid: Dim3(Swift.min(tiles, 65_535)), block: Dim3(32, 8),
                   [.pointer(x), .pointer(y), .int64(Int64(outer)), .int64(Int64(reduce)), .int64(Int64(inner)),
                    .int64(Int64(chunks)), .int64(Int64(chunkLen))])
        }
    }

    public func reduceMax(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) {
        requireFloat32(x, "amax")
        if outer * inner == 0 { return }
        if inner == 1 {
            launch(CUDABackend.reduceSource, "reduce_max_rows", grid: Dim3(Swift.min(outer, 65_535)), block: Dim3(256),
                   [.pointer(address(x)), .pointer(address(y)), .int64(Int64(outer)), .int64(Int64(reduce))])
        } else {
            launch(CUDABackend.reduceSource, "reduce_max_cols", grid: Dim3(CUDABackend.blocks(outer * inner)), block: Dim3(256),
                   [.pointer(address(x)), .pointer(address(y)), .int64(Int64(outer)), .int64(Int64(reduce)), .int64(Int64(inner))])
        }
    }

    public func reduceMaxBackward(_ x: Buffer, _ y: Buffer, _ dy: Buffer, _ dx: Buffer, outer: Int, reduce: Int, inner: Int) {
        requireFloat32(x, "amax backward"); requireFloat32(dy, "amax backward")
        if outer * inner == 0 { return }
        launch(CUDABackend.reduceSource, "reduce_max_backward", grid: Dim3(CUDABackend.blocks(outer * inner)), block: Dim3(256),
               [.pointer(address(x)), .pointer(address(y)), .pointer(address(dy)), .pointer(address(dx)),
                .int64(Int64(outer)), .int64(Int64(reduce)), .int64(Int64(inner))])
    }
}
