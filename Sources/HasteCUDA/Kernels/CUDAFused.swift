import HasteTensor

extension CUDABackend {
    /// Fused adaLN-block kernels (`FusedKernels`). modulatedLayerNorm: one block per row as `layer_norm_forward`
    /// (two-pass statistics in float where the CPU makes one shifted pass: both within float32 rounding of the exact
    /// moments), (1 + scale[b]) and shift[b] applied in the same pass. gatedResidual and biasGeluTanh: grid-stride
    /// elementwise. Column sums over an item's tokens (dshift, dscale, dgate, and dbias over all rows) are partial
    /// sums over fixed chunks of `fusedChunkRows` rows (modulatedLayerNorm's: `mlnChunkRows`) that never cross an
    /// item, then added in chunk order: no atomics, the same bits every run; the CPU's chunks differ, so its sums
    /// round differently (summation order).
    /// gatedResidual's `_bf16` kernels are Autocast bf16's: the product and the gradient terms rounded to bf16 where
    /// torch's bf16 tensors round them (`FusedKernels.gatedResidualForward`/`Backward` with `low`).
    static let fusedSource = KernelSource(family: "fused", kernels: [
        "fused_mln_forward", "fused_mln_backward_dx", "fused_mln_backward_partials", "fused_column_reduce",
        "fused_gated_forward", "fused_gated_backward_dy", "fused_product_partials",
        "fused_gated_forward_bf16", "fused_gated_backward_dy_bf16", "fused_gated_partials_bf16",
        "fused_bias_gelu_forward", "fused_bias_gelu_backward",
        "fused_mln_forward_y16", "fused_mln_backward_dx_dy16", "fused_mln_backward_partials_dy16",
        "fused_gated_forward_bf16_y16", "fused_gated_backward_dy_bf16_d16", "fused_gated_partials_bf16_y16", "fused_gated_forward_y16",
    ] + fusedWarpKernels + fusedGatedBackwardKernels, code: fusedWarpCode + "\n" + #"""
    /// The `_y16`, `_dy16`, `_d16` kernels are the float32 ones with the branch side of an Autocast bf16 half-block
    /// in bf16 (element access by the prelude's `haste_ld`, `haste_st`).

    /// geluTanh(u) and its derivative, as the elementwise family's op 13.
    __device__ __forceinline__ float haste_fused_gelu(float x) {
        const float k0 = 0.7978845608028654f, k1 = 0.044715f;
        float inner = k0 * (x + k1 * x * x * x);
        float half = x / 2.0f;
        return half * (1.0f + tanhf(inner));
    }
    __device__ __forceinline__ float haste_fused_gelu_derivative(float x) {
        const float k0 = 0.7978845608028654f, k1 = 0.044715f;
        float x2 = x * x;
        float t = tanhf(k0 * (x + k1 * x2 * x));
        float left = (1.0f + t) / 2.0f;
        float right = x / 2.0f * (1.0f - t * t) * k0 * (1.0f + 3.0f * k1 * x2);
        return left + right;
    }

    /// Rows by block (grid-stride), blockDim.x a multiple of 32. Row r belongs to item r / tokens.
    /// With `so` (not null): the scale Autocast bf16's 1 + scale stands for, which each item's first row writes there
    /// (haste_mln_scale).
    template <typename TY>
    __device__ __forceinline__ void haste_mln_forward(const float* x, const float* shift, const float* scale, float* so, TY* y, float* mean, float* rstd, i64 rows, i64 tokens, i64 cols, float eps) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = x + r * cols;
            const float* sh = shift + (r / tokens) * cols;
            const float* sc = scale + (r / tokens) * cols;
            float* sor = so != 0 && r % tokens == 0 ? so + (r / tokens) * cols : 0;
            TY* yr = y + r * cols;
            float m, rs;
            haste_row_mean_rstd(xr, cols, eps, scratch, &m, &rs);
            if (threadIdx.x == 0) { mean[r] = m; rstd[r] = rs; }
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) {
                float w = haste_mln_scale(sc, i, so, sor) + 1.0f;
                haste_st(yr, i, (xr[i] - m) * rs * w + sh[i]);
            }
        }
    }
    extern "C" __global__ void fused_mln_forward(const float* x, const float* shift, const float* scale, float* so, float* y, float* mean, float* rstd, i64 rows, i64 tokens, i64 cols, float eps) {
        haste_mln_forward(x, shift, scale, so, y, mean, rstd, rows, tokens, cols, eps);
    }
    extern "C" __global__ void fused_mln_forward_y16(const float* x, const float* shift, const float* scale, float* so, u16* y, float* mean, float* rstd, i64 rows, i64 tokens, i64 cols, float eps) {
        haste_mln_forward(x, shift, scale, so, y, mean, rstd, rows, tokens, cols, eps);
    }

    /// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·(1 + scale[item]), one block per row.
    /// With `resid` (not null): dx = resid + that, the sum rounded on its own (__fadd_rn: never contracted into the
    /// product before it), as a separate add kernel would.
    template <typename TD>
    __device__ __forceinline__ void haste_mln_backward_dx(const float* x, const float* scale, const float* mean, const float* rstd, const TD* dy, const float* resid, float* dx, i64 rows, i64 tokens, i64 cols) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = x + r * cols;
            const TD* gr = dy + r * cols;
            const float* sc = scale + (r / tokens) * cols;
            float* dr = dx + r * cols;
            float m = mean[r], rs = rstd[r];
            float sg = 0.0f, sgx = 0.0f;
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) {
                float g = haste_ld(gr, i) * (sc[i] + 1.0f);
                sg += g;
                sgx += g * ((xr[i] - m) * rs);
            }
            float a = haste_block_sum(sg, scratch) / (float)cols;
            float c = haste_block_sum(sgx, scratch) / (float)cols;
            for (i64 i = threadIdx.x; i < cols; i += blockDim.x) {
                float g = haste_ld(gr, i) * (sc[i] + 1.0f);
                float xh = (xr[i] - m) * rs;
                const float v = rs * (g - a - xh * c);
                dr[i] = resid ? __fadd_rn(resid[r * cols + i], v) : v;
            }
        }
    }
    extern "C" __global__ void fused_mln_backward_dx(const float* x, const float* scale, const float* mean, const float* rstd, const float* dy, const float* resid, float* dx, i64 rows, i64 tokens, i64 cols) {
        haste_mln_backward_dx(x, scale, mean, rstd, dy, resid, dx, rows, tokens, cols);
    }
    extern "C" __global__ void fused_mln_backward_dx_dy16(const float* x, const float* scale, const float* mean, const float* rstd, const u16* dy, const float* resid, float* dx, i64 rows, i64 tokens, i64 cols) {
        haste_mln_backward_dx(x, scale, mean, rstd, dy, resid, dx, rows, tokens, cols);
    }

    /// part[task, 0, j] = Σ dy·x̂, part[task, 1, j] = Σ dy over the task's rows in order; task = item·perItem + chunk,
    /// a chunk = `chunkRows` of the item's tokens. One thread per (task, column).
    template <typename TD>
    __device__ __forceinline__ void haste_mln_backward_partials(const float* x, const float* mean, const float* rstd, const TD* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        i64 perItem = (tokens + chunkRows - 1) / chunkRows;
        HASTE_GRID_STRIDE_LOOP(p, batch * perItem * cols) {
            i64 task = p / cols, j = p % cols;
            i64 item = task / perItem, c = task % perItem;
            i64 t1 = (c + 1) * chunkRows < tokens ? (c + 1) * chunkRows : tokens;
            float sw = 0.0f, sb = 0.0f;
            for (i64 t = c * chunkRows; t < t1; t++) {
                i64 r = item * tokens + t;
                float d = haste_ld(dy, r * cols + j);
                sw += d * ((x[r * cols + j] - mean[r]) * rstd[r]);
                sb += d;
            }
            part[(task * 2) * cols + j] = sw;
            part[(task * 2 + 1) * cols + j] = sb;
        }
    }
    extern "C" __global__ void fused_mln_backward_partials(const float* x, const float* mean, const float* rstd, const float* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_mln_backward_partials(x, mean, rstd, dy, part, batch, tokens, cols, chunkRows);
    }
    extern "C" __global__ void fused_mln_backward_partials_dy16(const float* x, const float* mean, const float* rstd, const u16* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_mln_backward_partials(x, mean, rstd, dy, part, batch, tokens, cols, chunkRows);
    }

    /// The row kernels below walk a row's columns j = threadIdx.x + k·blockDim.x four at a time: the four
    /// elements' operands are loaded before any is stored (each element's loads still precede its own store, so an
    /// output that is also an input is fine), four loads in flight per operand where a loop of one element each
    /// had one (its store may alias the next element's operands, so nothing moved ahead of it). The same elements
    /// per thread and the same expressions: the same bits.
    #define HASTE_ROW_UNROLL 4
    #define HASTE_ROW_COLUMNS(j0, cols) for (i64 j0 = threadIdx.x; j0 < (cols); j0 += HASTE_ROW_UNROLL * (i64)blockDim.x)
    #define HASTE_ROW_LANES(u, j, j0, cols) _Pragma("unroll") for (int u = 0; u < HASTE_ROW_UNROLL; u++) \
        if (const i64 j = (j0) + (i64)u * blockDim.x; j < (cols))

    /// out = x + gate[item]·y over count = batch·tokens·cols elements; with ROUND (Autocast bf16, float32 carriers
    /// of bf16 gate and y) out = x + bf16(gate·y). Rows by block (grid-stride), the block's threads along a row: the
    /// item's gate row is found once per row, not by two 64-bit divisions per element.
    template <bool ROUND, typename TY = float>
    __device__ __forceinline__ void haste_gated_forward(const float* x, const float* gate, const TY* y, float* out, i64 tokens, i64 cols, i64 count) {
        const i64 rows = count / cols;
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* g = gate + (r / tokens) * cols;
            const i64 o = r * cols;
            HASTE_ROW_COLUMNS(j0, cols) {
                float xv[HASTE_ROW_UNROLL], gv[HASTE_ROW_UNROLL], yv[HASTE_ROW_UNROLL];
                HASTE_ROW_LANES(u, j, j0, cols) { xv[u] = x[o + j]; gv[u] = g[j]; yv[u] = haste_ld(y, o + j); }
                HASTE_ROW_LANES(u, j, j0, cols) out[o + j] = ROUND ? xv[u] + haste_round_bf16(gv[u] * yv[u]) : xv[u] + gv[u] * yv[u];
            }
        }
    }
    extern "C" __global__ void fused_gated_forward(const float* x, const float* gate, const float* y, float* out, i64 tokens, i64 cols, i64 count) {
        haste_gated_forward<false>(x, gate, y, out, tokens, cols, count);
    }
    extern "C" __global__ void fused_gated_forward_bf16(const float* x, const float* gate, const float* y, float* out, i64 tokens, i64 cols, i64 count) {
        haste_gated_forward<true>(x, gate, y, out, tokens, cols, count);
    }
    extern "C" __global__ void fused_gated_forward_bf16_y16(const float* x, const float* gate, const u16* y, float* out, i64 tokens, i64 cols, i64 count) {
        haste_gated_forward<true>(x, gate, y, out, tokens, cols, count);
    }
    extern "C" __global__ void fused_gated_forward_y16(const float* x, const float* gate, const u16* y, float* out, i64 tokens, i64 cols, i64 count) {
        haste_gated_forward<false>(x, gate, y, out, tokens, cols, count);
    }

    /// dy = gate[item]·dout; with ROUND gate[item]·bf16(dout). Rows by block, as haste_gated_forward.
    template <bool ROUND, typename TD = float>
    __device__ __forceinline__ void haste_gated_backward_dy(const float* gate, const float* dout, TD* dy, i64 tokens, i64 cols, i64 count) {
        const i64 rows = count / cols;
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* g = gate + (r / tokens) * cols;
            const i64 o = r * cols;
            HASTE_ROW_COLUMNS(j0, cols) {
                float gv[HASTE_ROW_UNROLL], dv[HASTE_ROW_UNROLL];
                HASTE_ROW_LANES(u, j, j0, cols) { gv[u] = g[j]; dv[u] = dout[o + j]; }
                HASTE_ROW_LANES(u, j, j0, cols) haste_st(dy, o + j, gv[u] * (ROUND ? haste_round_bf16(dv[u]) : dv[u]));
            }
        }
    }
    extern "C" __global__ void fused_gated_backward_dy(const float* gate, const float* dout, float* dy, i64 tokens, i64 cols, i64 count) {
        haste_gated_backward_dy<false>(gate, dout, dy, tokens, cols, count);
    }
    extern "C" __global__ void fused_gated_backward_dy_bf16(const float* gate, const float* dout, float* dy, i64 tokens, i64 cols, i64 count) {
        haste_gated_backward_dy<true>(gate, dout, dy, tokens, cols, count);
    }
    extern "C" __global__ void fused_gated_backward_dy_bf16_d16(const float* gate, const float* dout, u16* dy, i64 tokens, i64 cols, i64 count) {
        haste_gated_backward_dy<true>(gate, dout, dy, tokens, cols, count);
    }

    /// y = geluTanh(x + bias[j]) over count = rows·cols elements; rows by block, threads along a row (no division per
    /// element, as the gated residuals).
    extern "C" __global__ void fused_bias_gelu_forward(const float* x, const float* bias, float* y, i64 cols, i64 count) {
        for (i64 r = blockIdx.x; r < count / cols; r += gridDim.x) {
            const i64 o = r * cols;
            HASTE_ROW_COLUMNS(j0, cols) {
                float xv[HASTE_ROW_UNROLL], bv[HASTE_ROW_UNROLL];
                HASTE_ROW_LANES(u, j, j0, cols) { xv[u] = x[o + j]; bv[u] = bias[j]; }
                HASTE_ROW_LANES(u, j, j0, cols) y[o + j] = haste_fused_gelu(xv[u] + bv[u]);
            }
        }
    }

    /// dx = dy·geluTanh′(x + bias[j]), rows as the forward.
    extern "C" __global__ void fused_bias_gelu_backward(const float* x, const float* bias, const float* dy, float* dx, i64 cols, i64 count) {
        for (i64 r = blockIdx.x; r < count / cols; r += gridDim.x) {
            const i64 o = r * cols;
            HASTE_ROW_COLUMNS(j0, cols) {
                float xv[HASTE_ROW_UNROLL], bv[HASTE_ROW_UNROLL], gv[HASTE_ROW_UNROLL];
                HASTE_ROW_LANES(u, j, j0, cols) { xv[u] = x[o + j]; bv[u] = bias[j]; gv[u] = dy[o + j]; }
                HASTE_ROW_LANES(u, j, j0, cols) dx[o + j] = gv[u] * haste_fused_gelu_derivative(xv[u] + bv[u]);
            }
        }
    }
    """# + "\n" + columnSumsCode + "\n" + fusedGatedBackwardCode)

    /// Rows per partial-sum chunk of the per-item column sums (fixed: the result depends on it).
    static let fusedChunkRows = 64

    public func modulatedLayerNormForward(_ x: Buffer, shift: Buffer, scale: Buffer, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                          batch: Int, tokens: Int, cols: Int, eps: Double, roundedScale: Buffer?) {
        for b in [x, shift, scale] + (roundedScale.map { [$0] } ?? []) { requireFloat32(b, "modulatedLayerNorm") }
        let rows = batch * tokens
        if rows == 0, let roundedScale { roundThrough(scale, roundedScale, low: .bfloat16, count: batch * cols, shift: 1) }
        if rows == 0 || cols == 0 { return }
        let y16 = branchSuffix(y, "_y16", "modulatedLayerNorm")
        // Rows by warp (eight a block) or by block: the same bits, tuned at the shape's first call (by warp first).
        let suffixes = rowSuffixes(cols: cols)
        tuneRows("modulatedLayerNorm forward\(y16) rows \(rows), cols \(cols)", suffixes,
                 repeatable: CUDABackend.separate(outputs: [y, mean, rstd, roundedScale], inputs: [x, shift, scale])) { warp in
            let shape = CUDABackend.rowLaunch(rows, warp: !warp.isEmpty)
            launch(CUDABackend.fusedSource, "fused_mln_forward" + y16 + warp, grid: shape.grid, block: shape.block, [
                .pointer(address(x)), .pointer(address(shift)), .pointer(address(scale)), .pointer(roundedScale.map(address) ?? 0),
                .pointer(address(y)), .pointer(address(mean)), .pointer(address(rstd)),
                .int64(Int64(rows)), .int64(Int64(tokens)), .int64(Int64(cols)), .float(Float(eps)),
            ])
        }
    }

    /// The row kernels' entry points for rows of `cols`: by warp then by block ("_w36", ""), or by block alone.
    func rowSuffixes(cols: Int) -> [String] {
        let warp = CUDABackend.rowWarpSuffix(cols: cols)
        return warp.isEmpty ? [""] : [warp, ""]
    }

    /// `body(suffix)` for one of the row kernels' entry points `suffixes` (their names' ends; "sums": modulatedLayerNorm's
    /// dx pass with the chunk sums), chosen by the tuner (`LaunchTuner`: timed at `key`'s first call, the first where
    /// nothing can be timed).
    func tuneRows(_ key: @autoclosure () -> String, _ suffixes: [String], repeatable: Bool, _ body: (String) -> Void) {
        tuned(key(), suffixes.map { LaunchTuner.Candidate($0.isEmpty ? "rows by block" : $0 == "sums" ? "rows by warp, sums in the dx pass"
                                                          : "rows by warp (\($0.dropFirst()))") },
              count: suffixes.count, repeatable: repeatable) { body(suffixes[$0]) }
    }

    public func modulatedLayerNormBackward(_ x: Buffer, scale: Buffer, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                           residual: Buffer?, dshift: Buffer?, dscale: Buffer?, batch: Int, tokens: Int, cols: Int,
                                           dscaleLow: DType?) {
        for b in [x, scale] + (residual.map { [$0] } ?? []) { requireFloat32(b, "modulatedLayerNorm backward") }
        requireBF16OrNone(dscaleLow, "modulatedLayerNorm backward")
        let dy16 = branchSuffix(dy, "_dy16", "modulatedLayerNorm backward")
        let rows = batch * tokens
        if cols == 0 { return }
        // dshift and dscale's chunk sums in the by-warp dx pass ("sums"), or dx by warp or by block and the sums by
        // their own kernel: the same bits, tuned at the shape's first call (in that order).
        // sm_75's 64 KiB: not for 1 280 columns
        let sumsPer = CUDABackend.rowWarpWidth(cols: cols).flatMap { per in
            rows > 0 && (dshift != nil || dscale != nil) && CUDABackend.fusedMLNPartialsAllowed
                && CUDABackend.mlnSumsSharedBytes(per: per) <= driver.maxSharedBytes ? per : nil
        }
        let ways = (sumsPer == nil ? [] : ["sums"]) + (rows > 0 ? rowSuffixes(cols: cols) : [""])
        tuneRows("modulatedLayerNorm backward\(dy16) rows \(batch)×\(tokens), cols \(cols)" + (residual == nil ? "" : " +residual")
                    + (dshift == nil ? "" : " dshift") + (dscale == nil ? "" : " dscale"), ways, repeatable: CUDABackend.separate(outputs: [dx, dshift, dscale], inputs: [x, scale, mean, rstd, dy, residual])) { way in
            if way == "sums", let per = sumsPer {
                modulatedLayerNormBackwardWithSums(x, scale: scale, mean: mean, rstd: rstd, dy, dx: dx, residual: residual,
                                                   dshift: dshift, dscale: dscale, batch: batch, tokens: tokens, cols: cols, per: per,
                                                   roundScale: dscaleLow != nil)
                return
            }
            if rows > 0 {
                let shape = CUDABackend.rowLaunch(rows, warp: !way.isEmpty)
                launch(CUDABackend.fusedSource, "fused_mln_backward_dx" + dy16 + way, grid: shape.grid, block: shape.block, [
                    .pointer(address(x)), .pointer(address(scale)), .pointer(address(mean)), .pointer(address(rstd)),
                    .pointer(address(dy)), .pointer(residual.map(address) ?? 0), .pointer(address(dx)),
                    .int64(Int64(rows)), .int64(Int64(tokens)), .int64(Int64(cols)),
                ])
            }
            if dshift == nil && dscale == nil { return }
            columnSums(batch: batch, tokens: tokens, cols: cols, lanes: 2, outs: (dscale, dshift), chunkRows: CUDABackend.mlnChunkRows,
                       roundFirst: dscaleLow != nil) { part, chunkRows in
                self.launch(CUDABackend.fusedSource, "fused_mln_backward_partials" + dy16,
                            grid: Dim3(CUDABackend.blocks(batch * ((tokens + chunkRows - 1) / chunkRows) * cols)), block: Dim3(256), [
                    .pointer(self.address(x)), .pointer(self.address(mean)), .pointer(self.address(rstd)), .pointer(self.address(dy)),
                    .pointer(part), .int64(Int64(batch)), .int64(Int64(tokens)), .int64(Int64(cols)), .int64(Int64(chunkRows)),
                ])
            }
        }
    }

    public func gatedResidualForward(_ x: Buffer, gate: Buffer, _ y: Buffer, _ out: Buffer, batch: Int, tokens: Int, cols: Int,
                                     low: DType?) {
        for b in [x, gate] { requireFloat32(b, "gatedResidual") }
        requireBF16OrNone(low, "gatedResidual")
        // y in bf16 with `low` (the bf16 half-blocks) or without (LayerScale's float32 product of a bf16 branch output).
        let y16 = branchSuffix(y, "_y16", "gatedResidual")
        let count = batch * tokens * cols
        if count == 0 { return }
        launch(CUDABackend.fusedSource, (low == nil ? "fused_gated_forward" : "fused_gated_forward_bf16") + y16, grid: Dim3(CUDABackend.rowBlocks(batch * tokens)), block: Dim3(256), [
            .pointer(address(x)), .pointer(address(gate)), .pointer(address(y)), .pointer(address(out)),
            .int64(Int64(tokens)), .int64(Int64(cols)), .int64(Int64(count)),
        ])
    }

    public func gatedResidualBackward(gate: Buffer, _ y: Buffer, _ dout: Buffer, dy: Buffer?, dgate: Buffer?,
                                      batch: Int, tokens: Int, cols: Int, low: DType?) {
        for b in [gate, dout] { requireFloat32(b, "gatedResidual backward") }
        requireBF16OrNone(low, "gatedResidual backward")
        let y16 = branchSuffix(y, "_y16", "gatedResidual backward", low: low)
        let count = batch * tokens * cols
        if cols == 0 { return }
        // dy and dgate's partials in one pass over dout (CUDAFusedGatedBackward.swift), or by two kernels: the same
        // bits, tuned at the shape's first call (one pass first).
        let both = dy != nil && dgate != nil && count > 0 && CUDABackend.fusedGatedBackwardAllowed
        tuned("gatedResidual backward\(y16)\(low == nil ? "" : " bf16") rows \(batch)×\(tokens), cols \(cols)"
                + (dy == nil ? "" : dy!.dtype == .bfloat16 ? " dy16" : " dy") + (dgate == nil ? "" : " dgate"),
              (both ? ["one pass", "two kernels"] : ["two kernels"]).map { LaunchTuner.Candidate($0) },
              count: both ? 2 : 1, repeatable: CUDABackend.separate(outputs: [dy, dgate], inputs: [gate, y, dout])) { i in
            if both && i == 0, let dy, let dgate {
                let d16 = branchSuffix(dy, "_d16", "gatedResidual backward", low: low)
                gatedResidualBackwardBoth(gate: gate, y, dout, dy: dy, dgate: dgate, batch: batch, tokens: tokens, cols: cols,
                                          suffix: low == nil ? "" : "_bf16" + y16 + d16)
                return
            }
            if let dy, count > 0 {
                let d16 = branchSuffix(dy, "_d16", "gatedResidual backward", low: low)
                launch(CUDABackend.fusedSource, low == nil ? "fused_gated_backward_dy" : "fused_gated_backward_dy_bf16" + d16, grid: Dim3(CUDABackend.rowBlocks(batch * tokens)), block: Dim3(256), [
                    .pointer(address(gate)), .pointer(address(dout)), .pointer(address(dy)),
                    .int64(Int64(tokens)), .int64(Int64(cols)), .int64(Int64(count)),
                ])
            }
            guard let dgate else { return }
            productColumnSums(dout, y, dgate, batch: batch, tokens: tokens, cols: cols,
                              kernel: low == nil ? "fused_product_partials" : "fused_gated_partials_bf16" + y16)
        }
    }

    public var fusedBranchesInBF16: Bool { true }

    /// "" for a float32 buffer, `suffix` for a bfloat16 one (the branch side of an Autocast bf16 half-block: only
    /// with `low` bf16 where the kernel has a `low` variant); anything else stops.
    func branchSuffix(_ b: Buffer, _ suffix: String, _ op: String, low: DType? = .bfloat16) -> String {
        switch b.dtype {
        case .float32: return ""
        case .bfloat16 where low == .bfloat16: return suffix
        default: CUDABackend.fail("\(op) on \(device): a \(b.dtype) operand (float32, or bfloat16 under Autocast bf16)")
        }
    }

    /// The fused kernels' rounded variants are bf16 only (Autocast's CUDA GEMMs are too: fp16 runs the composites).
    private func requireBF16OrNone(_ low: DType?, _ op: String) {
        if let low, low != .bfloat16 { CUDABackend.fail("\(op) on \(device) rounds to bfloat16 only, not \(low)") }
    }

    public func biasGeluTanhForward(_ x: Buffer, bias: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        for b in [x, bias] { requireFloat32(b, "biasGeluTanh") }
        let count = rows * cols
        if count == 0 { return }
        launch(CUDABackend.fusedSource, "fused_bias_gelu_forward", grid: Dim3(CUDABackend.rowBlocks(rows)), block: Dim3(256), [
            .pointer(address(x)), .pointer(address(bias)), .pointer(address(y)), .int64(Int64(cols)), .int64(Int64(count)),
        ])
    }

    public func biasGeluTanhBackward(_ x: Buffer, bias: Buffer, _ dy: Buffer, dx: Buffer, dbias: Buffer?, rows: Int, cols: Int) {
        for b in [x, bias, dy] { requireFloat32(b, "biasGeluTanh backward") }
        let count = rows * cols
        if cols == 0 { return }
        if count > 0 {
            launch(CUDABackend.fusedSource, "fused_bias_gelu_backward", grid: Dim3(CUDABackend.rowBlocks(rows)), block: Dim3(256), [
                .pointer(address(x)), .pointer(address(bias)), .pointer(address(dy)), .pointer(address(dx)),
                .int64(Int64(cols)), .int64(Int64(count)),
            ])
        }
        guard let dbias else { return }
        productColumnSums(dx, nil, dbias, batch: 1, tokens: rows, cols: cols)   // dbias = Σ_rows dx
    }

    /// out[item, j] = Σ_t a·b (b nil: Σ a) over the item's tokens, through fixed-chunk partials; `kernel`
    /// "fused_gated_partials_bf16" sums bf16(bf16(a)·b) instead.
    private func productColumnSums(_ a: Buffer, _ b: Buffer?, _ out: Buffer, batch: Int, tokens: Int, cols: Int,
                                   kernel: String = "fused_product_partials") {
        columnSums(batch: batch, tokens: tokens, cols: cols, lanes: 1, outs: (out, nil)) { part, chunkRows in
            self.launch(CUDABackend.fusedSource, kernel,
                        grid: Dim3(CUDABackend.blocks(batch * ((tokens + chunkRows - 1) / chunkRows) * cols)), block: Dim3(256), [
                .pointer(self.address(a)), .pointer(b.map(self.address) ?? 0), .pointer(part),
                .int64(Int64(batch)), .int64(Int64(tokens)), .int64(Int64(cols)), .int64(Int64(chunkRows)),
            ])
        }
    }
}
