import Foundation
import HasteTensor

/// The tile helpers of the bf16 tensor-core flash-attention kernels (CUDAFlashAttentionBF16.swift: the file notes
/// there); the host's choice of family, width and shared memory is in CUDAFlashAttentionBF16Entries.swift.
extension CUDABackend {
    static let flashBF16TileCode = flashLayoutCode + "\n" + #"""
    #define TC_THREADS 128   /* 4 warps, 16 tile rows each */
    #define TC_BATCH 4       /* tile loads a thread issues before it uses the first (DMAX/4 per thread: a multiple) */

    /// Its row stride in elements (tc_head: flashLayoutCode).
    template <bool DIRECT>
    __device__ __forceinline__ i64 tc_stride(const tc_lay& l, int cols) { return DIRECT ? l.t_ : (i64)cols; }
    /// Head b's rows of q, k, v and dOut and their strides (tc_head, tc_stride); the forward passes q for dOut.
    template <typename T> struct tc_rows { const T *q, *k, *v, *o; i64 qs, ks, vs, os; };
    template <bool DIRECT, typename T>
    __device__ __forceinline__ tc_rows<T> tc_head_rows(const T* q, const T* k, const T* v, const T* dout, const tc_layouts& L,
                                                       i64 b, i64 tq, i64 tk, int dh, int dv) {
        return tc_rows<T>{tc_head<DIRECT>(q, L, L.q, b, tq, dh), tc_head<DIRECT>(k, L, L.k, b, tk, dh),
                          tc_head<DIRECT>(v, L, L.v, b, tk, dv), tc_head<DIRECT>(dout, L, L.o, b, tq, dv),
                          tc_stride<DIRECT>(L.q, dh), tc_stride<DIRECT>(L.k, dh), tc_stride<DIRECT>(L.v, dv), tc_stride<DIRECT>(L.o, dv)};
    }

    /// The padded width (a multiple of 16) of `d` columns in the tiles of a DMAX kernel: a compile-time DMAX where
    /// the entry point found both Dh and Dv padding to it (WHOLE: SiT's 72 → 80, 64 → 64), so every k step and
    /// n-tile guard, tile stride and fragment address offset is a constant (no branch per mma pair, the ldmatrix
    /// reads scheduled ahead of the products); else (Dh + 15) & ~15 at run time.
    template <int DMAX, bool WHOLE>
    __device__ __forceinline__ int tc_width(int d) { return WHOLE ? DMAX : (d + 15) & ~15; }

    /// Row-major bf16 pairs: dst[r·stride + w] = (src[r][2w], src[r][2w + 1]) for r < 64, w < words ≤ DMAX/2;
    /// zeros for rows r ≥ rows_left and columns ≥ cols (the padding of cols up to 2·words). The index splits by
    /// the constant DMAX/2 (no division instruction), and an even `cols` from an 8-byte-aligned `src` loads each
    /// pair as one float2. Each thread owns DMAX/4 pairs (i = threadIdx.x + j·TC_THREADS) and issues TC_BATCH loads
    /// before the first pack, so that many reads are in flight at once (a global tile is a few round trips, not
    /// DMAX/4 of them).
    template <int DMAX>
    __device__ __forceinline__ void tc_load_rows(u32* dst, const float* src, i64 rows_left, int cols, int words, int stride, i64 rs) {
        const bool pairs = ((cols | rs) & 1) == 0 && ((u64)src & 7) == 0;
        #pragma unroll 1
        for (int j0 = 0; j0 < DMAX / 4; j0 += TC_BATCH) {
            float lo[TC_BATCH], hi[TC_BATCH];
            #pragma unroll
            for (int u = 0; u < TC_BATCH; u++) {
                const int i = threadIdx.x + (j0 + u) * TC_THREADS;
                const int r = i / (DMAX / 2), w = i - r * (DMAX / 2), c = 2 * w;
                lo[u] = 0.0f; hi[u] = 0.0f;
                if (w < words && r < rows_left && c < cols) {
                    const float* p = src + (i64)r * rs + c;
                    if (pairs) {
                        const haste_f2 x = *(const haste_f2*)p;
                        lo[u] = x.x; hi[u] = x.y;
                    } else {
                        lo[u] = p[0];
                        if (c + 1 < cols) hi[u] = p[1];
                    }
                }
            }
            #pragma unroll
            for (int u = 0; u < TC_BATCH; u++) {
                const int i = threadIdx.x + (j0 + u) * TC_THREADS;
                const int r = i / (DMAX / 2), w = i - r * (DMAX / 2);
                if (w < words) dst[r * stride + w] = haste_pack_bf16x2(lo[u], hi[u]);
            }
        }
    }

    /// The same from bf16 operands (Autocast's head splits of a bf16 qkv): each pair of bf16 elements is already a
    /// packed word (one 4-byte read where `cols` is even and `src` 4-byte aligned).
    template <int DMAX>
    __device__ __forceinline__ void tc_load_rows(u32* dst, const u16* src, i64 rows_left, int cols, int words, int stride, i64 rs) {
        const bool pairs = ((cols | rs) & 1) == 0 && ((u64)src & 3) == 0;
        #pragma unroll 1
        for (int j0 = 0; j0 < DMAX / 4; j0 += TC_BATCH) {
            u32 pw[TC_BATCH];
            #pragma unroll
            for (int u = 0; u < TC_BATCH; u++) {
                const int i = threadIdx.x + (j0 + u) * TC_THREADS;
                const int r = i / (DMAX / 2), w = i - r * (DMAX / 2), c = 2 * w;
                pw[u] = 0u;
                if (w < words && r < rows_left && c < cols) {
                    const u16* p = src + (i64)r * rs + c;
                    if (pairs) pw[u] = *(const u32*)p;
                    else pw[u] = (u32)p[0] | (c + 1 < cols ? (u32)p[1] << 16 : 0u);
                }
            }
            #pragma unroll
            for (int u = 0; u < TC_BATCH; u++) {
                const int i = threadIdx.x + (j0 + u) * TC_THREADS;
                const int r = i / (DMAX / 2), w = i - r * (DMAX / 2);
                if (w < words) dst[r * stride + w] = pw[u];
            }
        }
    }

    /// Starts the asynchronous copy (cp.async, `haste_cp_async<16>`) of rows [0, min(64, rows_left)) of `src`, `cols`
    /// elements (float32 or bf16) each, into `stage` with the same dense layout: one contiguous run of 16-byte pieces
    /// (cols·sizeof(T) % 16 == 0 and a 16-byte-aligned `src`: the host checks). The data may be read only after
    /// `haste_cp_async_wait_all` and a barrier.
    template <typename T>
    __device__ __forceinline__ void tc_stage_rows(T* stage, const T* src, i64 rows_left, int cols) {
        const int per = 16 / (int)sizeof(T);
        const int rows = rows_left < 64 ? (int)rows_left : 64, pieces = rows * cols / per;
        #pragma unroll 1
        for (int i = threadIdx.x; i < pieces; i += TC_THREADS) haste_cp_async<16>(stage + per * i, src + per * i);
    }

    /// Starts the copy of head b's key tile at c0 (K and V) into the stage (tc_stage_rows).
    template <typename T>
    __device__ __forceinline__ void tc_stage_kv(T* SK, T* SV, const T* k, const T* v, i64 b, i64 tk, i64 c0, int dh, int dv) {
        tc_stage_rows(SK, k + (b * tk + c0) * dh, tk - c0, dh);
        tc_stage_rows(SV, v + (b * tk + c0) * dv, tk - c0, dv);
    }

    /// The forward's and dq's walk over key tiles: head b's tile at c0 into the pair tiles Ks, Vs (from global
    /// memory, or ASYNC from the stage, which then starts on the next tile while this one's products run), between
    /// a barrier after the previous tile's readers and one before this tile's.
    template <int DMAX, bool ASYNC, typename T>
    __device__ __forceinline__ void tc_key_tile(u32* Ks, u32* Vs, T* SK, T* SV, const T* k, const T* v,
                                                i64 b, i64 tk, i64 c0, int dh, int dv, int sq, int sv) {
        if (ASYNC) haste_cp_async_wait_all();   // this thread's pieces of the key tile have landed
        __syncthreads();                        // everyone's have; the previous key tile's readers are done
        tc_load_rows<DMAX>(Ks, ASYNC ? SK : k + (b * tk + c0) * dh, tk - c0, dh, sq - 4, sq, dh);
        tc_load_rows<DMAX>(Vs, ASYNC ? SV : v + (b * tk + c0) * dv, tk - c0, dv, sv - 4, sv, dv);
        __syncthreads();
        if (ASYNC && c0 + 64 < tk) tc_stage_kv(SK, SV, k, v, b, tk, c0 + 64, dh, dv);
    }

    /// Starts the asynchronous copy of 64 rows' lse and D (rows r0…r0+63 of head b; rows past tq get lse = +∞,
    /// D = 0, stored at once) into L and D: dk/dv's per-query-tile statistics, one tile ahead.
    __device__ __forceinline__ void tc_stage_stats(float* L, float* D, const float* lse, const float* delta, i64 row0, i64 rows_left) {
        const int i = threadIdx.x;
        if (i >= 64) return;
        if (i < rows_left) {
            haste_cp_async<4>(L + i, lse + row0 + i);
            haste_cp_async<4>(D + i, delta + row0 + i);
        } else {
            L[i] = INFINITY; D[i] = 0.0f;
        }
    }

    /// DIRECT (bf16 operands, cols a multiple of 8, 16-byte-aligned rows): starts the cp.async copy of rows
    /// [0, min(64, rows_left)) of `src` straight into the pair tile `dst` (row stride `stride` words: a bf16 pair is
    /// a word as it lies in memory, so the copy is the packing) in 16-byte pieces; rows past rows_left are zeroed
    /// here. The padding words [cols/2, stride − 4) were zeroed once by tc_zero_padding and are never written again.
    /// The data may be read only after `haste_cp_async_wait_all` and a barrier.
    __device__ __forceinline__ void tc_issue_rows(u32* dst, const u16* src, i64 rows_left, int cols, int stride, i64 rs) {
        const int per = cols >> 3, rows = rows_left < 64 ? (int)rows_left : 64;   // 16-byte pieces per row
        int r = threadIdx.x / per, p = threadIdx.x - r * per;
        const int dr = TC_THREADS / per, dp = TC_THREADS - dr * per;               // a thread's step, in rows and pieces
        #pragma unroll 1
        for (int i = threadIdx.x; i < 64 * per; i += TC_THREADS) {
            u32* d = dst + r * stride + 4 * p;
            if (r < rows) haste_cp_async<16>(d, src + (i64)r * rs + 8 * p);
            else { d[0] = 0u; d[1] = 0u; d[2] = 0u; d[3] = 0u; }
            r += dr; p += dp;
            if (p >= per) { p -= per; r++; }
        }
    }

    /// DIRECT: zeros words [cols/2, kcols/2) of the 64 rows of a pair tile (the padding of cols up to kcols, a
    /// multiple of 16, which the mma fragments read): once per block, for each tile buffer cp.async fills.
    __device__ __forceinline__ void tc_zero_padding(u32* tile, int cols, int kcols, int stride) {
        const int w0 = cols >> 1, n = (kcols >> 1) - w0;
        for (int i = threadIdx.x; i < 64 * n; i += TC_THREADS) {
            const int r = i / n;
            tile[r * stride + w0 + i - r * n] = 0u;
        }
    }

    /// DIRECT: tc_zero_padding of both buffers of two streamed pair tiles, A (cols dh padded to kh, stride sa) and B
    /// (dv to kv, sb).
    __device__ __forceinline__ void tc_zero_paddings(u32* A0, u32* A1, u32* B0, u32* B1, int dh, int dv, int kh, int kv, int sa, int sb) {
        tc_zero_padding(A0, dh, kh, sa); tc_zero_padding(A1, dh, kh, sa);
        tc_zero_padding(B0, dv, kv, sb); tc_zero_padding(B1, dv, kv, sb);
    }

    /// The forward's and dq's first key tile of head b (rows kb, vb; strides ks, vs): started by cp.async into K0, V0
    /// (DIRECT) or into the stage (ASYNC); the synchronous kernels load it in tc_key_tile.
    template <bool ASYNC, bool DIRECT, typename T>
    __device__ __forceinline__ void tc_first_key_tile(u32* K0, u32* V0, T* SK, T* SV, const T* kb, const T* vb, i64 ks, i64 vs,
                                                      const T* k, const T* v, i64 b, i64 tk, int dh, int dv, int sq, int sv) {
        if constexpr (DIRECT) {
            tc_issue_rows(K0, kb, tk, dh, sq, ks);
            tc_issue_rows(V0, vb, tk, dv, sv, vs);
        } else if (ASYNC) {
            tc_stage_kv(SK, SV, k, v, b, tk, 0, dh, dv);
        }
    }

    /// DIRECT: the forward's and dq's walk over key tiles, double-buffered: waits for head b's key tile at c0 (in
    /// buffer (c0/64) & 1: K0, V0 or K1, V1), and after the barrier (which also ends every thread's reads of the
    /// other buffer, the previous tile) starts the next tile's copy into that one. Kc, Vc: this tile's buffers.
    __device__ __forceinline__ void tc_key_tile_direct(u32*& Kc, u32*& Vc, u32* K0, u32* V0, u32* K1, u32* V1,
                                                       const u16* kb, const u16* vb, i64 ks, i64 vs, i64 tk, i64 c0,
                                                       int dh, int dv, int sq, int sv) {
        haste_cp_async_wait_all();
        __syncthreads();
        const bool odd = ((c0 >> 6) & 1) != 0;
        Kc = odd ? K1 : K0; Vc = odd ? V1 : V0;
        if (c0 + 64 < tk) {
            tc_issue_rows(odd ? K0 : K1, kb + (c0 + 64) * ks, tk - c0 - 64, dh, sq, ks);
            tc_issue_rows(odd ? V0 : V1, vb + (c0 + 64) * vs, tk - c0 - 64, dv, sv, vs);
        }
    }

    /// acc[mt][nt] (8 n-tiles = 64 columns) = A·Bᵀ over k < 16·ksteps: A rows m0 + 16·mt… of row-major `a` (MT
    /// m-tiles of 16 rows), B's columns the 64 rows of row-major `b` (S = Q·Kᵀ, dP = dO·Vᵀ and their transposes).
    /// Fragments by ldmatrix.x4: A's four 8 × 8 pieces (rows m0 + 16·mt + 8·(i&1), pair columns 8·kk + 4·(i>>1)) in
    /// one, B's two k halves of two n-tiles in another (the layout of haste_mma_bf16_16816), read once for all MT
    /// m-tiles: with MT = 2 a warp reads B once per 32 rows, half the shared-memory traffic per mma.
    template <int KMAX, int MT>
    __device__ __forceinline__ void tc_dots_m(float (*acc)[8][4], const u32* a, int sa, int m0, const u32* b, int sb, int ksteps) {
        const int lane = threadIdx.x & 31, i = lane >> 3, r = lane & 7;
        #pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            #pragma unroll
            for (int nt = 0; nt < 8; nt++) { acc[mt][nt][0] = 0.0f; acc[mt][nt][1] = 0.0f; acc[mt][nt][2] = 0.0f; acc[mt][nt][3] = 0.0f; }
        }
        #pragma unroll
        for (int kk = 0; kk < KMAX / 16; kk++) {
            if (kk < ksteps) {
                u32 fa[MT][4];
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) haste_ldmatrix_x4(fa[mt], a + (m0 + 16 * mt + r + 8 * (i & 1)) * sa + 8 * kk + 4 * (i >> 1));
                #pragma unroll
                for (int nt = 0; nt < 8; nt += 2) {
                    u32 fb[4];
                    haste_ldmatrix_x4(fb, b + (8 * nt + r + 8 * (i >> 1)) * sb + 8 * kk + 4 * (i & 1));
                    #pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        haste_mma_bf16_16816(acc[mt][nt], fa[mt], fb, acc[mt][nt]);
                        haste_mma_bf16_16816(acc[mt][nt + 1], fa[mt], fb + 2, acc[mt][nt + 1]);
                    }
                }
            }
        }
    }

    /// tc_dots_m of one m-tile: acc[nt] for A rows m0…m0 + 15.
    template <int KMAX>
    __device__ __forceinline__ void tc_dots(float (*acc)[4], const u32* a, int sa, int m0, const u32* b, int sb, int ksteps) {
        tc_dots_m<KMAX, 1>(reinterpret_cast<float (*)[8][4]>(acc), a, sa, m0, b, sb, ksteps);
    }

    /// acc[mt][nt] += A_mt·B for one k step of 16 (kk): A's fragments `fa[mt]`, B[k][n] = the row-major pair tile
    /// `b` (stride sb; n-tiles nt < ntiles, an even count), its fragments by ldmatrix.x4.trans (the k halves of two
    /// n-tiles at once, read once for the MT m-tiles): no transposed copy of the tile.
    template <int NMAX, int MT>
    __device__ __forceinline__ void tc_mma_rows(float (*acc)[NMAX / 8][4], const u32 (*fa)[4], const u32* b, int sb, int kk, int ntiles) {
        const int lane = threadIdx.x & 31, i = lane >> 3, r = lane & 7;
        #pragma unroll
        for (int nt = 0; nt < NMAX / 8; nt += 2) {
            if (nt < ntiles) {
                u32 fb[4];
                haste_ldmatrix_x4<true>(fb, b + (16 * kk + r + 8 * (i & 1)) * sb + 4 * (nt + (i >> 1)));
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    haste_mma_bf16_16816(acc[mt][nt], fa[mt], fb, acc[mt][nt]);
                    haste_mma_bf16_16816(acc[mt][nt + 1], fa[mt], fb + 2, acc[mt][nt + 1]);
                }
            }
        }
    }

    /// acc[mt][nt] += bf16(W_mt)·B over the tile's 64 k rows: W_mt the 16×64 float32 accumulator fragments `w[mt]`
    /// (rounded to bf16 here), B as in tc_mma_rows.
    template <int NMAX, int MT>
    __device__ __forceinline__ void tc_accumulate_m(float (*acc)[NMAX / 8][4], float (*w)[8][4], const u32* b, int sb, int ntiles) {
        #pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            u32 fa[MT][4];
            #pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                fa[mt][0] = haste_pack_bf16x2(w[mt][2 * kk][0], w[mt][2 * kk][1]);
                fa[mt][1] = haste_pack_bf16x2(w[mt][2 * kk][2], w[mt][2 * kk][3]);
                fa[mt][2] = haste_pack_bf16x2(w[mt][2 * kk + 1][0], w[mt][2 * kk + 1][1]);
                fa[mt][3] = haste_pack_bf16x2(w[mt][2 * kk + 1][2], w[mt][2 * kk + 1][3]);
            }
            tc_mma_rows<NMAX, MT>(acc, fa, b, sb, kk, ntiles);
        }
    }

    /// tc_accumulate_m of one m-tile.
    template <int NMAX>
    __device__ __forceinline__ void tc_accumulate(float (*acc)[4], float (*w)[4], const u32* b, int sb, int ntiles) {
        tc_accumulate_m<NMAX, 1>(reinterpret_cast<float (*)[NMAX / 8][4]>(acc), reinterpret_cast<float (*)[8][4]>(w), b, sb, ntiles);
    }

    /// acc[nt] += A·B over 64 k rows with A[m][k] = at[k][m0 + m]: `at` a 64 × 64 bf16 tile stored k-major (stride
    /// 36 words), A's fragments transposed by ldmatrix.x4.trans (dq's dS from dk/dv's dSᵀ); B as in tc_mma_rows.
    template <int NMAX>
    __device__ __forceinline__ void tc_accumulate_t(float (*acc)[4], const u32* at, int m0, const u32* b, int sb, int ntiles) {
        const int lane = threadIdx.x & 31, i = lane >> 3, r = lane & 7;
        #pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            u32 fa[4];
            haste_ldmatrix_x4<true>(fa, at + (16 * kk + r + 8 * (i >> 1)) * 36 + (m0 + 8 * (i & 1)) / 2);
            tc_mma_rows<NMAX, 1>(reinterpret_cast<float (*)[NMAX / 8][4]>(acc), &fa, b, sb, kk, ntiles);
        }
    }

    /// A lane's two adjacent results (columns c, c + 1) in one store: a float2, or two bf16 as one word (each
    /// rounded as `haste_st` rounds it).
    __device__ __forceinline__ void tc_st2(float* p, float a, float b) { *(haste_f2*)p = haste_f2{a, b}; }
    __device__ __forceinline__ void tc_st2(u16* p, float a, float b) {
        *(u32*)p = (u32)haste_float_to_bf16(a) | ((u32)haste_float_to_bf16(b) << 16);
    }

    /// Stores rows (row0 + g, row0 + g + 8) of the accumulator tiles times `mul`, columns < cols, rows < rows, as
    /// float32 or (bf16 gradients of the `_in16_` families) rounded to bf16; a lane's column pair as one store
    /// where cols and the row stride are even and `dst` is aligned for it (the flash outputs and dq's partials).
    template <int NMAX, typename TO>
    __device__ __forceinline__ void tc_store(TO* dst, float (*acc)[4], i64 row0, i64 rows, int cols, const float* mul, i64 rs) {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        const bool pairs = ((cols | rs) & 1) == 0 && ((u64)dst & (2 * sizeof(TO) - 1)) == 0;
        #pragma unroll
        for (int h = 0; h < 2; h++) {
            const i64 r = row0 + g + 8 * h;
            if (r >= rows) continue;
            #pragma unroll
            for (int nt = 0; nt < NMAX / 8; nt++) {
                const int c = 8 * nt + 2 * t;
                if (pairs) {
                    if (c < cols) tc_st2(dst + r * rs + c, acc[nt][2 * h] * mul[h], acc[nt][2 * h + 1] * mul[h]);
                } else {
                    #pragma unroll
                    for (int e = 0; e < 2; e++) {
                        if (c + e < cols) haste_st(dst, r * rs + c + e, acc[nt][2 * h + e] * mul[h]);
                    }
                }
            }
        }
    }
    """#
}
