// GELU (exact, through erf), GELU-tanh and SiLU, forward and backward, in float32 vectors: the same IEEE operations
// in the same order per lane as the Swift SIMD16 forms (CPUMath.swift's vexp, vtanh, verf, vsigmoid; CPUUnary.swift's
// GeluF, GeluTanhF and SiluF vf/vdf), so every variant gives the Swift loop's bits. Swift compiles SIMD16<Float> for
// baseline x86-64 (four SSE registers per vector, measured: 536 instructions per 16 exact GELUs); these run 16 (AVX-512F) or 8
// (AVX2) lanes per instruction, several independent instructions side by side (64- and 16-lane blocks, below).
// -ffp-contract=off keeps every multiply-add unfused, as in Swift.
#include "CKernels.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include "lanes.h"

#define ACT_MATH(SUFFIX, TARGET, V, U)                                                                             \
typedef float V __attribute__((ext_vector_type(sizeof(U) / 4)));                                                  \
__attribute__((target(TARGET), always_inline)) static inline V sel##SUFFIX(U mask, V a, V b) {                   \
    U ia, ib; memcpy(&ia, &a, sizeof ia); memcpy(&ib, &b, sizeof ib);                                             \
    U r = (mask & ia) | (~mask & ib); V out; memcpy(&out, &r, sizeof out); return out;                            \
}                                                                                                                 \
/* Float.exp16 */                                                                                                 \
__attribute__((target(TARGET), always_inline)) static inline V exp##SUFFIX(V x) {                                \
    const float lo = -87.33654f, hi = 88.37f;                                                                     \
    U below = (U)(x < lo), above = (U)(x > hi), nan = (U)(x != x);                                                \
    V xc = sel##SUFFIX(below, (V)lo, x);                                                                          \
    xc = sel##SUFFIX(above, (V)hi, xc);                                                                           \
    const V magic = (V)12582912.0f;                                                                               \
    V t = xc * 1.44269504f + magic;                                                                               \
    V n = t - magic;                                                                                              \
    V r = xc - n * 0.693359375f - n * -2.1219444e-4f;                                                             \
    V p = r * 1.98756915e-4f + 1.39819995e-3f;                                                                    \
    p = p * r + 8.3334519e-3f;                                                                                    \
    p = p * r + 4.16657959e-2f;                                                                                   \
    p = p * r + 1.66666655e-1f;                                                                                   \
    p = p * r + 5.00000012e-1f;                                                                                   \
    p = p * (r * r) + r + 1.0f;                                                                                   \
    U bits; memcpy(&bits, &t, sizeof bits);                                                                       \
    bits = (bits - 0x4B400000 + 127) << 23;                                                                       \
    V scale; memcpy(&scale, &bits, sizeof scale);                                                                 \
    V y = p * scale;                                                                                              \
    y = sel##SUFFIX(below, (V)0.0f, y);                                                                           \
    y = sel##SUFFIX(above, (V)__builtin_inff(), y);                                                               \
    return sel##SUFFIX(nan, x, y);                                                                                \
}                                                                                                                 \
/* vtanh */                                                                                                       \
__attribute__((target(TARGET), always_inline)) static inline V tanh##SUFFIX(V x) {                               \
    return 1.0f - 2.0f / (exp##SUFFIX(2.0f * x) + 1.0f);                                                          \
}                                                                                                                 \
/* verf */                                                                                                        \
__attribute__((target(TARGET), always_inline)) static inline V erf##SUFFIX(V x) {                                \
    U bits; memcpy(&bits, &x, sizeof bits);                                                                       \
    U tb = bits & 0x7FFFFFFF; V t; memcpy(&t, &tb, sizeof t);                                                     \
    V s = x * x;                                                                                                  \
    V r = t * -1.72853470e-5f + 3.83197126e-4f;                                                                   \
    V u = t * -3.88396438e-3f + 2.42546219e-2f;                                                                   \
    r = r * s + u;                                                                                                \
    r = r * t + -1.06777877e-1f;                                                                                  \
    r = r * t + -6.34846687e-1f;                                                                                  \
    r = r * t + -1.28717512e-1f;                                                                                  \
    r = r * t - t;                                                                                                \
    V tail = 1.0f - exp##SUFFIX(r);                                                                               \
    U big; memcpy(&big, &tail, sizeof big);                                                                       \
    big |= bits & 0x80000000;                                                                                     \
    V bigv; memcpy(&bigv, &big, sizeof bigv);                                                                     \
    V q = s * -5.96761703e-4f + 4.99119423e-3f;                                                                   \
    q = q * s + -2.67681349e-2f;                                                                                  \
    q = q * s + 1.12819925e-1f;                                                                                   \
    q = q * s + -3.76125336e-1f;                                                                                  \
    q = q * s + 1.28379166e-1f;                                                                                   \
    q = q * x + x;                                                                                                \
    return sel##SUFFIX((U)(t > 0.927734375f), bigv, q);                                                           \
}                                                                                                                 \
__attribute__((target(TARGET), always_inline)) static inline V act##SUFFIX(int act, V x) {                       \
    if (act == HASTE_ACT_GELU) return x * 0.5f * (1.0f + erf##SUFFIX(x * 0.7071067811865475f));                  \
    if (act == HASTE_ACT_SILU) return x * (1.0f / (1.0f + exp##SUFFIX(-x)));     /* SiluF.vf: x · vsigmoid(x) */   \
    V cube = x * x * x;                                                                                           \
    V inner = (x + 0.044715f * cube) * 0.7978845608028654f;                                                       \
    V half = x * 0.5f;                                                                                            \
    return half * (1.0f + tanh##SUFFIX(inner));                                                                   \
}                                                                                                                 \
__attribute__((target(TARGET), always_inline)) static inline V slope##SUFFIX(int act, V x) {                     \
    if (act == HASTE_ACT_SILU) {                                               /* SiluF.vdf */                    \
        V s = 1.0f / (1.0f + exp##SUFFIX(-x));                                                                    \
        return s * (1.0f + x * (1.0f - s));                                                                       \
    }                                                                                                             \
    if (act == HASTE_ACT_GELU) {                                                                                  \
        V cdf = (1.0f + erf##SUFFIX(x * 0.7071067811865475f)) * 0.5f;                                             \
        V pdf = exp##SUFFIX(-x * x * 0.5f) * 0.3989422804014327f;                                                 \
        return cdf + x * pdf;                                                                                     \
    }                                                                                                             \
    V x2 = x * x;                                                                                                 \
    V t = tanh##SUFFIX(0.7978845608028654f * (x + 0.044715f * x2 * x));                                           \
    V left = (1.0f + t) * 0.5f;                                                                                   \
    V slope = (1.0f + 0.134145f * x2) * 0.7978845608028654f;                                                      \
    V right = x * 0.5f * (1.0f - t * t) * slope;                                                                  \
    return left + right;                                                                                          \
}                                                                                                                 \
__attribute__((target(TARGET)))                                                                                   \
static long forward##SUFFIX(int act, const float *x, const float *b, float *y, long n) {                         \
    const long lanes = sizeof(V) / 4, whole = n / 16 * 16;                                                        \
    for (long i = 0; i < whole; i += lanes) {                                                                     \
        V v, w; memcpy(&v, x + i, sizeof v);                                                                      \
        if (b) { memcpy(&w, b + i, sizeof w); v = v + w; }                                                        \
        V r = act##SUFFIX(act, v); memcpy(y + i, &r, sizeof r);                                                   \
    }                                                                                                             \
    return whole;                                                                                                 \
}                                                                                                                 \
__attribute__((target(TARGET)))                                                                                   \
static long backward##SUFFIX(int act, const float *x, const float *b, const float *dy, float *dx, float *part,   \
                             long n) {                                                                            \
    const long lanes = sizeof(V) / 4, whole = n / 16 * 16;                                                        \
    for (long i = 0; i < whole; i += lanes) {                                                                     \
        V v, w, g; memcpy(&v, x + i, sizeof v); memcpy(&g, dy + i, sizeof g);                                     \
        if (b) { memcpy(&w, b + i, sizeof w); v = v + w; }                                                        \
        V d = g * slope##SUFFIX(act, v); memcpy(dx + i, &d, sizeof d);                                            \
        if (part) { V q; memcpy(&q, part + i, sizeof q); q = q + d; memcpy(part + i, &q, sizeof q); }             \
    }                                                                                                             \
    return whole;                                                                                                 \
}

/* Σ-lanes of exp(x − m) over 16-lane blocks (the last padded with −∞), e stored to out where given, the lane sums
   going on from acc16's and written back there: CPUSoftmax.swift's sumExpShifted up to its final acc.sum(). V has
   16 lanes (one AVX-512 register, or two AVX2 ones side by side). */
#define SUM_EXP(SUFFIX, TARGET, V)                                                                                 \
__attribute__((target(TARGET)))                                                                                   \
static void sum_exp##SUFFIX(const float *x, long n, float m, float *out, float *acc16) {                        \
    _Static_assert(sizeof(V) == 16 * sizeof(float), "16-lane blocks");                                            \
    V acc; memcpy(&acc, acc16, sizeof acc);                                                                       \
    for (long i = 0; i < n; i += 16) {                                                                            \
        const long valid = n - i < 16 ? n - i : 16;                                                               \
        float pad[16];                                                                                            \
        const float *src = x + i;                                                                                 \
        if (valid < 16) {                                                                                         \
            for (long l = 0; l < 16; l++) pad[l] = l < valid ? x[i + l] : -__builtin_inff();                     \
            src = pad;                                                                                            \
        }                                                                                                         \
        V v; memcpy(&v, src, sizeof v);                                                                           \
        V e = exp##SUFFIX(v - m);                                                                                 \
        if (out && valid == 16) memcpy(out + i, &e, sizeof e);                                                    \
        else if (out) memcpy(out + i, &e, (size_t)valid * sizeof(float));                                         \
        acc = acc + e;                                                                                            \
    }                                                                                                             \
    memcpy(acc16, &acc, sizeof acc);                                                                              \
}

typedef int haste_i16 __attribute__((ext_vector_type(16)));
typedef int haste_i64 __attribute__((ext_vector_type(64)));
ACT_MATH(16, "avx512f", haste_a16, haste_i16)
/* AVX2 (level 1): 16 lanes, two independent 8-lane chains (four would spill AVX2's 16 registers). The same operations
   per lane as 8 lanes at a time, so the same bits; on AVX2 code, 1 thread (measured on AMD EPYC Zen 4, not on an
   AVX2-only CPU), ns per element, 8 → 16 lanes: exact GELU forward 1.76–2.01 → 1.41–1.51, backward 2.69–2.90 →
   2.46–2.78; GELU-tanh forward 1.17 → 0.91, backward 1.35 → 1.10. */
/* -Wpsabi: a 16-lane vector passed without AVX-512 would use another calling convention than with it; these helpers
   are static and always inlined, so no such call exists. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"
ACT_MATH(16x, "avx2,fma", haste_a16x, haste_i16)
SUM_EXP(16x, "avx2,fma", haste_a16x)
#pragma clang diagnostic pop
/* 64 lanes: every operation becomes four independent 16-lane instructions side by side, which the out-of-order core
   overlaps; one 16-lane chain of ~60 dependent operations leaves the FP pipes idle. The same operations per lane, so
   the same bits. Measured (1 thread, AMD EPYC Zen 4, 256 Ki floats in L2, ns per element, 16 → 64 lanes): exact GELU
   forward 1.05 → 0.93, backward 1.59 → 1.27; GELU-tanh forward 0.71 → 0.55, backward 0.86 → 0.68. */
ACT_MATH(64, "avx512f", haste_a64, haste_i64)

/* SUM_EXP's lanes over n (a multiple of 64), four 16-lane blocks at a time: e, then acc += each block in order. */
__attribute__((target("avx512f")))
static void sum_exp64(const float *x, long n, float m, float *out, float *acc16) {
    haste_a16 acc; memcpy(&acc, acc16, sizeof acc);
    long i = 0;
    for (; i + 64 <= n; i += 64) {
        haste_a64 v; memcpy(&v, x + i, sizeof v);
        haste_a64 e = exp64(v - m);
        if (out) memcpy(out + i, &e, sizeof e);
        acc = acc + e.lo.lo;
        acc = acc + e.lo.hi;
        acc = acc + e.hi.lo;
        acc = acc + e.hi.hi;
    }
    memcpy(acc16, &acc, sizeof acc);
}

/* AVX-512: the 64-element blocks by sum_exp64, then the up to four 16-lane blocks after them (the last padded
   with −∞ through a masked load): e, then acc += each block in order, as SUM_EXP. The trailing blocks' exponentials
   are computed first: they do not depend on the running sum, so the out-of-order core runs their chains of
   dependent operations beside the 64-element loop instead of after it, where one row of DINOv2's 257 scores waited
   on its last element's (measured in `haste bench ops` packedQKV+logits fwd DINOv2-B: the tail was 3.6% of the
   samples, beside 10% for the other 256). */
__attribute__((target("avx512f")))
static void sum_exp_avx512(const float *x, long n, float m, float *out, float *acc16) {
    const long wide = n / 64 * 64, blocks = (n - wide + 15) / 16;
    haste_a16 tail[4];
    __mmask16 lanes[4];
    for (long b = 0; b < blocks; b++) {
        const long valid = n - (wide + 16 * b);
        lanes[b] = haste_lanes16(valid);
        __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-__builtin_inff()), lanes[b], x + wide + 16 * b);
        haste_a16 hv; memcpy(&hv, &v, sizeof hv);
        tail[b] = exp16(hv - m);
    }
    sum_exp64(x, wide, m, out, acc16);
    haste_a16 acc; memcpy(&acc, acc16, sizeof acc);
    for (long b = 0; b < blocks; b++) {
        acc = acc + tail[b];
        if (out) { __m512 e; memcpy(&e, &tail[b], sizeof e); _mm512_mask_storeu_ps(out + wide + 16 * b, lanes[b], e); }
    }
    memcpy(acc16, &acc, sizeof acc);
}

void haste_sum_exp_shifted_f32(int level, const float *x, long n, float m, float *out, float *acc16) {
    memset(acc16, 0, 16 * sizeof(float));
    if (level == 2) sum_exp_avx512(x, n, m, out, acc16);
    else if (level == 1) sum_exp16x(x, n, m, out, acc16);
    else abort();
}

long haste_act_forward_f32(int level, int act, const float *x, const float *b, float *y, long n) {
    if (level == 2) {
        long wide = forward64(act, x, b, y, n / 64 * 64);
        return wide + forward16(act, x + wide, b ? b + wide : NULL, y + wide, n - wide);
    }
    if (level == 1) return forward16x(act, x, b, y, n);
    return 0;
}

long haste_act_backward_f32(int level, int act, const float *x, const float *b, const float *dy, float *dx, float *part,
                            long n) {
    if (level == 2) {
        long wide = backward64(act, x, b, dy, dx, part, n / 64 * 64);
        return wide + backward16(act, x + wide, b ? b + wide : NULL, dy + wide, dx + wide, part ? part + wide : NULL,
                                 n - wide);
    }
    if (level == 1) return backward16x(act, x, b, dy, dx, part, n);
    return 0;
}

#else

void haste_sum_exp_shifted_f32(int level, const float *x, long n, float m, float *out, float *acc16) { abort(); }
long haste_act_forward_f32(int level, int act, const float *x, const float *b, float *y, long n) { return 0; }
long haste_act_backward_f32(int level, int act, const float *x, const float *b, const float *dy, float *dx, float *part,
                            long n) { return 0; }

#endif
