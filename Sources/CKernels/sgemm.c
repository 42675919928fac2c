// haste's float32 GEMM for AVX-512F CPUs (BLIS / GotoBLAS layout). C = alpha·op(A)·op(B) + beta·C, row-major.
//
// Blocking: op(B) rows [k0, k0+kc) are packed into NR-wide column panels (kc × NR, zero-padded), op(A) rows into
// MR-high panels (MR × kc per MC block, zero-padded); the micro-kernel keeps an 8 × 48 tile of C in 24 zmm
// registers, loads three vectors of B and broadcasts eight values of A per k (11 loads per 24 FMAs: the FMA ports,
// not the loads, set the pace). A tile row of Ã (8 × kc, in L1) runs across CW columns of B̃ (kc × CW, in L2)
// before the next tile row. Every element of C is one chain of fused multiply-adds
// over k in increasing order, restarted at each block of haste_sgemm_kc_step(K) rows (a function of K alone) and added to C as fma(alpha, acc,
// beta·C): the same operations whatever the tile, the edge masks or the split of M and N between threads, so the
// result never depends on the thread count.
#include "CKernels.h"
#include <immintrin.h>
#include "lanes.h"
#include <stdlib.h>
#include <string.h>

#define NR HASTE_SGEMM_NR
#define KC HASTE_SGEMM_KC
#define MC HASTE_SGEMM_MC

// Per-thread scratch, grown on demand, 64-byte aligned, kept for the thread's life.
static float *scratch(float **p, size_t *cap, size_t floats) {
    if (*cap < floats || !*p) {
        free(*p);
        size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        *p = aligned_alloc(64, bytes ? bytes : 64);
        *cap = *p ? floats : 0;
    }
    return *p;
}

// Slots for callers that run whole products inside pool tasks (CPUAttentionPerHead.swift's workspaces).
static _Thread_local float *thread_scratch[4];
static _Thread_local size_t thread_scratch_cap[4];

float *haste_thread_scratch_f32(int slot, size_t floats) {
    return slot < 0 || slot >= 4 ? NULL : scratch(&thread_scratch[slot], &thread_scratch_cap[slot], floats);
}

#if defined(__x86_64__)

// Packed A, and packed B for the single-threaded entry.
static _Thread_local float *scratch_a, *scratch_b;
static _Thread_local size_t scratch_a_cap, scratch_b_cap;

size_t haste_sgemm_packed_b_floats(long kc, long n) { return (size_t)kc * (size_t)((n + NR - 1) / NR * NR); }

long haste_sgemm_kc_step(long k) {
    if (k <= KC) return k < 1 ? 1 : k;
    long blocks = (k + KC - 1) / KC, step = ((k + blocks - 1) / blocks + 15) / 16 * 16;
    return step < KC ? step : KC;
}


/// 16 × 16 transpose in registers: r[q] lane t → r[t] lane q.
__attribute__((target("avx512f")))
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int q = 0; q < 16; q += 2) {
        t[q] = _mm512_unpacklo_ps(r[q], r[q + 1]);
        t[q + 1] = _mm512_unpackhi_ps(r[q], r[q + 1]);
    }
    for (int q = 0; q < 16; q += 4) {
        r[q] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
        r[q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
        r[q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
        r[q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
    }
    // r[4g + s] holds, in 128-bit lane L, column 4L + s of rows 4g..4g+3
    for (int q = 0; q < 8; q++) {
        int g = q / 4 * 8 + q % 4;    // pairs (0,4) (1,5) (2,6) (3,7) (8,12) ...
        t[g] = _mm512_shuffle_f32x4(r[g], r[g + 4], 0x88);
        t[g + 4] = _mm512_shuffle_f32x4(r[g], r[g + 4], 0xDD);
    }
    for (int q = 0; q < 8; q++) {
        int g = q;                     // pairs (0,8) ... (7,15)
        r[g] = _mm512_shuffle_f32x4(t[g], t[g + 8], 0x88);
        r[g + 8] = _mm512_shuffle_f32x4(t[g], t[g + 8], 0xDD);
    }
}

__attribute__((target("avx512f")))
void haste_sgemm_pack_b(int trans_b, const float *b, long ldb, long k0, long kc, long j0, long j1, float *dst) {
    if (j1 <= j0) return;
    if (!trans_b) {        // op(B)[p][j] = b[p·ldb + j]: row p's columns [j0, j1) are contiguous
        // Row by row across every panel (one sequential stream, the row 4 ahead prefetched) rather than panel by
        // panel down the rows (a stride of ldb): a cold 2304 × 768 B̃ in blocks of 256 rows packs in 0.46–0.52 ms
        // against 0.64–0.75 ms (1 thread, AMD EPYC Zen 4). The same stores, so the same B̃. (Prefetches may point
        // past the end of b, here and below: a prefetch never faults.)
        const long panels = (j1 - j0 + NR - 1) / NR, lastW = j1 - j0 - (panels - 1) * NR;
        const __mmask16 l0 = haste_lanes16(lastW), l1 = haste_lanes16(lastW - 16), l2 = haste_lanes16(lastW - 32);
        for (long p = 0; p < kc; p++) {
            const float *s = b + (k0 + p) * ldb + j0;
            const char *ahead = (const char *)(s + 4 * ldb);
            for (int l = 0; l < 4; l++) _mm_prefetch(ahead + 64 * l, _MM_HINT_T0);
            float *d = dst + p * NR;
            long q = 0;
            for (; q + 1 < panels; q++, s += NR, d += kc * NR) {
                _mm512_store_ps(d, _mm512_loadu_ps(s));
                _mm512_store_ps(d + 16, _mm512_loadu_ps(s + 16));
                _mm512_store_ps(d + 32, _mm512_loadu_ps(s + 32));
            }
            _mm512_store_ps(d, _mm512_maskz_loadu_ps(l0, s));
            _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(l1, s + 16));
            _mm512_store_ps(d + 32, _mm512_maskz_loadu_ps(l2, s + 32));
        }
        return;
    }
    // op(B)[p][j] = b[j·ldb + p]: a transpose, 16 × 16 blocks through registers. Each 16 rows of b run through all
    // of the block's k before the next 16 (16 sequential streams, not NR, each prefetched 64 floats ahead): a cold
    // 768 × 2304 B̃ (a SiT-B/2 qkv weight, three blocks of 256) packs in 0.77 ms against 1.35 ms with k outermost
    // (1 thread, AMD EPYC Zen 4).
    for (long j = j0; j < j1; j += NR) {
        long w = j1 - j < NR ? j1 - j : NR;
        float *d = dst + (j - j0) / NR * kc * NR;
        const long full = w == NR ? kc / 16 * 16 : 0;
        for (int h = 0; full && h < NR / 16; h++) {
            const float *rows = b + (j + h * 16) * ldb + k0;
            for (long p = 0; p < full; p += 16) {
                __m512 r[16];
                for (int q = 0; q < 16; q++) _mm_prefetch((const char *)(rows + q * ldb + p + 64), _MM_HINT_T0);
                for (int q = 0; q < 16; q++) r[q] = _mm512_loadu_ps(rows + q * ldb + p);
                transpose16(r);
                for (int q = 0; q < 16; q++) _mm512_store_ps(d + (p + q) * NR + h * 16, r[q]);    // r[q]: column q
            }
        }
        for (long p = full; p < kc; p++) {
            for (long c = 0; c < NR; c++) d[p * NR + c] = c < w ? b[(j + c) * ldb + k0 + p] : 0.0f;
        }
    }
}

/// 8 × 16 transpose in registers for 8-high panels: r[q] (row q, k = p..p+15) → r[u] = k = p+2u then p+2u+1, each
/// as rows 0..7 (the panel layout [k][row], two k per vector). 32 shuffles against transpose16's 64 on 8 zero rows.
__attribute__((target("avx512f")))
static inline void transpose8x16(__m512 r[8]) {
    __m512 t[8], u[8], w[8];
    for (int q = 0; q < 8; q += 2) {    // t[q] lane L: r_q[4L], r_q+1[4L], r_q[4L+1], r_q+1[4L+1]; t[q+1]: 4L+2, 4L+3
        t[q] = _mm512_unpacklo_ps(r[q], r[q + 1]);
        t[q + 1] = _mm512_unpackhi_ps(r[q], r[q + 1]);
    }
    for (int g = 0; g < 2; g++) {       // u[4g + c] lane L: column 4L + c of rows 4g..4g+3
        __m512d a0 = _mm512_castps_pd(t[4 * g]), a1 = _mm512_castps_pd(t[4 * g + 1]);
        __m512d b0 = _mm512_castps_pd(t[4 * g + 2]), b1 = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
    }
    for (int c = 0; c < 4; c++) {       // w[c]: lanes 0, 1 of u[c] then of u[4+c]; w[4+c]: lanes 2, 3
        w[c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        w[4 + c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    }
    for (int h = 0; h < 2; h++) {       // r[u]: column 2u (rows 0-3, 4-7) then 2u + 1: L = u / 2, c = 2 · (u % 2)
        r[4 * h] = _mm512_shuffle_f32x4(w[4 * h], w[4 * h + 1], 0x88);
        r[4 * h + 2] = _mm512_shuffle_f32x4(w[4 * h], w[4 * h + 1], 0xDD);
        r[4 * h + 1] = _mm512_shuffle_f32x4(w[4 * h + 2], w[4 * h + 3], 0x88);
        r[4 * h + 3] = _mm512_shuffle_f32x4(w[4 * h + 2], w[4 * h + 3], 0xDD);
    }
}

_Static_assert(HASTE_SGEMM_MR == 8, "pack_a and the micro-kernels are written for 8-high panels of A");

/// op(A) rows [i0, i0+mc), columns [k0, k0+kc) into 8-high panels [p][r] (HASTE_SGEMM_MR), rows past mc zero.
__attribute__((target("avx512f")))
static void pack_a(int trans_a, const float *a, long lda, long k0, long kc, long i0, long mc, float *dst) {
    const long panel = 8 * kc;
    if (trans_a) {         // op(A)[i][p] = a[p·lda + i]: two panels at a time, 16 values of row k0 + p a load
        for (long i = 0; i < mc; i += 16, dst += 2 * panel) {
            const __mmask16 m = haste_lanes16(mc - i);
            const float *s = a + k0 * lda + i0 + i;
            float *d = dst;
            if (i + 8 < mc) {
                for (long p = 0; p < kc; p++, s += lda, d += 8) {
                    __m512 v = _mm512_maskz_loadu_ps(m, s);
                    _mm256_storeu_ps(d, _mm512_castps512_ps256(v));
                    _mm256_storeu_pd((double *)(d + panel), _mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
                }
            } else {
                for (long p = 0; p < kc; p++, s += lda, d += 8) _mm256_storeu_ps(d, _mm512_castps512_ps256(_mm512_maskz_loadu_ps(m, s)));
            }
        }
        return;
    }
    for (long i = 0; i < mc; i += 8, dst += panel) {   // op(A)[i][p] = a[i·lda + p]: 16 k at a time through registers
        const long h = mc - i < 8 ? mc - i : 8;
        const float *s = a + (i0 + i) * lda + k0;
        long p = 0;
        for (; p + 16 <= kc; p += 16) {
            __m512 r[8];
            for (int q = 0; q < 8; q++) r[q] = q < h ? _mm512_loadu_ps(s + q * lda + p) : _mm512_setzero_ps();
            transpose8x16(r);   // r[u]: k = p + 2u, p + 2u + 1 of the panel's rows
            for (int u = 0; u < 8; u++) _mm512_storeu_ps(dst + (p + 2 * u) * 8, r[u]);
        }
        for (; p < kc; p++) {
            for (long r = 0; r < 8; r++) dst[p * 8 + r] = r < h ? s[r * lda + p] : 0.0f;
        }
    }
}

// One register tile row r of NV vectors (NV = 3: the 8 × 48 tile; 2 and 1 for a last panel of ≤ 32 or ≤ 16
// columns, which would otherwise multiply zero padding).
#define ACC_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps(), c##r##2 = _mm512_setzero_ps();
#define ACC_FMA(r) { __m512 av = _mm512_set1_ps(ap[r]);                                                \
        c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                                                  \
        if (NV > 1) c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                                      \
        if (NV > 2) c##r##2 = _mm512_fmadd_ps(av, b2, c##r##2); }
#define ACC_STORE1(r, q, m) if (q < NV) {                                                             \
        if (bias) _mm512_mask_storeu_ps(cr + 16 * q, m, _mm512_fmadd_ps(va, c##r##q, _mm512_maskz_loadu_ps(m, bias + 16 * q))); \
        else if (beta == 0.0f) _mm512_mask_storeu_ps(cr + 16 * q, m, _mm512_mul_ps(va, c##r##q));     \
        else _mm512_mask_storeu_ps(cr + 16 * q, m, _mm512_fmadd_ps(va, c##r##q, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, cr + 16 * q)))); }
#define ACC_STORE(r) if (r < mr) { float *cr = c + r * ldc; ACC_STORE1(r, 0, m0) ACC_STORE1(r, 1, m1) ACC_STORE1(r, 2, m2) }
#define PREFETCH_C(r) if (r < mr) { const char *cr = (const char *)(c + r * ldc);                  \
        _mm_prefetch(cr, _MM_HINT_T0); if (NV > 1) _mm_prefetch(cr + 64, _MM_HINT_T0);              \
        if (NV > 2) _mm_prefetch(cr + 128, _MM_HINT_T0); }
#define ALL_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/// C tile (mr ≤ 8 rows, NV·16 columns masked by m0/m1/m2) = alpha · Ã·B̃ + beta · C, Ã in 8-high panels, B̃ in
/// NR-wide panels (the first NV vectors of each row read); with `bias` (the tile's first column's entry; beta is 0)
/// fma(alpha, Ã·B̃, bias) instead: the bits of fma(alpha, Ã·B̃, 1 · C) on a C holding the bias.
#define KERNEL(NAME, NVEC)                                                                            \
__attribute__((target("avx512f")))                                                                  \
static void NAME(long kc, const float *ap, const float *bp, float *c, long ldc, long mr, __mmask16 m0, \
                 __mmask16 m1, __mmask16 m2, float alpha, float beta, const float *bias) {          \
    enum { NV = NVEC };                                                                             \
    ALL_ROWS(ACC_DECL)                                                                              \
    ALL_ROWS(PREFETCH_C)    /* the tile of C reaches L1 while the k loop runs */                    \
    for (long p = 0; p < kc; p++, ap += HASTE_SGEMM_MR, bp += NR) {                                 \
        __m512 b0 = _mm512_load_ps(bp);                                                             \
        __m512 b1 = NV > 1 ? _mm512_load_ps(bp + 16) : b0, b2 = NV > 2 ? _mm512_load_ps(bp + 32) : b0; \
        ALL_ROWS(ACC_FMA)                                                                           \
    }                                                                                               \
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);                             \
    ALL_ROWS(ACC_STORE)                                                                             \
}
KERNEL(kernel8x48, 3)
KERNEL(kernel8x32, 2)
KERNEL(kernel8x16, 1)

/// The tile for a panel whose first w columns are C's: the narrowest of 16, 32 and 48 columns that covers them.
__attribute__((target("avx512f")))
static inline void tile(long kc, const float *ap, const float *bp, float *c, long ldc, long mr, long w, float alpha,
                        float beta, const float *bias) {
    const __mmask16 m0 = haste_lanes16(w), m1 = haste_lanes16(w - 16), m2 = haste_lanes16(w - 32);
    if (w >= 33) kernel8x48(kc, ap, bp, c, ldc, mr, m0, m1, m2, alpha, beta, bias);
    else if (w >= 17) kernel8x32(kc, ap, bp, c, ldc, mr, m0, m1, 0, alpha, beta, bias);
    else kernel8x16(kc, ap, bp, c, ldc, mr, m0, 0, 0, alpha, beta, bias);
}

__attribute__((target("avx512f")))
void haste_sgemm_block(int trans_a, const float *a, long lda, long k0, long kc, long i0, long i1,
                       const float *packed_b, long j0, long j1, float alpha, float beta, float *c, long ldc,
                       const float *bias) {
    float *ap = scratch(&scratch_a, &scratch_a_cap, (size_t)MC * KC);
    if (!ap) abort();
    for (long i = i0; i < i1; i += MC) {
        long mc = i1 - i < MC ? i1 - i : MC;
        pack_a(trans_a, a, lda, k0, kc, i, mc, ap);
        // Columns of B̃ a tile row of Ã (8 × kc, in L1) runs across before the next tile row. kc ≤ 128: one panel
        // (≤ 24 KiB, it stays in L1 across the tile rows; Winograd's products of k = C channels: conv3x3 128→128 at
        // 256², 2 threads, `haste bench ops`: 217–228 GFLOP/s against 164–197 with CW). Larger kc: CW columns (kc × CW
        // in L2; 1 thread, SiT-B/2 shapes: 130–140 GFLOP/s against 119–131 panel by panel).
        const long span = kc <= 128 ? NR : HASTE_SGEMM_CW;
        for (long jc = j0; jc < j1; jc += span) {
            long je = j1 - jc < span ? j1 : jc + span;
            for (long r = 0; r < mc; r += HASTE_SGEMM_MR) {
                long mr = mc - r < HASTE_SGEMM_MR ? mc - r : HASTE_SGEMM_MR;
                for (long j = jc; j < je; j += NR) {
                    tile(kc, ap + r * kc, packed_b + (j - j0) / NR * kc * NR, c + (i + r) * ldc + j, ldc, mr, j1 - j,
                         alpha, beta, bias ? bias + j : NULL);
                }
            }
        }
    }
}

/// Columns [j0, j1) of C on the calling thread, B packed nc columns at a time (with `conv`: op(B) packed from
/// the image b): a whole product on one thread, or one thread's columns of a split product.
void haste_sgemm_columns(int trans_a, int trans_b, const haste_conv_geometry *conv, long m, long k, float alpha,
                         const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                         long j0, long j1, long nc, const float *bias) {
    long width = j1 - j0 < nc ? j1 - j0 : nc;
    float *bp = scratch(&scratch_b, &scratch_b_cap, haste_sgemm_packed_b_floats(KC, width));
    if (!bp) abort();
    const long step = haste_sgemm_kc_step(k);
    for (long j = j0; j < j1; j += nc) {
        long je = j1 - j < nc ? j1 : j + nc;
        for (long p = 0; p < k; p += step) {
            long kc = k - p < step ? k - p : step;
            if (conv) haste_conv_pack_b(conv, b, p, kc, j, je, bp);
            else haste_sgemm_pack_b(trans_b, b, ldb, p, kc, j, je, bp);
            haste_sgemm_block(trans_a, a, lda, p, kc, 0, m, bp, j, je, alpha, p == 0 ? beta : 1.0f, c, ldc,
                              p == 0 ? bias : NULL);
        }
    }
}

#else

size_t haste_sgemm_packed_b_floats(long kc, long n) { (void)kc; (void)n; return 0; }
long haste_sgemm_kc_step(long k) { return k; }
void haste_sgemm_pack_b(int trans_b, const float *b, long ldb, long k0, long kc, long j0, long j1, float *dst) { abort(); }
void haste_sgemm_block(int trans_a, const float *a, long lda, long k0, long kc, long i0, long i1,
                       const float *packed_b, long j0, long j1, float alpha, float beta, float *c, long ldc,
                       const float *bias) { abort(); }
void haste_sgemm_columns(int trans_a, int trans_b, const haste_conv_geometry *conv, long m, long k, float alpha,
                         const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                         long j0, long j1, long nc, const float *bias) { abort(); }

#endif
