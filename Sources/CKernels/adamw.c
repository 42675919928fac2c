#include "CKernels.h"
#include <immintrin.h>
#include <math.h>

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
__attribute__((target("avx512f")))
static void adamw_avx512(float *p, const float *g, float *m, float *v, size_t n, float decay, int apply_decay,
                         float w, int small_weight, float b2, float one_minus_b2, float bc2s, float eps, float neg_step) {
    const float wm1 = w - 1.0f;
    const __m512 vd = _mm512_set1_ps(decay), vw = _mm512_set1_ps(small_weight ? w : wm1), vb2 = _mm512_set1_ps(b2);
    const __m512 vc = _mm512_set1_ps(one_minus_b2), vbc = _mm512_set1_ps(bc2s), ve = _mm512_set1_ps(eps);
    const __m512 vs = _mm512_set1_ps(neg_step);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i), pi = _mm512_loadu_ps(p + i), mi0 = _mm512_loadu_ps(m + i);
        if (apply_decay) pi = _mm512_mul_ps(pi, vd);
        __m512 diff = _mm512_sub_ps(gi, mi0);
        __m512 mi = _mm512_fmadd_ps(vw, diff, small_weight ? mi0 : gi);
        __m512 vi = _mm512_fmadd_ps(_mm512_mul_ps(vc, gi), gi, _mm512_mul_ps(_mm512_loadu_ps(v + i), vb2));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbc), ve);
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        _mm512_storeu_ps(p + i, _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(vs, mi), denom)));
    }
    for (; i < n; i++) ADAMW_ONE(i);
}

__attribute__((target("avx2,fma")))
static void adamw_avx2(float *p, const float *g, float *m, float *v, size_t n, float decay, int apply_decay,
                       float w, int small_weight, float b2, float one_minus_b2, float bc2s, float eps, float neg_step) {
    const float wm1 = w - 1.0f;
    const __m256 vd = _mm256_set1_ps(decay), vw = _mm256_set1_ps(small_weight ? w : wm1), vb2 = _mm256_set1_ps(b2);
    const __m256 vc = _mm256_set1_ps(one_minus_b2), vbc = _mm256_set1_ps(bc2s), ve = _mm256_set1_ps(eps);
    const __m256 vs = _mm256_set1_ps(neg_step);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i), pi = _mm256_loadu_ps(p + i), mi0 = _mm256_loadu_ps(m + i);
        if (apply_decay) pi = _mm256_mul_ps(pi, vd);
        __m256 diff = _mm256_sub_ps(gi, mi0);
        __m256 mi = _mm256_fmadd_ps(vw, diff, small_weight ? mi0 : gi);
        __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(vc, gi), gi, _mm256_mul_ps(_mm256_loadu_ps(v + i), vb2));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc), ve);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(vs, mi), denom)));
    }
    for (; i < n; i++) ADAMW_ONE(i);
}
#endif

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
