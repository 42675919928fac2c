import Foundation
import HasteTensor

/// Flash attention on CUDA (`attentionForwardLSE` / `attentionBackwardLSE`; `attentionRecomputesProbabilities` is
/// true for Dh, Dv ≤ 128; the saved-probabilities path is CUDAAttention.swift): FlashAttention-2's structure with
/// fp32 FMA tiles (the emulator runs no tensor-core PTX).
///    - Tiling: BR = 64 query rows × BC = 64 key rows per tile, 128 threads per block; lanes 2i and 2i + 1 of a
///      warp own tile row i (a query row in the forward and dq, a key row in dk/dv), each one half of its columns
///      (every other column) in registers: the running max m and sum l live in both lanes and meet through one
///      `__shfl_xor_sync(…, 1)`; no T×T matrix in memory. Forward: one block per (query tile, head), loop over
///      key tiles with the online softmax (m_new = max(m, rowmax S), α = exp(m − m_new), l = α·l + Σ p,
///      O = α·O + P·V), then out = O / l and lse = m + log l (float32 [batch·heads, Tq]). Backward: D = rowsum(dO ⊙ O)
///      (attention_flash_row_dot), then dq (one block per query tile, loop over key tiles) and dk, dv (one block
///      per key tile, loop over query tiles), each recomputing P = exp(scale·q·kᵀ − lse) tile by tile; every
///      gradient row has one owner, so there are no atomics and results are bitwise reproducible.
///    - Entry points come in three register widths, _d64 (max(Dh, Dv) ≤ 64), _d96 (≤ 96: SiT-XL/2's 72) and _d128
///      (≤ 128); Dh ≠ Dv is fine. Wider heads are refused (the op keeps path 1 for them).
///    - Dynamic shared memory per block (row stride D + 1 floats: the 16 rows a warp reads at one column fall in
///      distinct banks), in bytes for Dh = Dv = 64 / 72 (SiT-XL/2: 1152 / 16) / 128:
///      forward: CUDAFlashAttentionForward.swift (register-tiled, 74 496 for SiT-XL/2);
///      dq 64·(Dh+1)·2 + 64·(Dv+1)·2 + 64·65 floats = 83 200 / 91 392 / 148 736;
///      dk/dv 64·(Dh+1)·2 + 64·(Dv+1)·2 + 2·64·65 + 128 floats = 100 352 / 108 544 / 165 888
///      (above 48 KiB, so the driver sets the opt-in attribute; every size fits sm_80's 163 KiB and sm_90's
///      227 KiB; the 128-wide dk/dv does not fit the 99 KiB of sm_86/sm_89).
///    - Registers per thread (ptxas -v, NVRTC 12, sm_90; no spills): forward 168 / 168 / 206 (d64 / d96 / d128),
///      dq 167 / 255 / 255, dk/dv 168 / 255 / 255 (sm_80: dk/dv d64 255). Expected occupancy on sm_90 (228 KiB of
///      shared memory, 64 Ki registers per SM, 4 warps per block), min(shared memory, registers) in blocks per SM
///      for Dh = Dv = 64 / 72 / 128: forward 3 / 3 / 1, dq 2 / 2 / 1, dk/dv 2 / 2 / 1, i.e. 4–12 warps per SM. Low
///      occupancy is the FA2 design point (much work per block) but the backward FMA kernels are bound by
///      shared-memory loads (one 4-byte load per FMA in the inner products; the forward is register-tiled since):
///      expect a fraction of the fp32 peak, far below bf16 tensor cores.
///    - Autocast bf16 on sm_80+ takes the tensor-core family instead (CUDAFlashAttentionBF16.swift: same tiles and
///      entry points, mma.sync m16n8k16). Tensor cores replace exactly the FMA micro-kernels: `flash_row_dots` (S = Q·Kᵀ, dP = dO·Vᵀ and, in dk/dv,
///      Sᵀ, dPᵀ) and the accumulate loops marked "FMA micro-kernel" (O += P·V, dq += dS·K, dv += Pᵀ·dO,
///      dk += dSᵀ·Q). With mma.sync m16n8k16 (sm_80) each of the 4 warps owns 16 of the 64 rows, so the row
///      statistics stay inside a warp (quad shuffles instead of the lane pair) and P goes from the S accumulator
///      fragments straight into the A operand of P·V (the Ps/dSs shared buffers disappear); on sm_90 one
///      warpgroup issues wgmma 64×64×16 over the same tile with K/V brought in by TMA.
///    - To tune on the GPU: BR/BC (64×64 vs 128×64 with 8 warps), double-buffering the K/V tiles (cp.async on
///      sm_80, TMA + mbarrier on sm_90) so loads overlap the math, a 4×4 register micro-tile per thread instead of
///      1 row × D/2 (fewer shared loads per FMA), float4 loads with a +4 row padding or a swizzle, exp2f with
///      log2(e) folded into the scale, __launch_bounds__ / register caps for the d128 dk/dv kernel, and a split
///      over query tiles in dk/dv when batch·heads·tiles is below ~2 blocks per SM (never for SiT-XL/2 at batch
///      64+: 64·16 heads × 4 tiles).
extension CUDABackend {
    static let flashAttentionSource = KernelSource(family: "flashAttention", kernels: [
        "attention_flash_row_dot", "attention_flash_row_dot_in16", "attention_flash_row_dot_o16", "attention_flash_dq_sum", "attention_flash_dq_sum_out16",
        "attention_flash_forward_d64", "attention_flash_forward_d96", "attention_flash_forward_d128",
        "attention_flash_backward_dq_d64", "attention_flash_backward_dq_d96", "attention_flash_backward_dq_d128",
        "attention_flash_backward_dkdv_d64", "attention_flash_backward_dkdv_d96", "attention_flash_backward_dkdv_d128",
    ], code: "#define FLASH_DOT_ROWS \(flashDotRows)\n#define FLASH_DOT_CHUNKS \(flashMaxHeadDim / 32)\n" + #"""
    #define FLASH_BR 64          /* query rows per tile */
    #define FLASH_BC 64          /* key rows per tile */
    #define FLASH_THREADS 128    /* 2 threads per tile row: lane pairs (2i, 2i+1) of one warp share a row */

    /// dst[r][d] = src[r·cols + d] for r < 64, d < cols, 0 for rows r ≥ rows_left and for cols ≤ d < pad (the
    /// register-tiled forward's rows, padded to 4); shared row stride `stride`.
    __device__ __forceinline__ void flash_load_tile(float* dst, const float* src, i64 rows_left, int cols, int stride, int pad = 0) {
        const int w = pad > cols ? pad : cols;
        for (int i = threadIdx.x; i < 64 * w; i += FLASH_THREADS) {
            int r = i / w, d = i - r * w;
            dst[r * stride + d] = r < rows_left && d < cols ? src[(i64)r * cols + d] : 0.0f;
        }
    }

    /// The tile inner product (FMA micro-kernel): s[j] = Σ_{d<D} a[d]·b[(half + 2j)·stride + d] for j < N, i.e.
    /// one row of a·bᵀ over the tile's 2N rows of b, this thread's half of them. A tensor-core version replaces
    /// this and the P·V / dS·K loops below by mma.sync (sm_80) / wgmma (sm_90) fragments (see the file notes).
    template <int N>
    __device__ __forceinline__ void flash_row_dots(float* s, const float* a, const float* b, int stride, int D, int half) {
        #pragma unroll
        for (int j = 0; j < N; j++) s[j] = 0.0f;
        for (int d = 0; d < D; d++) {
            float x = a[d];
            #pragma unroll
            for (int j = 0; j < N; j++) s[j] += x * b[(half + 2 * j) * stride + d];
        }
    }

    /// D[r] = Σ_d dOut[r][d]·out[r][d], one warp per row (grid-stride, 8 warps per block).
    template <typename T>
    __device__ __forceinline__ void haste_flash_row_dot(const T* dout, const float* out, float* delta, i64 rows, i64 dv) {
        const int lane = threadIdx.x & 31;
        for (i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += (i64)gridDim.x * (blockDim.x >> 5)) {
            float s = 0.0f;
            for (i64 d = lane; d < dv; d += 32) s += haste_ld(dout, r * dv + d) * out[r * dv + d];
            s = haste_warp_sum(s);
            if (lane == 0) delta[r] = s;
        }
    }
    extern "C" __global__ void attention_flash_row_dot(const float* dout, const float* out, float* delta, i64 rows, i64 dv) {
        haste_flash_row_dot(dout, out, delta, rows, dv);
    }
    /// The same with a bf16 dOut (`attentionTakesBF16Operands`): its widened values, the same sums. dOut's row r
    /// (head b = r / tq, token r % tq) lies at (b / heads)·on + (b % heads)·oh + token·ot (`AttentionLayouts`: a
    /// contiguous dOut has heads 1, on tq·dv, ot dv).
    /// OUT16: out a bf16 tensor in dOut's layout (the forward's output merged into tokens), widened: the float32
    /// kernel's sums on a carrier of the same values.
    /// A warp takes FLASH_DOT_ROWS rows at once (dv ≤ 32·FLASH_DOT_CHUNKS = flashMaxHeadDim: every bf16 flash shape):
    /// every load of its rows issued before the first product, so a warp has all its rows' bytes in flight at once (a
    /// row at a time, with dv's loop bound unknown to ptxas, a 72-wide row took two dependent round trips: 1.9 ms a
    /// SiT-XL/2 bs64 step on the H100 against ~0.95 ms to read its bytes, by arithmetic). Each row's sum is the
    /// one-row loop's: d = lane, lane + 32, … in order from 0, then the warp sum (the same bits). Launched with
    /// blocks of 8 warps over rows / FLASH_DOT_ROWS (`flashDotRows`).
    template <bool OUT16, typename TO>
    __device__ __forceinline__ void haste_flash_row_dot_in16(const u16* __restrict__ dout, const TO* __restrict__ out,
                                                             float* __restrict__ delta, i64 rows, i64 dv,
                                                             i64 tq, i64 heads, i64 on, i64 oh, i64 ot) {
        const int lane = threadIdx.x & 31;
        const i64 warp = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), warps = (i64)gridDim.x * (blockDim.x >> 5);
        for (i64 r0 = warp * FLASH_DOT_ROWS; r0 < rows; r0 += warps * FLASH_DOT_ROWS) {
            float x[FLASH_DOT_ROWS][FLASH_DOT_CHUNKS], y[FLASH_DOT_ROWS][FLASH_DOT_CHUNKS];
            #pragma unroll
            for (int j = 0; j < FLASH_DOT_ROWS; j++) {
                const i64 r = r0 + j < rows ? r0 + j : r0;
                const i64 b = r / tq, t = r - b * tq, at = (b / heads) * on + (b % heads) * oh + t * ot;
                const u16* row = dout + at;
                const TO* orow = OUT16 ? out + at : out + r * dv;
                #pragma unroll
                for (int c = 0; c < FLASH_DOT_CHUNKS; c++) {
                    const i64 d = lane + 32 * c;
                    const bool in = d < dv && r0 + j < rows;
                    x[j][c] = in ? haste_ld(row, d) : 0.0f;
                    y[j][c] = in ? haste_ld(orow, d) : 0.0f;
                }
            }
            float s[FLASH_DOT_ROWS];
            #pragma unroll
            for (int j = 0; j < FLASH_DOT_ROWS; j++) {
                s[j] = 0.0f;
                #pragma unroll
                for (int c = 0; c < FLASH_DOT_CHUNKS; c++) if (lane + 32 * c < dv) s[j] += x[j][c] * y[j][c];
            }
            #pragma unroll
            for (int j = 0; j < FLASH_DOT_ROWS; j++) s[j] = haste_warp_sum(s[j]);
            if (lane == 0) {
                #pragma unroll
                for (int j = 0; j < FLASH_DOT_ROWS; j++) if (r0 + j < rows) delta[r0 + j] = s[j];
            }
        }
    }
    extern "C" __global__ void attention_flash_row_dot_in16(const u16* dout, const float* out, float* delta, i64 rows, i64 dv,
                                                            i64 tq, i64 heads, i64 on, i64 oh, i64 ot) {
        haste_flash_row_dot_in16<false>(dout, out, delta, rows, dv, tq, heads, on, oh, ot);
    }
    extern "C" __global__ void attention_flash_row_dot_o16(const u16* dout, const u16* out, float* delta, i64 rows, i64 dv,
                                                           i64 tq, i64 heads, i64 on, i64 oh, i64 ot) {
        haste_flash_row_dot_in16<true>(dout, out, delta, rows, dv, tq, heads, on, oh, ot);
    }

    /// dq[i] = Σ_t part[t·n + i], t = 0…tiles − 1 in order: the bf16 dk/dv kernel's per-key-tile shares of dq.
    extern "C" __global__ void attention_flash_dq_sum(const float* part, float* dq, i64 n, int tiles) {
        HASTE_GRID_STRIDE_LOOP(i, n) { dq[i] = haste_tile_sum(part, n, tiles, i); }
    }
    /// The same sum rounded to bf16 (the `_in16_` families' dq), one warp per row of dq (rows = n / dh): row r (head
    /// b = r / tq, token r % tq) stored at (b / heads)·gn + (b % heads)·gh + token·gt (a contiguous dq: heads 1,
    /// gn tq·dh, gt dh).
    extern "C" __global__ void attention_flash_dq_sum_out16(const float* part, u16* dq, i64 n, int tiles, i64 dh,
                                                            i64 tq, i64 heads, i64 gn, i64 gh, i64 gt) {
        const int lane = threadIdx.x & 31;
        const i64 rows = n / dh;
        for (i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += (i64)gridDim.x * (blockDim.x >> 5)) {
            const i64 b = r / tq, t = r - b * tq;
            u16* row = dq + (b / heads) * gn + (b % heads) * gh + t * gt;
            for (i64 d = lane; d < dh; d += 32) row[d] = haste_float_to_bf16(haste_tile_sum(part, n, tiles, r * dh + d));
        }
    }

    /// dq = scale·Σ_c dS[r][c]·k[c], dS = P ⊙ (dOut·vᵀ − D), P = exp(scale·q·kᵀ − lse): one block per (query
    /// tile, head), looping over key tiles; each dq row is owned by one lane pair (no atomics).
    template <int DMAX>
    __device__ void flash_backward_dq(float* smem, const float* q, const float* k, const float* v, const float* dout,
                                      const float* lse, const float* delta, float* dq,
                                      i64 batch, i64 tq, i64 tk, int dh, int dv, float scale) {
        const int sq = dh + 1, sv = dv + 1, sp = FLASH_BC + 1;
        float* Qs = smem;
        float* dOs = Qs + FLASH_BR * sq;
        float* Ks = dOs + FLASH_BR * sv;
        float* Vs = Ks + FLASH_BC * sq;
        float* dSs = Vs + FLASH_BC * sv;
        const int row = threadIdx.x >> 1, half = threadIdx.x & 1;
        const i64 tiles = (tq + FLASH_BR - 1) / FLASH_BR;
        for (i64 b = blockIdx.y; b < batch; b += gridDim.y) {
            for (i64 t = blockIdx.x; t < tiles; t += gridDim.x) {
                const i64 r0 = t * FLASH_BR;
                __syncthreads();
                flash_load_tile(Qs, q + (b * tq + r0) * dh, tq - r0, dh, sq);
                flash_load_tile(dOs, dout + (b * tq + r0) * dv, tq - r0, dv, sv);
                const bool live = r0 + row < tq;
                const float lr = live ? lse[b * tq + r0 + row] : 0.0f, dr = live ? delta[b * tq + r0 + row] : 0.0f;
                float acc[DMAX / 2];
                #pragma unroll
                for (int j = 0; j < DMAX / 2; j++) acc[j] = 0.0f;
                for (i64 c0 = 0; c0 < tk; c0 += FLASH_BC) {
                    __syncthreads();
                    flash_load_tile(Ks, k + (b * tk + c0) * dh, tk - c0, dh, sq);
                    flash_load_tile(Vs, v + (b * tk + c0) * dv, tk - c0, dv, sv);
                    __syncthreads();
                    float s[FLASH_BC / 2], dp[FLASH_BC / 2];
                    flash_row_dots<FLASH_BC / 2>(s, Qs + row * sq, Ks, sq, dh, half);
                    flash_row_dots<FLASH_BC / 2>(dp, dOs + row * sv, Vs, sv, dv, half);
                    #pragma unroll
                    for (int j = 0; j < FLASH_BC / 2; j++) {
                        const float p = c0 + half + 2 * j < tk ? expf(scale * s[j] - lr) : 0.0f;
                        dSs[row * sp + half + 2 * j] = p * (dp[j] - dr);
                    }
                    __syncthreads();
                    const int cn = tk - c0 < FLASH_BC ? (int)(tk - c0) : FLASH_BC;
                    for (int c = 0; c < cn; c++) {     // dq += dS·K (FMA micro-kernel)
                        const float ds = dSs[row * sp + c];
                        const float* kr = Ks + c * sq + half;
                        #pragma unroll
                        for (int j = 0; j < DMAX / 2; j++) if (half + 2 * j < dh) acc[j] += ds * kr[2 * j];
                    }
                }
                if (live) {
                    float* g = dq + (b * tq + r0 + row) * dh + half;
                    #pragma unroll
                    for (int j = 0; j < DMAX / 2; j++) if (half + 2 * j < dh) g[2 * j] = scale * acc[j];
                }
            }
        }
    }

    /// dk = scale·Σ_r dS[r][c]·q[r], dv = Σ_r P[r][c]·dOut[r]: one block per (key tile, head), looping over query
    /// tiles; each dk/dv row is owned by one lane pair (no atomics). dk or dv may be null (not computed).
    template <int DMAX>
    __device__ void flash_backward_dkdv(float* smem, const float* q, const float* k, const float* v, const float* dout,
                                        const float* lse, const float* delta, float* dk, float* dvout,
                                        i64 batch, i64 tq, i64 tk, int dh, int dv, float scale) {
        const int sq = dh + 1, sv = dv + 1, sp = FLASH_BR + 1;
        float* Ks = smem;
        float* Vs = Ks + FLASH_BC * sq;
        float* Qs = Vs + FLASH_BC * sv;
        float* dOs = Qs + FLASH_BR * sq;
        float* Ps = dOs + FLASH_BR * sv;
        float* dSs = Ps + FLASH_BC * sp;
        float* Ls = dSs + FLASH_BC * sp;
        float* Ds = Ls + FLASH_BR;
        const int row = threadIdx.x >> 1, half = threadIdx.x & 1;
        const i64 tiles = (tk + FLASH_BC - 1) / FLASH_BC;
        for (i64 b = blockIdx.y; b < batch; b += gridDim.y) {
            for (i64 t = blockIdx.x; t < tiles; t += gridDim.x) {
                const i64 c0 = t * FLASH_BC;
                __syncthreads();
                flash_load_tile(Ks, k + (b * tk + c0) * dh, tk - c0, dh, sq);
                flash_load_tile(Vs, v + (b * tk + c0) * dv, tk - c0, dv, sv);
                float gk[DMAX / 2], gv[DMAX / 2];
                #pragma unroll
                for (int j = 0; j < DMAX / 2; j++) { gk[j] = 0.0f; gv[j] = 0.0f; }
                for (i64 r0 = 0; r0 < tq; r0 += FLASH_BR) {
                    __syncthreads();
                    flash_load_tile(Qs, q + (b * tq + r0) * dh, tq - r0, dh, sq);
                    flash_load_tile(dOs, dout + (b * tq + r0) * dv, tq - r0, dv, sv);
                    for (int i = threadIdx.x; i < FLASH_BR; i += FLASH_THREADS) {
                        const bool live = r0 + i < tq;  // rows past Tq: P = exp(· − ∞) = 0, dS = 0
                        Ls[i] = live ? lse[b * tq + r0 + i] : INFINITY;
                        Ds[i] = live ? delta[b * tq + r0 + i] : 0.0f;
                    }
                    __syncthreads();
                    float s[FLASH_BR / 2], dp[FLASH_BR / 2];
                    flash_row_dots<FLASH_BR / 2>(s, Ks + row * sq, Qs, sq, dh, half);
                    flash_row_dots<FLASH_BR / 2>(dp, Vs + row * sv, dOs, sv, dv, half);
                    #pragma unroll
                    for (int j = 0; j < FLASH_BR / 2; j++) {
                        const int r = half + 2 * j;
                        const float p = expf(scale * s[j] - Ls[r]);
                        Ps[row * sp + r] = p;
                        dSs[row * sp + r] = p * (dp[j] - Ds[r]);
                    }
                    __syncthreads();
                    const int rn = tq - r0 < FLASH_BR ? (int)(tq - r0) : FLASH_BR;
                    for (int r = 0; r < rn; r++) {     // dv += Pᵀ·dO, dk += dSᵀ·Q (FMA micro-kernels)
                        const float p = Ps[row * sp + r], ds = dSs[row * sp + r];
                        const float* gr = dOs + r * sv + half;
                        const float* qr = Qs + r * sq + half;
                        #pragma unroll
                        for (int j = 0; j < DMAX / 2; j++) {
                            if (half + 2 * j < dv) gv[j] += p * gr[2 * j];
                            if (half + 2 * j < dh) gk[j] += ds * qr[2 * j];
                        }
                    }
                }
                if (c0 + row < tk) {
                    if (dk != 0) {
                        float* g = dk + (b * tk + c0 + row) * dh + half;
                        #pragma unroll
                        for (int j = 0; j < DMAX / 2; j++) if (half + 2 * j < dh) g[2 * j] = scale * gk[j];
                    }
                    if (dvout != 0) {
                        float* g = dvout + (b * tk + c0 + row) * dv + half;
                        #pragma unroll
                        for (int j = 0; j < DMAX / 2; j++) if (half + 2 * j < dv) g[2 * j] = gv[j];
                    }
                }
            }
        }
    }

    """# + "\n" + flashF32ForwardCode + "\n" + #"""
    /// Entry points per register tile width: DMAX ≥ max(Dh, Dv) (64, 96 for SiT-XL/2's 72, or 128).
    HASTE_FLASH_ENTRIES(attention_flash, float, flash_forward, flash_backward_dq, flash_backward_dkdv, 64)
    HASTE_FLASH_ENTRIES(attention_flash, float, flash_forward, flash_backward_dq, flash_backward_dkdv, 96)
    HASTE_FLASH_ENTRIES(attention_flash, float, flash_forward, flash_backward_dq, flash_backward_dkdv, 128)
    """#)

    /// The most key tiles (64 keys each) for which the bf16 dk/dv kernel also computes dq (SiT at 256 tokens: 4);
    /// `HASTE_FLASH_FUSED_DQ=0`: never (the dq kernel always), for comparisons on a GPU.
    static let flashFusedDQTiles = ProcessInfo.processInfo.environment["HASTE_FLASH_FUSED_DQ"] == "0" ? 0 : 4

    /// The flash kernels' largest head dim (Dh and Dv): their per-thread register tiles hold 128 / 2 columns.
    static let flashMaxHeadDim = 128
    /// Rows a warp of the bf16 row dot (`attention_flash_row_dot_in16`/`_o16`) sums at once, its loads all in flight.
    static let flashDotRows = 4

    /// True where the flash kernels apply (Dh, Dv ≤ 128); larger heads (the VAE's single 512-wide head) keep the
    /// saved-probabilities path.
    public func attentionRecomputesProbabilities(_ s: AttentionShape) -> Bool {
        Swift.max(s.headDim, s.valueDim) <= CUDABackend.flashMaxHeadDim
    }
}
