// Implicit-GEMM conv2d for the AVX-512 sgemm (sgemm.c): op(B) is the column matrix of one image, never built.
// Row p of it is (c, i, j) = (p / (kh·kw), p / kw % kh, p % kw), column q the output pixel (q / out_w, q % out_w),
// and the entry x[c][oy·s − pad_h + i][ox·s − pad_w + j], zero in the padding. haste_conv_pack_b writes exactly the
// panels haste_sgemm_pack_b writes from that matrix (the same values, zeros as +0, padding columns zero), so the
// GEMM that follows computes bit for bit what im2col + sgemm computes.
#include "CKernels.h"
#include <immintrin.h>
#include "lanes.h"
#include <stdint.h>
#include <stdlib.h>

#define NR HASTE_SGEMM_NR

#if defined(__x86_64__)


/// One 16-lane part of a panel: output pixels q0 .. q0+count−1 (none when count ≤ 0).
typedef struct {
    __m512i iy, ix, idx;   // per lane: top-left source row and column of the window, and iy·W + ix
    __mmask16 valid;       // lanes < count
    long row_iy, row_ix;   // when every lane lies in one output row and stride is 1 or 2: lane 0's iy, ix
    int one_row;
} half_panel;

__attribute__((target("avx512f")))
static half_panel half(const haste_conv_geometry *g, long q0, long count) {
    half_panel h;
    int32_t iy[16], ix[16];
    for (int t = 0; t < 16; t++) {
        long q = q0 + (t < count ? t : 0), oy = q / g->out_w, ox = q % g->out_w;
        iy[t] = (int32_t)(oy * g->stride - g->pad_h);
        ix[t] = (int32_t)(ox * g->stride - g->pad_w);
    }
    h.iy = _mm512_loadu_si512(iy);
    h.ix = _mm512_loadu_si512(ix);
    h.idx = _mm512_add_epi32(_mm512_mullo_epi32(h.iy, _mm512_set1_epi32((int32_t)g->width)), h.ix);
    h.valid = haste_lanes16(count);
    h.one_row = count > 0 && g->stride <= 2 && (q0 % g->out_w) + count <= g->out_w;
    h.row_iy = iy[0];
    h.row_ix = ix[0];
    return h;
}

/// Row (c, i, j) of the half into d[0..<16].
__attribute__((target("avx512f")))
static inline void pack_half(const haste_conv_geometry *g, const half_panel *h, const float *plane, long i, long j, float *d) {
    const long H = g->height, W = g->width;
    if (h->one_row) {   // one source row: masked loads (masked-off lanes never touch memory)
        long y = h->row_iy + i, x0 = h->row_ix + j;
        if (y < 0 || y >= H) {
            _mm512_store_ps(d, _mm512_setzero_ps());
            return;
        }
        const float *src = (const float *)((uintptr_t)plane + (uintptr_t)((y * W + x0) * (long)sizeof(float)));
        if (g->stride == 1) {
            __mmask16 m = h->valid & haste_lanes16(W - x0) & (__mmask16)~haste_lanes16(-x0);
            _mm512_store_ps(d, _mm512_maskz_loadu_ps(m, src));
        } else {        // stride 2: the 32 floats from src, the even ones kept (lane t ← src[2t])
            __mmask16 m0 = haste_lanes16(W - x0) & (__mmask16)~haste_lanes16(-x0);
            __mmask16 m1 = haste_lanes16(W - x0 - 16) & (__mmask16)~haste_lanes16(-x0 - 16);
            __m512 a = _mm512_maskz_loadu_ps(m0, src), b = _mm512_maskz_loadu_ps(m1, src + 16);
            const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
            _mm512_store_ps(d, _mm512_maskz_permutex2var_ps(h->valid, a, even, b));
        }
        return;
    }
    __m512i y = _mm512_add_epi32(h->iy, _mm512_set1_epi32((int32_t)i));
    __m512i x = _mm512_add_epi32(h->ix, _mm512_set1_epi32((int32_t)j));
    // unsigned compares: a negative coordinate is a huge unsigned one, so one compare tests 0 ≤ v < size
    __mmask16 m = h->valid & _mm512_cmplt_epu32_mask(y, _mm512_set1_epi32((int32_t)H))
                  & _mm512_cmplt_epu32_mask(x, _mm512_set1_epi32((int32_t)W));
    __m512i idx = _mm512_add_epi32(h->idx, _mm512_set1_epi32((int32_t)(i * W + j)));
    _mm512_store_ps(d, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, plane, 4));
}

/// Panels per pass over the kc rows: for one row p the pass reads PB·NR consecutive output pixels (one stretch of an
/// image row when out_w is wide), so the reads stream instead of hopping between kc rows for every panel.
#define PB 8

__attribute__((target("avx512f")))
void haste_conv_pack_b(const haste_conv_geometry *g, const float *x, long k0, long kc, long j0, long j1, float *dst) {
    const long taps = g->kernel_h * g->kernel_w, plane = g->height * g->width;
    enum { PARTS = NR / 16 };    // 16-lane parts of a panel
    half_panel hs[PARTS * PB];
    for (long q0 = j0; q0 < j1; q0 += PB * NR) {
        long panels = (j1 - q0 + NR - 1) / NR < PB ? (j1 - q0 + NR - 1) / NR : PB;
        for (long b = 0; b < panels; b++) {
            long q = q0 + b * NR, w = j1 - q < NR ? j1 - q : NR;
            for (int h = 0; h < PARTS; h++) hs[PARTS * b + h] = half(g, q + 16 * h, w - 16 * h);
        }
        float *base = dst + (q0 - j0) / NR * kc * NR;
        long c = k0 / taps, i = k0 % taps / g->kernel_w, j = k0 % g->kernel_w;
        for (long p = 0; p < kc; p++) {
            const float *src = x + c * plane;
            for (long b = 0; b < panels; b++) {
                float *d = base + b * kc * NR + p * NR;
                for (int h = 0; h < PARTS; h++) {
                    if (hs[PARTS * b + h].valid) pack_half(g, &hs[PARTS * b + h], src, i, j, d + 16 * h);
                    else _mm512_store_ps(d + 16 * h, _mm512_setzero_ps());
                }
            }
            if (++j == g->kernel_w) {
                j = 0;
                if (++i == g->kernel_h) { i = 0; c++; }
            }
        }
    }
}

#else

void haste_conv_pack_b(const haste_conv_geometry *g, const float *x, long k0, long kc, long j0, long j1, float *dst) { abort(); }

#endif
