import HasteTensor

extension CUDABackend {
    /// The reduce family over x viewed as [outer, reduce, inner], float32.
    ///
    /// Sums: rows (inner = 1) take a 256-thread block each, every thread summing a strided subset in index order
    /// and the block combining them in a fixed tree; columns (inner > 1) take 32-column tiles with 8 lanes along
    /// `reduce`, each lane summing every 8th row in order and the 8 lane sums added in lane order. Both orders are
    /// fixed by the shape (bitwise reproducible run to run) but are not the CPU's (16-lane SIMD rows, sequential
    /// columns): the sums agree within float32 summation error (about n·2⁻²⁴·Σ|x| at worst).
    /// Max and its backward are exact: a max does not depend on the order (NaN propagates like torch.amax), and
    /// the backward counts ties per output as the CPU does.
    static let reduceSource = KernelSource(family: "reduce", kernels: ["reduce_sum_rows", "reduce_sum_cols", "reduce_max_rows", "reduce_max_cols", "reduce_max_backward"], code: #"""
    extern "C" __global__ void reduce_sum_rows(const float* x, float* y, i64 outer, i64 reduce) {
        __shared__ float scratch[32];
        for (i64 o = blockIdx.x; o < outer; o += gridDim.x) {
            const float* row = x + o * reduce;
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < reduce; j += blockDim.x) s += row[j];
            s = haste_block_sum(s, scratch);
            if (threadIdx.x == 0) y[o] = s;
        }
    }

    /// blockDim (32, 8): a tile of 32 columns of one outer index per iteration.
    extern "C" __global__ void reduce_sum_cols(const float* x, float* y, i64 outer, i64 reduce, i64 inner) {
        __shared__ float part[256];
        i64 colTiles = (inner + 31) / 32, tiles = outer * colTiles;
        int tx = threadIdx.x, ty = threadIdx.y;
        for (i64 t = blockIdx.x; t < tiles; t += gridDim.x) {
            i64 o = t / colTiles, col = (t - o * colTiles) * 32 + tx;
            float s = 0.0f;
            if (col < inner)
                for (i64 r = ty; r < reduce; r += 8) s += x[(o * reduce + r) * inner + col];
            part[ty * 32 + tx] = s;
            __syncthreads();
            if (ty == 0 && col < inner) {
                float total = part[tx];
                for (int l = 1; l < 8; ++l) total += part[l * 32 + tx];
                y[o * inner + col] = total;
            }
            __syncthreads();
        }
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
        requireFloat32(x, "sum")
        if outer * inner == 0 { return }
        if reduce == 0 { fill(y, count: outer * inner, value: 0); return }
        if inner == 1 {
            launch(CUDABackend.reduceSource, "reduce_sum_rows", grid: Dim3(Swift.min(outer, 65_535)), block: Dim3(256),
                   [.pointer(address(x)), .pointer(address(y)), .int64(Int64(outer)), .int64(Int64(reduce))])
        } else {
            let tiles = outer * ((inner + 31) / 32)
            launch(CUDABackend.reduceSource, "reduce_sum_cols", grid: Dim3(Swift.min(tiles, 65_535)), block: Dim3(32, 8),
                   [.pointer(address(x)), .pointer(address(y)), .int64(Int64(outer)), .int64(Int64(reduce)), .int64(Int64(inner))])
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
