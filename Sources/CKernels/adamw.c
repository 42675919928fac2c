#include "CKernels.h"
#include <string.h>
#include <math.h>
#include <stdlib.h>

int haste_cpu_level(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

// One element, exactly as the Swift loop in CPUOptimizer.swift: p·d, lerp as an fma, v·b2 + (c·g)·g fused,
// √v / bc2s + eps, p + (−s·m) / denom.
#define ADAMW_ONE(i) do {                                                                  \
        float gi = g[i], pi = p[i], mi0 = m[i];                                            \
        if (apply_decay) pi = pi * decay;                                                  \
        float diff = gi - mi0;                                                             \
        float mi = small_weight ? __builtin_fmaf(w, diff, mi0) : __builtin_fmaf(wm1, diff, gi); \
        float vi = __builtin_fmaf(one_minus_b2 * gi, gi, v[i] * b2);                       \
        float denom = __builtin_sqrtf(vi) / bc2s + eps;                                    \
        m[i] = mi; v[i] = vi; p[i] = pi + (neg_step * mi) / denom;                         \
    } while (0)

#if defined(__x86_64__)
typedef float haste_v16 __attribute__((ext_vector_type(16)));
typedef float haste_v8 __attribute__((ext_vector_type(8)));

// The loop above on LANES-wide vectors (V), compiled for TARGET: the same operations per lane (fma, sqrt and division
// are IEEE-exact in every instruction set; -ffp-contract=off keeps the rest unfused), scalar tail.
#define ADAMW_VECTOR(NAME, TARGET, V, LANES)                                                                      \
__attribute__((target(TARGET)))                                                                                   \
static void NAME(float *p, const float *g, float *m, float *v, size_t n, float decay, int apply_decay, float w,   \
                 int small_weight, float b2, float one_minus_b2, float bc2s, float eps, float neg_step) {         \
    const float wm1 = w - 1.0f;                                                                                   \
    size_t i = 0;                                                                                                 \
    for (; i + LANES <= n; i += LANES) {                                                                          \
        V gi, pi, mi0, vi0;                                                                                       \
        memcpy(&gi, g + i, sizeof gi); memcpy(&pi, p + i, sizeof pi);                                             \
        memcpy(&mi0, m + i, sizeof mi0); memcpy(&vi0, v + i, sizeof vi0);                                         \
        if (apply_decay) pi = pi * decay;                                                                         \
        V diff = gi - mi0;                                                                                        \
        V mi = small_weight ? __builtin_elementwise_fma((V)w, diff, mi0) : __builtin_elementwise_fma((V)wm1, diff, gi); \
        V vi = __builtin_elementwise_fma(one_minus_b2 * gi, gi, vi0 * b2);                                         \
        V denom = __builtin_elementwise_sqrt(vi) / bc2s + eps;                                                    \
        V pn = pi + (neg_step * mi) / denom;                                                                      \
        memcpy(m + i, &mi, sizeof mi); memcpy(v + i, &vi, sizeof vi); memcpy(p + i, &pn, sizeof pn);              \
    }                                                                                                             \
    for (; i < n; i++) ADAMW_ONE(i);                                                                              \
}

ADAMW_VECTOR(adamw_avx512, "avx512f", haste_v16, 16)
ADAMW_VECTOR(adamw_avx2, "avx2,fma", haste_v8, 8)
#endif

#if defined(__x86_64__)
// blockedSquares (CPUOptimizer.swift) with its SIMD16 lanes as one zmm (AVX-512F) or two ymm (AVX2): lane by lane
// the same multiplies and adds (-ffp-contract=off), lane sum in order from −0 as Swift's SIMD.sum().
#define SUM_SQUARES(NAME, TARGET, V, LANES)                                                                        \
__attribute__((target(TARGET)))                                                                                   \
static double NAME(const float *p, size_t n) {                                                                    \
    double total = 0.0;                                                                                           \
    for (size_t start = 0; start < n; start += 1024) {                                                            \
        size_t end = n - start < 1024 ? n : start + 1024, i = start;                                              \
        V acc[16 / LANES];                                                                                        \
        for (int h = 0; h < 16 / LANES; h++) acc[h] = (V)0.0f;                                                    \
        for (; i + 16 <= end; i += 16) {                                                                          \
            for (int h = 0; h < 16 / LANES; h++) {                                                                \
                V s; memcpy(&s, p + i + h * LANES, sizeof s);                                                     \
                acc[h] = acc[h] + s * s;                                                                          \
            }                                                                                                     \
        }                                                                                                         \
        float lanes[16]; memcpy(lanes, acc, sizeof lanes);                                                        \
        float sum = -0.0f;                                                                                        \
        for (int l = 0; l < 16; l++) sum += lanes[l];                                                             \
        for (; i < end; i++) sum += p[i] * p[i];                                                                  \
        total += (double)sum;                                                                                     \
    }                                                                                                             \
    return total;                                                                                                 \
}
SUM_SQUARES(sum_squares_avx512, "avx512f", haste_v16, 16)
SUM_SQUARES(sum_squares_avx2, "avx2,fma", haste_v8, 8)
#endif

double haste_sum_squares_f32(int level, const float *p, size_t n) {
#if defined(__x86_64__)
    if (level >= 2) return sum_squares_avx512(p, n);
    if (level == 1) return sum_squares_avx2(p, n);
#endif
    (void)level; (void)p; (void)n;
    abort();
}

void haste_adamw_f32(int level, float *p, const float *g, float *m, float *v, size_t n, float decay, int apply_decay,
                     float w, int small_weight, float b2, float one_minus_b2, float bc2s, float eps, float neg_step) {
#if defined(__x86_64__)
    if (level >= 2) { adamw_avx512(p, g, m, v, n, decay, apply_decay, w, small_weight, b2, one_minus_b2, bc2s, eps, neg_step); return; }
    if (level == 1) { adamw_avx2(p, g, m, v, n, decay, apply_decay, w, small_weight, b2, one_minus_b2, bc2s, eps, neg_step); return; }
#endif
    (void)level;
    const float wm1 = w - 1.0f;
    for (size_t i = 0; i < n; i++) ADAMW_ONE(i);
}
