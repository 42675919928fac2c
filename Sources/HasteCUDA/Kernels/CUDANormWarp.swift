import Foundation
import HasteTensor

/// LayerNorm rows of up to 1 280 columns by warp (`rowWarpWidths`): eight rows a 256-thread block, each row loaded
/// once into its warp's registers (PER elements a lane: lane L holds elements L + 32·j), where the block-per-row
/// kernels (CUDANorm.swift, CUDAFused.swift) give each 256-thread block one row of SiT-XL/2's 1 152 columns,
/// 4.5 elements a thread, read from memory two or three times around two barriers per reduction. The statistics
/// and the dx sums are those block kernels' bit for bit: `haste_warp_block_sum_w<8>` reproduces `haste_block_sum`'s
/// tree at blockDim 256 (lane L's s[w] is virtual thread w·32 + L's running sum over elements w·32 + L + 256·k, in
/// order), and every per-element expression is the block kernels' own, so the values (and ptxas's contractions of
/// them) are the same. `HASTE_ROW_WARP=0` keeps the block kernels.
/// Every pointer parameter is `__restrict__` (it lets ptxas load a row's residual ahead of the earlier stores): an
/// output must not overlap an input. The callers (`layerNormForward`/`Backward`, `modulatedLayerNorm(Backward)`, the
/// autocast fronts) always write into tensors made for the call; an in-place caller would need the block kernels.
extension CUDABackend {
    /// Elements of a row whose dx loads (the residual, the scale) a lane issues together before storing them
    /// (`haste_warp_row_dx`): 6 round trips a SiT-XL/2 row instead of 36.
    static let rowDxGroup = 6

    /// Register widths (elements a lane) of the warp entry points: cols ≤ 32·PER. 36: SiT-XL/2's 1 152 exactly (its
    /// rows took the 40-wide kernels: 4 registers a row array for nothing; the same bits either way).
    static let rowWarpWidths = [16, 24, 36, 40]

    /// `HASTE_ROW_WARP=0`: the block-per-row LayerNorm and softmax kernels everywhere, for comparisons (the same
    /// bits; a test switches it: `$rowWarpAllowed.withValue`).
    @TaskLocal static var rowWarpAllowed = ProcessInfo.processInfo.environment["HASTE_ROW_WARP"] != "0"

    /// The register width (elements a lane) of the warp entry points for rows of `cols`, or nil (the block kernels).
    static func rowWarpWidth(cols: Int) -> Int? {
        rowWarpAllowed ? rowWarpWidths.first(where: { cols <= 32 * $0 }) : nil
    }

    /// The warp entry points' suffix ("_w16", "_w24", "_w36", "_w40") for rows of `cols`, or "" (the block kernels).
    static func rowWarpSuffix(cols: Int) -> String { rowWarpWidth(cols: cols).map { "_w\($0)" } ?? "" }

    /// Grid and block of a launch over `rows` rows: eight rows a block by warp, else one a block.
    static func rowLaunch(_ rows: Int, warp: Bool) -> (grid: Dim3, block: Dim3) {
        (warp ? warpRowsGrid(rows) : Dim3(rowBlocks(rows)), Dim3(256))
    }

    /// The grid of a by-warp row kernel (every `_w` entry point: 256 threads, eight rows a block, further rows by grid
    /// stride): at most `rowWarpMaxBlocks` blocks.
    static func warpRowsGrid(_ rows: Int) -> Dim3 { Dim3(Swift.max(1, Swift.min((rows + 7) / 8, rowWarpMaxBlocks))) }

    /// The most blocks of a by-warp row launch: 65 535; a test lowers it so that warps go on to further rows (the
    /// soft cross-entropy's row walks with carries) without 500 000 rows.
    @TaskLocal static var rowWarpMaxBlocks = 65_535

    /// The warp kernels' shared helpers (in both families' code): the row's registers and its statistics.
    static let rowWarpHelpers = "#define HASTE_ROW_DX_GROUP \(rowDxGroup)\n" + #"""
    /// Row r's elements L + 32·j (j < PER) of lane L, zero past cols.
    template <int PER, typename T>
    __device__ __forceinline__ void haste_warp_row_load(const T* xr, i64 cols, float (&v)[PER]) {
        const int lane = threadIdx.x & 31;
        #pragma unroll
        for (int j = 0; j < PER; j++) v[j] = lane + 32 * j < cols ? haste_ld(xr, lane + 32 * j) : 0.0f;
    }
    /// haste_row_mean_rstd's statistics at blockDim 256 from the registers.
    template <int PER>
    __device__ __forceinline__ void haste_warp_row_mean_rstd(const float (&v)[PER], i64 cols, float eps, float* mean, float* rstd) {
        const int lane = threadIdx.x & 31;
        float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        #pragma unroll
        for (int j = 0; j < PER; j++) if (lane + 32 * j < cols) s[j & 7] += v[j];
        const float m = haste_warp_block_sum_w<8>(s) / (float)cols;
        float q[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        #pragma unroll
        for (int j = 0; j < PER; j++) if (lane + 32 * j < cols) { float d = v[j] - m; q[j & 7] += d * d; }
        const float var = haste_warp_block_sum_w<8>(q) / (float)cols;
        *mean = m;
        *rstd = 1.0f / sqrtf(var + eps);
    }
    /// A row's forward from its registers: loads it, writes its statistics (haste_row_mean_rstd's) to mean[r] and
    /// rstd[r], then out(j, i, x, m, rs) for each of the lane's elements j (column i).
    template <int PER, typename F>
    __device__ __forceinline__ void haste_warp_row_forward(const float* __restrict__ xr, i64 r, i64 cols, float eps, float* __restrict__ mean, float* __restrict__ rstd, F out) {
        const int lane = threadIdx.x & 31;
        float xv[PER];
        haste_warp_row_load<PER>(xr, cols, xv);
        float m, rs;
        haste_warp_row_mean_rstd<PER>(xv, cols, eps, &m, &rs);
        if (lane == 0) { mean[r] = m; rstd[r] = rs; }
        #pragma unroll
        for (int j = 0; j < PER; j++) if (lane + 32 * j < cols) out(j, lane + 32 * j, xv[j], m, rs);
    }
    /// dx of a row from its registers, the block kernels' sums and expression: rstd·(g − mean(g) − x̂·mean(g·x̂)) with
    /// g = gOf(j, i) for lane element j (column i), plus resid[i] (rounded on its own) where resid is given.
    template <int PER, typename G>
    __device__ __forceinline__ void haste_warp_row_dx(const float (&xv)[PER], G gOf, float m, float rs, i64 cols, float* __restrict__ dr, const float* __restrict__ resid) {
        const int lane = threadIdx.x & 31;
        float sg[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}, sgx[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        #pragma unroll
        for (int j = 0; j < PER; j++) {
            const i64 i = lane + 32 * j;
            if (i >= cols) continue;
            float g = gOf(j, i);
            sg[j & 7] += g;
            sgx[j & 7] += g * ((xv[j] - m) * rs);
        }
        const float a = haste_warp_block_sum_w<8>(sg) / (float)cols;
        const float c = haste_warp_block_sum_w<8>(sgx) / (float)cols;
        // The stores in groups of HASTE_ROW_DX_GROUP elements, each group's loads (resid, and gOf's) issued before its
        // stores: per element, a guarded load, add and store in turn made each element's residual a round trip of
        // its own (36 a SiT-XL/2 row: the compiler keeps a load after an earlier store it cannot prove apart, and
        // inside the element's guard). The same expressions, so the same values.
        #pragma unroll
        for (int j0 = 0; j0 < PER; j0 += HASTE_ROW_DX_GROUP) {
            float rv[HASTE_ROW_DX_GROUP], gj[HASTE_ROW_DX_GROUP];
            #pragma unroll
            for (int k = 0; k < HASTE_ROW_DX_GROUP; k++) {
                const int j = j0 + k;
                const i64 i = lane + 32 * j;
                const bool live = j < PER && i < cols;
                rv[k] = live && resid ? resid[i] : 0.0f;
                gj[k] = live ? gOf(j < PER ? j : 0, i) : 0.0f;
            }
            #pragma unroll
            for (int k = 0; k < HASTE_ROW_DX_GROUP; k++) {
                const int j = j0 + k;
                const i64 i = lane + 32 * j;
                if (j >= PER || i >= cols) continue;
                float g = gj[k];
                float xh = (xv[j] - m) * rs;
                const float v = rs * (g - a - xh * c);
                dr[i] = resid ? __fadd_rn(rv[k], v) : v;
            }
        }
    }
    """#

    /// layer_norm_forward and layer_norm_backward_dx by warp (the norm family).
    static let normWarpCode = rowWarpHelpers + "\n" + #"""
    template <int PER, typename TY>
    __device__ __forceinline__ void haste_ln_forward_warp(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, TY* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, i64 rows, i64 cols, float eps) {
        HASTE_WARP_ROWS(r, rows) {
            TY* yr = y + r * cols;
            haste_warp_row_forward<PER>(x + r * cols, r, cols, eps, mean, rstd, [&](int, i64 i, float xj, float m, float rs) {
                float v = (xj - m) * rs;
                if (w) v = v * w[i];
                if (b) v = v + b[i];
                haste_st(yr, i, v);
            });
        }
    }
    template <int PER>
    __device__ __forceinline__ void haste_ln_backward_dx_warp(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx, i64 rows, i64 cols) {
        HASTE_WARP_ROWS(r, rows) {
            const float* xr = x + r * cols;
            const float* gr = dy + r * cols;
            const float m = mean[r], rs = rstd[r];
            float xv[PER], gv[PER];
            haste_warp_row_load<PER>(xr, cols, xv);
            haste_warp_row_load<PER>(gr, cols, gv);
            haste_warp_row_dx<PER>(xv, [&](int j, i64 i) { return w ? gv[j] * w[i] : gv[j]; }, m, rs, cols, dx + r * cols, (const float*)0);
        }
    }
    """# + "\n" + rowWarpWidths.map { p in """
        extern "C" __global__ void layer_norm_forward_w\(p)(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, i64 rows, i64 cols, float eps) {
            haste_ln_forward_warp<\(p)>(x, w, b, y, mean, rstd, rows, cols, eps); }
        extern "C" __global__ void layer_norm_forward_y16_w\(p)(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, u16* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, i64 rows, i64 cols, float eps) {
            haste_ln_forward_warp<\(p)>(x, w, b, y, mean, rstd, rows, cols, eps); }
        extern "C" __global__ void layer_norm_backward_dx_w\(p)(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx, i64 rows, i64 cols) {
            haste_ln_backward_dx_warp<\(p)>(x, w, mean, rstd, dy, dx, rows, cols); }
        """ }.joined(separator: "\n") + "\n"

    static let normWarpKernels = rowWarpWidths.flatMap { ["layer_norm_forward_w\($0)", "layer_norm_forward_y16_w\($0)", "layer_norm_backward_dx_w\($0)"] }

    /// fused_mln_forward(_y16) and fused_mln_backward_dx(_dy16) by warp (the fused family).
    static let fusedWarpCode = rowWarpHelpers + "\n" + #"""
    /// The modulated LayerNorm forward's scale element i of its item's row `sc`: as given where the kernel has no `so`
    /// (null), else Autocast bf16's 1 + scale as the scale it stands for, bf16(1 + scale) − 1 (round_through_f32's bits
    /// with shift 1), which `out` (not null: the item's first row, inside `so`) keeps for the backward. By block and by
    /// warp rows.
    __device__ __forceinline__ float haste_mln_scale(const float* sc, i64 i, const float* so, float* out) {
        if (so == 0) return sc[i];
        const float s = haste_round_through(sc[i], 1.0f, 3);
        if (out != 0) out[i] = s;
        return s;
    }
    template <int PER, typename TY>
    __device__ __forceinline__ void haste_mln_forward_warp(const float* __restrict__ x, const float* __restrict__ shift, const float* __restrict__ scale, float* __restrict__ so, TY* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, i64 rows, i64 tokens, i64 cols, float eps) {
        HASTE_WARP_ROWS(r, rows) {
            const float* sh = shift + (r / tokens) * cols;
            const float* sc = scale + (r / tokens) * cols;
            float* sor = so != 0 && r % tokens == 0 ? so + (r / tokens) * cols : 0;   // as haste_mln_forward
            TY* yr = y + r * cols;
            haste_warp_row_forward<PER>(x + r * cols, r, cols, eps, mean, rstd, [&](int, i64 i, float xj, float m, float rs) {
                float w = haste_mln_scale(sc, i, so, sor) + 1.0f;
                haste_st(yr, i, (xj - m) * rs * w + sh[i]);
            });
        }
    }
    /// Row r of the modulated LayerNorm's dx (its item's scale row `sc`), leaving the row's x and dy in xv and gv.
    template <int PER, typename TD>
    __device__ __forceinline__ void haste_mln_row_dx(const float* __restrict__ x, const float* __restrict__ sc, float m, float rs, const TD* __restrict__ dy, const float* __restrict__ resid,
                                                     float* __restrict__ dx, i64 r, i64 cols, float (&xv)[PER], float (&gv)[PER]) {
        haste_warp_row_load<PER>(x + r * cols, cols, xv);
        haste_warp_row_load<PER>(dy + r * cols, cols, gv);
        haste_warp_row_dx<PER>(xv, [&](int j, i64 i) { return gv[j] * (sc[i] + 1.0f); }, m, rs, cols, dx + r * cols,
                               resid ? resid + r * cols : (const float*)0);
    }
    template <int PER, typename TD>
    __device__ __forceinline__ void haste_mln_backward_dx_warp(const float* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ mean, const float* __restrict__ rstd, const TD* __restrict__ dy, const float* __restrict__ resid, float* __restrict__ dx, i64 rows, i64 tokens, i64 cols) {
        HASTE_WARP_ROWS(r, rows) {
            float xv[PER], gv[PER];
            haste_mln_row_dx<PER>(x, scale + (r / tokens) * cols, mean[r], rstd[r], dy, resid, dx, r, cols, xv, gv);
        }
    }
    /// dx as haste_mln_backward_dx_warp and, with it, modulatedLayerNorm's chunk sums (haste_mln_backward_partials's
    /// part[task, 0, j] = Σ dy·x̂, part[task, 1, j] = Σ dy over the task's rows in order, the same expressions): a warp
    /// takes one task (`chunkRows` ≤ the rows a warp walks, of one item) and keeps its sums in its own slice of dynamic
    /// shared memory (2·32·PER floats a warp: lane L's columns L + 32·j, conflict-free), so x and dy are read once
    /// for both. Tasks by grid stride over warps.
    template <int PER, typename TD>
    __device__ __forceinline__ void haste_mln_backward_dx_partials_warp(const float* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ mean, const float* __restrict__ rstd,
                                                                       const TD* dy, const float* resid, float* dx, float* part,
                                                                       i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        HASTE_DYNAMIC_SHARED(float, haste_sums);
        const int lane = threadIdx.x & 31;
        float* s0 = haste_sums + (threadIdx.x >> 5) * 2 * 32 * PER;
        float* s1 = s0 + 32 * PER;
        const i64 perItem = (tokens + chunkRows - 1) / chunkRows;
        HASTE_WARP_ROWS(task, batch * perItem) {
            const i64 item = task / perItem, c = task % perItem;
            const i64 t1 = (c + 1) * chunkRows < tokens ? (c + 1) * chunkRows : tokens;
            const float* sc = scale + item * cols;
            #pragma unroll
            for (int j = 0; j < PER; j++) { s0[lane + 32 * j] = 0.0f; s1[lane + 32 * j] = 0.0f; }
            for (i64 t = c * chunkRows; t < t1; t++) {
                const i64 r = item * tokens + t;
                const float m = mean[r], rs = rstd[r];
                float xv[PER], gv[PER];
                haste_mln_row_dx<PER>(x, sc, m, rs, dy, resid, dx, r, cols, xv, gv);
                #pragma unroll
                for (int j = 0; j < PER; j++) {
                    if (lane + 32 * j >= cols) continue;
                    const float d = gv[j];
                    s0[lane + 32 * j] += d * ((xv[j] - m) * rs);
                    s1[lane + 32 * j] += d;
                }
            }
            #pragma unroll
            for (int j = 0; j < PER; j++) {
                const i64 i = lane + 32 * j;
                if (i >= cols) continue;
                part[(task * 2) * cols + i] = s0[i];
                part[(task * 2 + 1) * cols + i] = s1[i];
            }
        }
    }
    """# + "\n" + rowWarpWidths.map { p in """
        extern "C" __global__ void fused_mln_backward_dx_partials_w\(p)(const float* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy, const float* __restrict__ resid, float* __restrict__ dx, float* __restrict__ part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
            haste_mln_backward_dx_partials_warp<\(p)>(x, scale, mean, rstd, dy, resid, dx, part, batch, tokens, cols, chunkRows); }
        extern "C" __global__ void fused_mln_backward_dx_partials_dy16_w\(p)(const float* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ mean, const float* __restrict__ rstd, const u16* __restrict__ dy, const float* __restrict__ resid, float* __restrict__ dx, float* __restrict__ part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
            haste_mln_backward_dx_partials_warp<\(p)>(x, scale, mean, rstd, dy, resid, dx, part, batch, tokens, cols, chunkRows); }
        extern "C" __global__ void fused_mln_forward_w\(p)(const float* __restrict__ x, const float* __restrict__ shift, const float* __restrict__ scale, float* __restrict__ so, float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, i64 rows, i64 tokens, i64 cols, float eps) {
            haste_mln_forward_warp<\(p)>(x, shift, scale, so, y, mean, rstd, rows, tokens, cols, eps); }
        extern "C" __global__ void fused_mln_forward_y16_w\(p)(const float* __restrict__ x, const float* __restrict__ shift, const float* __restrict__ scale, float* __restrict__ so, u16* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, i64 rows, i64 tokens, i64 cols, float eps) {
            haste_mln_forward_warp<\(p)>(x, shift, scale, so, y, mean, rstd, rows, tokens, cols, eps); }
        extern "C" __global__ void fused_mln_backward_dx_w\(p)(const float* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy, const float* __restrict__ resid, float* __restrict__ dx, i64 rows, i64 tokens, i64 cols) {
            haste_mln_backward_dx_warp<\(p)>(x, scale, mean, rstd, dy, resid, dx, rows, tokens, cols); }
        extern "C" __global__ void fused_mln_backward_dx_dy16_w\(p)(const float* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ mean, const float* __restrict__ rstd, const u16* __restrict__ dy, const float* __restrict__ resid, float* __restrict__ dx, i64 rows, i64 tokens, i64 cols) {
            haste_mln_backward_dx_warp<\(p)>(x, scale, mean, rstd, dy, resid, dx, rows, tokens, cols); }
        """ }.joined(separator: "\n") + "\n"

    static let fusedWarpKernels = rowWarpWidths.flatMap { p in
        ["fused_mln_forward_w\(p)", "fused_mln_forward_y16_w\(p)", "fused_mln_backward_dx_w\(p)", "fused_mln_backward_dx_dy16_w\(p)",
         "fused_mln_backward_dx_partials_w\(p)", "fused_mln_backward_dx_partials_dy16_w\(p)"]
    }
}
