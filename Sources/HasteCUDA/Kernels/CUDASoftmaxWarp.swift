import HasteTensor

/// Softmax rows of up to 256 columns by warp (the `_w` entry points of the softmax family): eight rows a 256-thread
/// block, where the block kernels give each row a block of `rowThreads(cols)` threads (one element each, two
/// reductions of two barriers each). The aligned attention's probabilities are such rows: SiT-XL/2's 256 tokens,
/// 262 144 rows a layer at batch 64. Lane L holds elements L + 32·j (j < W = rowThreads(cols) / 32), which are the
/// block kernel's virtual threads j·32 + L, one element each; `haste_warp_block_max_w`/`_sum_w` reproduce its
/// reduction trees and every per-element expression is the block kernels' own, so the same bits
/// (`HASTE_ROW_WARP=0` keeps the block kernels).
extension CUDABackend {
    /// The launch of a softmax family row kernel: by warp ("_w", eight rows a block) for up to 256 columns, else
    /// (or with `warp` false) one block of `rowThreads(cols)` per row.
    static func softmaxRowLaunch(rows: Int, cols: Int, warp: Bool = true) -> (suffix: String, grid: Dim3, block: Dim3) {
        if warp && rowWarpAllowed && cols <= 256 { return ("_w", warpRowsGrid(rows), Dim3(256)) }
        return ("", Dim3(Swift.min(rows, 65_535)), Dim3(rowThreads(cols)))
    }

    /// `kernel` of the softmax family over `rows` of `cols` (`arguments` its own), by warp or by block: the same bits,
    /// chosen as the LayerNorm rows are (`tuneRows`: timed at the shape's first call, by warp first; not tuned where
    /// `repeatable` is false, an output in an input's storage). `variant` names a mode the arguments select (" log").
    func softmaxRows(_ kernel: String, _ arguments: [KernelArgument], rows: Int, cols: Int, variant: String = "",
                     repeatable: Bool) {
        let warp = CUDABackend.softmaxRowLaunch(rows: rows, cols: cols).suffix
        tuneRows("\(kernel)\(variant) rows \(rows), cols \(cols)", warp.isEmpty ? [""] : [warp, ""], repeatable: repeatable) {
            let shape = CUDABackend.softmaxRowLaunch(rows: rows, cols: cols, warp: !$0.isEmpty)
            launch(CUDABackend.softmaxSource, kernel + shape.suffix, grid: shape.grid, block: shape.block, arguments)
        }
    }

    static let softmaxWarpCode = #"""
    /// W = rowThreads(cols) / 32: the block kernels' block size for these columns.
    #define HASTE_SOFTMAX_WARPS(CALL) \
        if (cols <= 32) CALL(1); else if (cols <= 64) CALL(2); else if (cols <= 128) CALL(4); else CALL(8);
    template <int W, typename TX, typename TY>
    __device__ __forceinline__ void haste_softmax_rows_warp(const TX* x, TY* y, i64 rows, i64 cols, int log) {
        const int lane = threadIdx.x & 31;
        HASTE_WARP_ROWS(r, rows) {
            const TX* xr = x + r * cols;
            TY* yr = y + r * cols;
            float v[W], mx[W], s[W];
            #pragma unroll
            for (int j = 0; j < W; j++) {
                v[j] = lane + 32 * j < cols ? haste_ld(xr, lane + 32 * j) : 0.0f;
                mx[j] = -INFINITY;
                if (lane + 32 * j < cols && v[j] > mx[j]) mx[j] = v[j];
            }
            const float m = haste_warp_block_max_w<W>(mx);
            #pragma unroll
            for (int j = 0; j < W; j++) { s[j] = 0.0f; if (lane + 32 * j < cols) s[j] += expf(v[j] - m); }
            const float sum = haste_warp_block_sum_w<W>(s);
            if (log) {
                const float ls = logf(sum);
                #pragma unroll
                for (int j = 0; j < W; j++) if (lane + 32 * j < cols) haste_st(yr, lane + 32 * j, (v[j] - m) - ls);
            } else {
                const float inv = 1.0f / sum;
                #pragma unroll
                for (int j = 0; j < W; j++) if (lane + 32 * j < cols) haste_st(yr, lane + 32 * j, expf(v[j] - m) * inv);
            }
        }
    }
    template <int W, typename T, typename TD>
    __device__ __forceinline__ void haste_softmax_backward_rows_warp(const T* y, const T* dy, TD* dx, i64 rows, i64 cols, int log) {
        const int lane = threadIdx.x & 31;
        HASTE_WARP_ROWS(r, rows) {
            const T* yr = y + r * cols;
            const T* g = dy + r * cols;
            TD* d = dx + r * cols;
            float yv[W], gv[W], s[W];
            #pragma unroll
            for (int j = 0; j < W; j++) {
                const bool in = lane + 32 * j < cols;
                yv[j] = in ? haste_ld(yr, lane + 32 * j) : 0.0f;
                gv[j] = in ? haste_ld(g, lane + 32 * j) : 0.0f;
                s[j] = 0.0f;
                if (in) s[j] += log ? gv[j] : gv[j] * yv[j];
            }
            const float sum = haste_warp_block_sum_w<W>(s);
            #pragma unroll
            for (int j = 0; j < W; j++) {
                if (lane + 32 * j >= cols) continue;
                haste_st(d, lane + 32 * j, log ? gv[j] - expf(yv[j]) * sum : yv[j] * (gv[j] - sum));
            }
        }
    }
    /// soft_cross_entropy_f32 for rows of up to 256 columns by warp: the block kernel's virtual thread j·32 + L holds
    /// one column (its first held one, L + 32·j) of each row; its pair reductions are each value's own tree
    /// (haste_block_pair), its expressions as there. The views' walks start at the grid's warp index and step by
    /// the warps in the grid.
    template <int W, typename TX, typename TT>
    __device__ __forceinline__ void haste_sce_rows_warp(const TX* x, const TT* t, float* loss, float* difference, i64 rows, i64 cols,
                                                        haste_row_walk& xw, haste_row_walk& tw, i64 first, i64 step) {
        const int lane = threadIdx.x & 31;
        for (i64 r = first; r < rows; r += step, xw.next(), tw.next()) {
            const TX* xr = x + xw.at();
            const TT* tr = t + tw.at();
            float* d = difference + r * cols;
            float xv[W], tv[W], ev[W], mx[W], mt[W], z[W], st[W], ce[W];
            #pragma unroll
            for (int j = 0; j < W; j++) {
                const i64 c = lane + 32 * j;
                xv[j] = c < cols ? haste_ld(xr, c) : -INFINITY;
                tv[j] = c < cols ? haste_ld(tr, c) : -INFINITY;
                ev[j] = 0.0f;
                mx[j] = -INFINITY; mt[j] = -INFINITY;
                if (xv[j] > mx[j]) mx[j] = xv[j];
                if (tv[j] > mt[j]) mt[j] = tv[j];
            }
            const float m = haste_warp_block_max_w<W>(mx), n = haste_warp_block_max_w<W>(mt);
            #pragma unroll
            for (int j = 0; j < W; j++) {
                z[j] = 0.0f; st[j] = 0.0f;
                if (lane + 32 * j < cols) {
                    xv[j] -= m;
                    ev[j] = expf(xv[j]);
                    tv[j] = expf(tv[j] - n);
                    z[j] += ev[j];
                    st[j] += tv[j];
                }
            }
            const float zs = haste_warp_block_sum_w<W>(z), ss = haste_warp_block_sum_w<W>(st);
            const float logZ = logf(zs), invZ = 1.0f / zs, invS = 1.0f / ss;
            #pragma unroll
            for (int j = 0; j < W; j++) {
                ce[j] = 0.0f;
                const i64 c = lane + 32 * j;
                if (c < cols) {
                    const float p = tv[j] * invS;
                    ce[j] += p * (xv[j] - logZ);
                    d[c] = ev[j] * invZ - p;
                }
            }
            const float total = haste_warp_block_sum_w<W>(ce);
            if (lane == 0) loss[r] = -total;
        }
    }
    /// The entry points' body: each warp's first row and the grid's stride in warps, the walks, the row width's W.
    template <typename TX, typename TT>
    __device__ __forceinline__ void haste_sce_warps(HASTE_SCE_PARAMS(TX, TT)) {
        const u32 first = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), step = gridDim.x * (blockDim.x >> 5);
        haste_row_walk xw, tw;
        xw.start(first, step, xn1, xn2, xn3, xf1, xf2, xf3, xs0, xs1, xs2, xs3);
        tw.start(first, step, tn1, tn2, tn3, tf1, tf2, tf3, ts0, ts1, ts2, ts3);
        #define HASTE_CALL(W) haste_sce_rows_warp<W>(x, t, loss, difference, rows, cols, xw, tw, first, step)
        HASTE_SOFTMAX_WARPS(HASTE_CALL)
        #undef HASTE_CALL
    }
    HASTE_SCE_ENTRIES(_w, haste_sce_warps)          // (the macro: CUDASoftCrossEntropy.swift)
    extern "C" __global__ void softmax_forward_f32_w(const float* x, float* y, i64 rows, i64 cols, int log) {
        #define HASTE_CALL(W) haste_softmax_rows_warp<W>(x, y, rows, cols, log)
        HASTE_SOFTMAX_WARPS(HASTE_CALL)
        #undef HASTE_CALL
    }
    extern "C" __global__ void softmax_backward_f32_w(const float* y, const float* dy, float* dx, i64 rows, i64 cols, int log) {
        #define HASTE_CALL(W) haste_softmax_backward_rows_warp<W>(y, dy, dx, rows, cols, log)
        HASTE_SOFTMAX_WARPS(HASTE_CALL)
        #undef HASTE_CALL
    }
    extern "C" __global__ void softmax_forward_bf16_w(const u16* x, u16* y, i64 rows, i64 cols) {
        #define HASTE_CALL(W) haste_softmax_rows_warp<W>(x, y, rows, cols, 0)
        HASTE_SOFTMAX_WARPS(HASTE_CALL)
        #undef HASTE_CALL
    }
    extern "C" __global__ void softmax_backward_bf16_w(const u16* y, const u16* dy, u16* dx, i64 rows, i64 cols) {
        #define HASTE_CALL(W) haste_softmax_backward_rows_warp<W>(y, dy, dx, rows, cols, 0)
        HASTE_SOFTMAX_WARPS(HASTE_CALL)
        #undef HASTE_CALL
    }
    """#
}
