// The AVX-512 lane mask the kernels share (sgemm.c, convpack.c, winograd.c, activations.c): lanes 0 .. count−1 of
// 16, none when count ≤ 0, all when count ≥ 16. Included by x86-64 sources only, after <immintrin.h>.
#pragma once
#include <immintrin.h>

__attribute__((target("avx512f")))
static inline __mmask16 haste_lanes16(long count) {
    return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? 0 : (__mmask16)((1u << count) - 1);
}
