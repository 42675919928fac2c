// Winograd F(2×2, 3×3) transforms for stride-1 3×3 conv2d forward (float32; Lavin & Gray 2015). The product itself
// is 16 GEMMs on haste's sgemm: M[ξ] (K × T) = U[ξ] (K × C) · V[ξ] (C × T) over the T = ⌈OH/2⌉·⌈OW/2⌉ output tiles,
// 2.25× fewer multiply-adds than the direct product. Transforms (exact constants 1, ½, −1):
//   V = Bᵀ d B  (d: a 4 × 4 input tile, zero in the padding),  Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//   U = G g Gᵀ  (g: a 3 × 3 filter),                           G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//   Y = Aᵀ m A  (m: a 4 × 4 tile of the products, Y: 2 × 2),   Aᵀ = [1 1 1 0; 0 1 −1 −1]
// Each is applied along rows, then along columns, in a fixed order: the result depends on nothing but the inputs.
#include "CKernels.h"
#include <string.h>

#if defined(__x86_64__)
#define WIDE __attribute__((target("avx512f")))   // plain C: the compiler's vectors; called where AVX-512F is
#else
#define WIDE
#endif

/// U[ξ][k][c] (ξ = 4i + j, planes k_count · c_count apart) from w[k][c][3][3], for filters k ∈ [k0, k1).
void haste_winograd_weights(const float *w, long k_count, long c_count, long k0, long k1, float *u) {
    const long plane = k_count * c_count;
    for (long k = k0; k < k1; k++) {
        for (long c = 0; c < c_count; c++) {
            const float *g = w + (k * c_count + c) * 9;
            float t[4][3];   // G g: rows
            for (int j = 0; j < 3; j++) {
                float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
                t[0][j] = g0;
                t[1][j] = (g0 + g1 + g2) * 0.5f;
                t[2][j] = (g0 - g1 + g2) * 0.5f;
                t[3][j] = g2;
            }
            float *d = u + k * c_count + c;
            for (int i = 0; i < 4; i++) {   // (G g) Gᵀ: columns
                float a = t[i][0], b = t[i][1], e = t[i][2];
                d[(4 * i + 0) * plane] = a;
                d[(4 * i + 1) * plane] = (a + b + e) * 0.5f;
                d[(4 * i + 2) * plane] = (a - b + e) * 0.5f;
                d[(4 * i + 3) * plane] = e;
            }
        }
    }
}

/// Tile rows [ty0, ty1) of one channel plane x (h × w) into V[ξ][t] (t = (ty − ty0)·tw + tx; ξ planes `stride`
/// floats apart; t in the sgemm's packed-B panels, `panel` floats apart, so the GEMMs read V without packing it).
/// Tile (ty, tx) reads rows 2ty − pad_h + [0, 4) and columns 2tx − pad_w + [0, 4), zero outside
/// the plane. `row` is scratch of haste_winograd_row_floats(tw) floats. 16 tiles at a time in zmm registers (this
/// file is only called where AVX-512F is).
#if defined(__x86_64__)
#include <immintrin.h>
#include "lanes.h"
/// Stores lanes [0, count) of `val` as tiles t.. of one ξ row in sgemm panels (element t at (t / NR)·panel + t % NR):
/// one masked store, or two where the 16 tiles cross into the next panel.
WIDE static inline void put_tiles(float *plane, long t, long count, long panel, __m512 val) {
    const long q = t / HASTE_SGEMM_NR, o = t % HASTE_SGEMM_NR, first = HASTE_SGEMM_NR - o;
    float *d = plane + q * panel + o;
    if (count <= first) { _mm512_mask_storeu_ps(d, haste_lanes16(count), val); return; }
    _mm512_mask_storeu_ps(d, haste_lanes16(first), val);
    // lanes [first, count) to the next panel's start: lane l lands at (next − first) + l (masked-off lanes never fault)
    _mm512_mask_storeu_ps(plane + (q + 1) * panel - first, (__mmask16)(haste_lanes16(count) & ~haste_lanes16(first)), val);
}

WIDE
void haste_winograd_input(const float *x, long h, long w, long pad_h, long pad_w, long ty0, long ty1, long tw, float *v,
                          long stride, long panel, float *row) {
    const long span = haste_winograd_row_floats(tw) / 4;
    float *r[4] = {row, row + span, row + 2 * span, row + 3 * span};
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (long ty = ty0; ty < ty1; ty++) {
        for (int i = 0; i < 4; i++) {   // the four input rows of this tile row, padded to the tiles' reach
            long y = 2 * ty - pad_h + i;
            long x0 = -pad_w, lo = x0 < 0 ? -x0 : 0, hi = w - x0 < 2 * tw + 2 ? w - x0 : 2 * tw + 2;
            if (y < 0 || y >= h || hi <= lo) { memset(r[i], 0, (size_t)span * sizeof(float)); continue; }
            memset(r[i], 0, (size_t)lo * sizeof(float));   // zero only what the copy leaves: the padding
            memcpy(r[i] + lo, x + y * w + x0 + lo, (size_t)(hi - lo) * sizeof(float));
            memset(r[i] + hi, 0, (size_t)(span - hi) * sizeof(float));
        }
        const long t0 = (ty - ty0) * tw;
        for (long tx = 0; tx < tw; tx += 16) {
            const long count = tw - tx < 16 ? tw - tx : 16;
            __m512 d[4][4];
            for (int i = 0; i < 4; i++) {   // d B along the row: columns 2tx + [0, 4) of 16 tiles
                const float *p = r[i] + 2 * tx;
                __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
                __m512 a2 = _mm512_loadu_ps(p + 2), b2 = _mm512_loadu_ps(p + 18);
                __m512 s0 = _mm512_permutex2var_ps(a, even, b), s1 = _mm512_permutex2var_ps(a, odd, b);
                __m512 s2 = _mm512_permutex2var_ps(a2, even, b2), s3 = _mm512_permutex2var_ps(a2, odd, b2);
                d[i][0] = _mm512_sub_ps(s0, s2);
                d[i][1] = _mm512_add_ps(s1, s2);
                d[i][2] = _mm512_sub_ps(s2, s1);
                d[i][3] = _mm512_sub_ps(s1, s3);
            }
            for (int j = 0; j < 4; j++) {   // Bᵀ (…) down the columns
                put_tiles(v + (0 * 4 + j) * stride, t0 + tx, count, panel, _mm512_sub_ps(d[0][j], d[2][j]));
                put_tiles(v + (1 * 4 + j) * stride, t0 + tx, count, panel, _mm512_add_ps(d[1][j], d[2][j]));
                put_tiles(v + (2 * 4 + j) * stride, t0 + tx, count, panel, _mm512_sub_ps(d[2][j], d[1][j]));
                put_tiles(v + (3 * 4 + j) * stride, t0 + tx, count, panel, _mm512_sub_ps(d[1][j], d[3][j]));
            }
        }
    }
    const long n = (ty1 - ty0) * tw, used = n % HASTE_SGEMM_NR;
    if (used == 0) return;
    for (int xi = 0; xi < 16; xi++) {   // the last panel's columns past the tiles: zero, as haste_sgemm_pack_b pads
        float *d = v + xi * stride + n / HASTE_SGEMM_NR * panel + used;
        memset(d, 0, (size_t)(HASTE_SGEMM_NR - used) * sizeof(float));
    }
}

/// M[ξ][t] of one output channel for tile rows [ty0, ty1) (t = (ty − ty0)·tw + tx, contiguous; ξ planes `stride`
/// floats apart) into y (oh × ow): y = Aᵀ m A, plus *bias (this channel's conv bias) where bias is not NULL.
WIDE
void haste_winograd_output(const float *m, long stride, long ty0, long ty1, long tw, long oh, long ow, const float *bias,
                           float *y) {
    const __m512 vb = _mm512_set1_ps(bias ? *bias : 0.0f);
    const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    for (long ty = ty0; ty < ty1; ty++) {
        for (long tx = 0; tx < tw; tx += 16) {
            const float *s = m + (ty - ty0) * tw + tx;
            long tiles = tw - tx < 16 ? tw - tx : 16;
            __mmask16 mt = haste_lanes16(tiles);
            __m512 q[2][4];
            for (int j = 0; j < 4; j++) {   // Aᵀ m down the columns
                __m512 m0 = _mm512_maskz_loadu_ps(mt, s + (0 * 4 + j) * stride), m1 = _mm512_maskz_loadu_ps(mt, s + (1 * 4 + j) * stride);
                __m512 m2 = _mm512_maskz_loadu_ps(mt, s + (2 * 4 + j) * stride), m3 = _mm512_maskz_loadu_ps(mt, s + (3 * 4 + j) * stride);
                q[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                q[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
            }
            long cols = ow - 2 * tx < 32 ? ow - 2 * tx : 32;   // output columns 2tx + [0, cols)
            __mmask16 c0 = haste_lanes16(cols);
            __mmask16 c1 = haste_lanes16(cols - 16);
            for (int a = 0; a < 2; a++) {   // (…) A along the rows, the two columns of each tile interleaved
                long oy = 2 * ty + a;
                if (oy >= oh) break;
                __m512 r0 = _mm512_add_ps(_mm512_add_ps(q[a][0], q[a][1]), q[a][2]);
                __m512 r1 = _mm512_sub_ps(_mm512_sub_ps(q[a][1], q[a][2]), q[a][3]);
                __m512 lo = _mm512_permutex2var_ps(r0, lo_idx, r1), hi = _mm512_permutex2var_ps(r0, hi_idx, r1);
                float *d = y + oy * ow + 2 * tx;
                if (bias) {   // bias + product: the bits of adding the product to a y prefilled with the bias
                    lo = _mm512_add_ps(vb, lo);
                    hi = _mm512_add_ps(vb, hi);
                }
                _mm512_mask_storeu_ps(d, c0, lo);
                _mm512_mask_storeu_ps(d + 16, c1, hi);
            }
        }
    }
}
#else
#include <stdlib.h>
void haste_winograd_input(const float *x, long h, long w, long pad_h, long pad_w, long ty0, long ty1, long tw, float *v,
                          long stride, long panel, float *row) { abort(); }
void haste_winograd_output(const float *m, long stride, long ty0, long ty1, long tw, long oh, long ow, const float *bias,
                           float *y) { abort(); }
#endif
