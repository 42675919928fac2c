extension KernelSource {
    /// Prepended to every family's code. Kernels use only what is here plus CUDA built-ins from this list, which
    /// the test emulator (Tests/HasteTests/CUDA/Emulator) also provides:
    /// - `__global__`, `__device__`, `__forceinline__`, `__restrict__`, `threadIdx`/`blockIdx`/`blockDim`/`gridDim`
    ///   (`.x .y .z`), `__syncthreads()`, `__shfl_xor_sync` / `__shfl_down_sync` with `HASTE_FULL_MASK` (all 32 lanes
    ///   take part), `atomicAdd` on float/double/int, `atomicCAS` on int, static `__shared__ T name[N]` arrays, and
    ///   dynamic shared memory only through `HASTE_DYNAMIC_SHARED(T, name)`;
    /// - math: expf logf log1pf expm1f sqrtf rsqrtf tanhf sinf cosf erff erfcf fabsf fmaxf fminf powf floorf ceilf
    ///   roundf truncf fmodf copysignf isnan isinf, the double versions, `__float_as_uint`, `__uint_as_float`,
    ///   `__float_as_int`, `__int_as_float`, `INFINITY`, `NAN`;
    /// - types: int, unsigned, long long, float, double and the typedefs below. No `#include`: NVRTC runs without
    ///   toolkit headers (STYLE §2.5).
    /// Every entry point is declared `extern "C" __global__ void name(parameters)` on one line, parameters of the
    /// types above or pointers to them: the emulator reads that line to build its launch trampoline.
    /// Sizes and indices are `i64` (tensors may exceed 2³¹ elements); grid-stride loops keep grids bounded.
    public static let prelude = #"""
    typedef long long i64;
    typedef unsigned long long u64;
    typedef unsigned int u32;
    typedef unsigned short u16;
    typedef unsigned char u8;
    #ifndef HASTE_EMULATOR
    #define HASTE_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
    #endif
    #define HASTE_FULL_MASK 0xffffffffu
    #ifndef INFINITY
    #define INFINITY __int_as_float(0x7f800000)
    #endif
    #ifndef NAN
    #define NAN __int_as_float(0x7fffffff)
    #endif
    #define HASTE_GRID_STRIDE_LOOP(i, n) \
        for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

    /// bfloat16 ↔ float: the top 16 bits, rounded to nearest even; every NaN becomes 0x7fc0 (torch's and
    /// `Float.bfloat16Bits`'s canonical quiet NaN).
    __device__ __forceinline__ float haste_bf16_to_float(u16 b) { return __uint_as_float(((u32)b) << 16); }
    __device__ __forceinline__ u16 haste_float_to_bf16(float f) {
        u32 u = __float_as_uint(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)0x7fc0u;
        u += 0x7fffu + ((u >> 16) & 1u);
        return (u16)(u >> 16);
    }
    /// IEEE half ↔ float, written out (no cuda_fp16.h), round to nearest even, subnormals and inf/NaN kept.
    __device__ __forceinline__ float haste_half_to_float(u16 h) {
        u32 sign = ((u32)h & 0x8000u) << 16, exp = ((u32)h >> 10) & 0x1fu, mant = (u32)h & 0x3ffu;
        if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
        if (exp == 0) {
            if (mant == 0) return __uint_as_float(sign);
            float v = (float)mant * 5.9604644775390625e-8f;   /* 2^-24 */
            return sign ? -v : v;
        }
        return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
    }
    __device__ __forceinline__ u16 haste_float_to_half(float f) {
        u32 u = __float_as_uint(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
        if (a > 0x7f800000u) return (u16)(sign | 0x7e00u);
        if (a >= 0x477ff000u) return (u16)(sign | 0x7c00u);            /* rounds to inf */
        if (a < 0x38800000u) {                                          /* subnormal half or zero */
            if (a < 0x33000000u) return (u16)sign;
            u32 e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
            u32 r = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
            if (rem > halfway || (rem == halfway && (r & 1u))) r += 1u;
            return (u16)(sign | r);
        }
        u32 r = a - 0x38000000u;                                        /* rebias 127 → 15 */
        r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
        return (u16)(sign | r);
    }
    /// Sums `v` over the 32 lanes of a warp (every lane gets the total).
    __device__ __forceinline__ float haste_warp_sum(float v) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(HASTE_FULL_MASK, v, o);
        return v;
    }
    __device__ __forceinline__ float haste_warp_max(float v) {
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(HASTE_FULL_MASK, v, o));
        return v;
    }
    /// Sums `v` over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the total. `scratch` is a
    /// 32-float shared array; the block must call this uniformly.
    __device__ __forceinline__ float haste_block_sum(float v, float* scratch) {
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        v = haste_warp_sum(v);
        __syncthreads();
        if (lane == 0) scratch[warp] = v;
        __syncthreads();
        v = lane < warps ? scratch[lane] : 0.0f;
        return haste_warp_sum(v);
    }
    /// LayerNorm statistics of one row, two passes (mean, then mean of squared deviations), for the whole block
    /// (called uniformly); every thread gets the mean and 1/√(biased var + eps).
    __device__ __forceinline__ void haste_row_mean_rstd(const float* xr, i64 cols, float eps, float* scratch,
                                                        float* mean, float* rstd) {
        float s = 0.0f;
        for (i64 i = threadIdx.x; i < cols; i += blockDim.x) s += xr[i];
        float m = haste_block_sum(s, scratch) / (float)cols;
        float q = 0.0f;
        for (i64 i = threadIdx.x; i < cols; i += blockDim.x) { float d = xr[i] - m; q += d * d; }
        float var = haste_block_sum(q, scratch) / (float)cols;
        *mean = m;
        *rstd = 1.0f / sqrtf(var + eps);
    }
    __device__ __forceinline__ float haste_block_max(float v, float* scratch) {
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        v = haste_warp_max(v);
        __syncthreads();
        if (lane == 0) scratch[warp] = v;
        __syncthreads();
        v = lane < warps ? scratch[lane] : -INFINITY;
        return haste_warp_max(v);
    }
    """#
}
