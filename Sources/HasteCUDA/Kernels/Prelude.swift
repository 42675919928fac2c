extension KernelSource {
    /// Prepended to every family's code. Kernels use only what is here plus CUDA built-ins from this list, which
    /// the test emulator (Tests/HasteTests/CUDA/Emulator) also provides:
    /// - `__global__`, `__device__`, `__forceinline__`, `__restrict__`, `threadIdx`/`blockIdx`/`blockDim`/`gridDim`
    ///   (`.x .y .z`), `__syncthreads()`, `__shfl_xor_sync` / `__shfl_down_sync` / `__shfl_sync` with `HASTE_FULL_MASK`
    ///   (all 32 lanes take part), `atomicAdd` on float/double/int, `atomicCAS` on int, static `__shared__ T name[N]` arrays, and
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
    /// The three flash-attention entry points of one register width W (forward, dq, dk/dv) over the templates
    /// FWD/DQ/DKDV with dynamic shared memory of type SMEM: the float32 and the bf16 tensor-core families.
    #define HASTE_FLASH_ENTRIES(NAME, SMEM, FWD, DQ, DKDV, W) \
    extern "C" __global__ void NAME##_forward_d##W(const float* q, const float* k, const float* v, float* out, float* lse, i64 batch, i64 tq, i64 tk, int dh, int dv, float scale) { \
        HASTE_DYNAMIC_SHARED(SMEM, smem); FWD<W>(smem, q, k, v, out, lse, batch, tq, tk, dh, dv, scale); } \
    extern "C" __global__ void NAME##_backward_dq_d##W(const float* q, const float* k, const float* v, const float* dout, const float* lse, const float* delta, float* dq, i64 batch, i64 tq, i64 tk, int dh, int dv, float scale) { \
        HASTE_DYNAMIC_SHARED(SMEM, smem); DQ<W>(smem, q, k, v, dout, lse, delta, dq, batch, tq, tk, dh, dv, scale); } \
    extern "C" __global__ void NAME##_backward_dkdv_d##W(const float* q, const float* k, const float* v, const float* dout, const float* lse, const float* delta, float* dk, float* dv_out, i64 batch, i64 tq, i64 tk, int dh, int dv, float scale) { \
        HASTE_DYNAMIC_SHARED(SMEM, smem); DKDV<W>(smem, q, k, v, dout, lse, delta, dk, dv_out, batch, tq, tk, dh, dv, scale); }
    #ifndef INFINITY
    #define INFINITY __int_as_float(0x7f800000)
    #endif
    #ifndef NAN
    #define NAN __int_as_float(0x7fffffff)
    #endif
    #define HASTE_GRID_STRIDE_LOOP(i, n) \
        for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

    /// n / d for n < 2³¹ without a division: `magic` = CUDABackend.fastDivisor(d) (m in bits 0–31, shift above).
    __device__ __forceinline__ u32 haste_fdiv(u32 n, u64 magic) {
    #ifdef HASTE_EMULATOR
        const u32 hi = (u32)(((u64)(u32)magic * n) >> 32);
    #else
        const u32 hi = __umulhi((u32)magic, n);
    #endif
        return (hi + n) >> (u32)(magic >> 32);
    }
    /// 16- and 8-byte units for vectorised loads and stores (ld/st.global.v4, .v2) at addresses aligned to them.
    struct alignas(16) haste_f4 { float x, y, z, w; };
    struct alignas(8) haste_f2 { float x, y; };
    struct alignas(16) haste_v16 { u64 lo, hi; };
    /// The offsets in two strided views (strides sa, sb) of the row-major index i over `rank` ≤ 8 axes, in 32-bit
    /// arithmetic: n[1…7] the extents, f[1…7] their `fastDivisor`s (the kernels' 32-bit paths: every offset < 2³¹).
    /// Called with constant-indexed local arrays under an unrolled loop, everything stays in registers.
    __device__ __forceinline__ void haste_offsets32(u32 i, int rank, const int* n, const u64* f, const int* sa,
                                                    const int* sb, int* oa, int* ob) {
        int a = 0, b = 0;
        #pragma unroll
        for (int d = 7; d > 0; --d) {
            if (d < rank) {
                const u32 q = haste_fdiv(i, f[d]);
                const int c = (int)(i - q * (u32)n[d]);
                i = q;
                a += c * sa[d];
                b += c * sb[d];
            }
        }
        *oa = a + (int)i * sa[0];
        *ob = b + (int)i * sb[0];
    }

    /// A 32-bit kernel's view parameters (rank, count < 2³¹ units, extents n1…n7, their `fastDivisor`s f1…f7, the
    /// two views' strides A0…A7, B0…B7: `CUDABackend.arguments32`'s order), the same names passed on, the local
    /// arrays `haste_offsets32` reads made from them, and the grid-stride loop over the count.
    #define HASTE_VIEWS32_PARAMS(A, B) int rank, int count, int n1, int n2, int n3, int n4, int n5, int n6, int n7, \
        u64 f1, u64 f2, u64 f3, u64 f4, u64 f5, u64 f6, u64 f7, int A##0, int A##1, int A##2, int A##3, int A##4, \
        int A##5, int A##6, int A##7, int B##0, int B##1, int B##2, int B##3, int B##4, int B##5, int B##6, int B##7
    #define HASTE_VIEWS32_ARGS(A, B) rank, count, n1, n2, n3, n4, n5, n6, n7, f1, f2, f3, f4, f5, f6, f7, \
        A##0, A##1, A##2, A##3, A##4, A##5, A##6, A##7, B##0, B##1, B##2, B##3, B##4, B##5, B##6, B##7
    #define HASTE_VIEWS32(A, B) \
        const int v32_n[8] = {0, n1, n2, n3, n4, n5, n6, n7}; \
        const u64 v32_f[8] = {0, f1, f2, f3, f4, f5, f6, f7}; \
        const int v32_a[8] = {A##0, A##1, A##2, A##3, A##4, A##5, A##6, A##7}; \
        const int v32_b[8] = {B##0, B##1, B##2, B##3, B##4, B##5, B##6, B##7}
    #define HASTE_GRID_STRIDE_LOOP32(i, n) \
        for (u32 i = (u32)blockIdx.x * blockDim.x + threadIdx.x; i < (u32)(n); i += (u32)blockDim.x * gridDim.x)

    /// Asynchronous copies global → shared of BYTES = 4, 8 or 16 (cp.async on sm_80+, .cg for 16 bytes, .ca below;
    /// both addresses BYTES-aligned): the data may be read only after `haste_cp_async_wait_all()` by the issuing
    /// thread and then a barrier. Older GPUs copy at once. The emulator poisons the destination at the issue and
    /// copies at the wait, so a read too early (or a copy issued while others still read the destination) shows.
    template <int BYTES>
    __device__ __forceinline__ void haste_cp_async(void* smem, const void* gmem) {
        static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async moves 4, 8 or 16 bytes");
    #if defined(HASTE_EMULATOR)
        haste_emu::cp_async(smem, gmem, BYTES);
    #elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        const u32 s = (u32)__cvta_generic_to_shared(smem);
        if (BYTES == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(s), "l"(gmem) : "memory");
        else asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" :: "r"(s), "l"(gmem), "n"(BYTES) : "memory");
    #else
        if (BYTES == 16) *(haste_v16*)smem = *(const haste_v16*)gmem;
        else if (BYTES == 8) *(u64*)smem = *(const u64*)gmem;
        else *(u32*)smem = *(const u32*)gmem;
    #endif
    }
    __device__ __forceinline__ void haste_cp_async_wait_all() {
    #if defined(HASTE_EMULATOR)
        haste_emu::cp_async_wait();
    #elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile("cp.async.wait_all;\n" ::: "memory");
    #endif
    }

    /// Cross-block hand-over (a block's results read by another block of the same launch, after an atomic says
    /// they are complete): `haste_threadfence` orders this thread's earlier writes before its later ones as every
    /// block sees them; `haste_ldcg` reads through L2, never a stale L1 line. The emulator runs blocks one after
    /// another: a plain load (which its check of reads across blocks leaves alone), and a fence its race check
    /// notes (a hand-over read of a block's writes that block's atomic released unfenced is reported).
    __device__ __forceinline__ void haste_threadfence() {
    #if defined(HASTE_EMULATOR)
        haste_emu_threadfence();
    #else
        __threadfence();
    #endif
    }
    __device__ __forceinline__ float haste_ldcg(const float* p) {
    #if defined(HASTE_EMULATOR)
        return haste_emu_ldcg(p);           // the emulator's race check lets this read alone
    #else
        return __ldcg(p);
    #endif
    }
    /// Σ_t p[t·n + i] for t = 0…tiles − 1, in that order, in float32: dq from the flash dk/dv kernels' per-key-tile
    /// shares (the summing kernels and the last block's sum: one arithmetic, the same bits). CG: each read through
    /// L2 (shares other blocks of the running launch wrote).
    template <bool CG = false>
    __device__ __forceinline__ float haste_tile_sum(const float* p, i64 n, i64 tiles, i64 i) {
        float s = CG ? haste_ldcg(p + i) : p[i];
        for (i64 t = 1; t < tiles; t++) s += CG ? haste_ldcg(p + t * n + i) : p[t * n + i];
        return s;
    }

    /// bfloat16 ↔ float: the top 16 bits, rounded to nearest even; every NaN becomes 0x7fc0 (torch's and
    /// `Float.bfloat16Bits`'s canonical quiet NaN).
    __device__ __forceinline__ float haste_bf16_to_float(u16 b) { return __uint_as_float(((u32)b) << 16); }
    __device__ __forceinline__ u16 haste_float_to_bf16(float f) {
        u32 u = __float_as_uint(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)0x7fc0u;
        u += 0x7fffu + ((u >> 16) & 1u);
        return (u16)(u >> 16);
    }
    /// float → bf16 → float: Autocast's rounding of a float32 carrier, in a register.
    __device__ __forceinline__ float haste_round_bf16(float v) { return haste_bf16_to_float(haste_float_to_bf16(v)); }
    /// Element i of a float32 or a bf16 buffer as float (bf16 widened, exact), and stored into one (to bf16 rounded to
    /// nearest even): the kernels templated on whether an Autocast bf16 operand is a float32 carrier or bf16 itself.
    __device__ __forceinline__ float haste_ld(const float* p, i64 i) { return p[i]; }
    __device__ __forceinline__ float haste_ld(const u16* p, i64 i) { return haste_bf16_to_float(p[i]); }
    __device__ __forceinline__ void haste_st(float* p, i64 i, float v) { p[i] = v; }
    __device__ __forceinline__ void haste_st(u16* p, i64 i, float v) { p[i] = haste_float_to_bf16(v); }
    /// Two floats as one bf16x2 register: `lo` (the lower-indexed element) in bits 0–15, `hi` in 16–31, each rounded
    /// to nearest even (exact for float32 carriers of bf16 values, Autocast's activations). On sm_80+ one
    /// `cvt.rn.bf16x2.f32` (the software rounding is ~12 integer instructions a pair: the flash kernels pack every
    /// P and dS fragment): the same bits but for a NaN's payload, which only the tensor-core operands see (a NaN
    /// operand makes NaN sums, and results are stored through haste_float_to_bf16's canonical NaN).
    __device__ __forceinline__ u32 haste_pack_bf16x2(float lo, float hi) {
    #if !defined(HASTE_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        u32 d;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
        return d;
    #else
        return (u32)haste_float_to_bf16(lo) | ((u32)haste_float_to_bf16(hi) << 16);
    #endif
    }
    /// 2^x for the softmax probabilities of the tensor-core flash kernels (exp(y) = 2^(y·log₂e), the scale folded
    /// in): one `ex2.approx.ftz.f32` on a GPU (relative error ~2⁻²², results below 2⁻¹²⁶ flushed to 0: probabilities
    /// that small add nothing to a bf16 product), `exp2f` in the emulator.
    __device__ __forceinline__ float haste_exp2(float x) {
    #if !defined(HASTE_EMULATOR) && defined(__CUDA_ARCH__)
        float y;
        asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
        return y;
    #else
        return exp2f(x);
    #endif
    }
    #define HASTE_LOG2E 1.4426950408889634f
    #define HASTE_LN2 0.6931471805599453f
    /// ldmatrix.sync.aligned.m8n8.x4(.trans: TRANS).shared.b16: lane 8i + r gives the address of row r of the 8 × 8 b16
    /// matrix i (16 bytes, 16-byte aligned, in shared memory); d[i] = this lane's word of matrix i: row lane/4,
    /// columns 2·(lane%4), +1 (TRANS: column lane/4, rows 2·(lane%4), +1, the low half from the first) — the A
    /// and B fragments of haste_mma_bf16_16816 from row-major tiles. Every lane of the warp must take part. Without
    /// the instruction (the emulator, sm < 75) the rows' addresses travel by shuffle and each lane reads its words.
    template <bool TRANS = false>
    __device__ __forceinline__ void haste_ldmatrix_x4(u32* d, const u32* row) {
    #if !defined(HASTE_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
        const u32 s = (u32)__cvta_generic_to_shared(row);
        if (TRANS) asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                                : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(s));
        else asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                          : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(s));
    #else
        const int lane = threadIdx.x & 31;
        for (int i = 0; i < 4; i++) {
            if (TRANS) {   /* rows 2·(lane%4) and + 1 of matrix i, column lane/4 */
                const u16* lo = (const u16*)__shfl_sync(HASTE_FULL_MASK, (u64)row, 8 * i + 2 * (lane & 3));
                const u16* hi = (const u16*)__shfl_sync(HASTE_FULL_MASK, (u64)row, 8 * i + 2 * (lane & 3) + 1);
                d[i] = (u32)lo[lane >> 2] | ((u32)hi[lane >> 2] << 16);
            } else {       /* row lane/4 of matrix i, word lane%4 */
                d[i] = ((const u32*)__shfl_sync(HASTE_FULL_MASK, (u64)row, 8 * i + (lane >> 2)))[lane & 3];
            }
        }
    #endif
    }
    /// The emulated mma's operands (m16n8k16 bf16 and m16n8k8 tf32 alike: A's registers a0…a3 hold rows g, g + 8
    /// at the k positions of lanes quad + j, B's b0, b1 the columns of lanes 4n + j): this lane's rows g, g + 8 of A
    /// (ra, 8 registers each in k order) and columns 2t, 2t + 1 of B (cb), by 32 shuffles.
    __device__ __forceinline__ void haste_mma_gather(const u32* a, const u32* b, u32 (*ra)[8], u32 (*cb)[8]) {
        const int lane = threadIdx.x & 31, quad = lane & ~3, t = lane & 3;
        for (int j = 0; j < 4; j++) {
            ra[0][j] = __shfl_sync(HASTE_FULL_MASK, a[0], quad + j);
            ra[1][j] = __shfl_sync(HASTE_FULL_MASK, a[1], quad + j);
            ra[0][j + 4] = __shfl_sync(HASTE_FULL_MASK, a[2], quad + j);
            ra[1][j + 4] = __shfl_sync(HASTE_FULL_MASK, a[3], quad + j);
            for (int n = 0; n < 2; n++) {
                cb[n][j] = __shfl_sync(HASTE_FULL_MASK, b[0], 4 * (2 * t + n) + j);
                cb[n][j + 4] = __shfl_sync(HASTE_FULL_MASK, b[1], 4 * (2 * t + n) + j);
            }
        }
    }
    /// One warp-level D = A·B + C of shape m16n8k16: A 16×16 bf16 (row), B 16×8 bf16 (col), C and D 16×8 float32,
    /// in the fragments of PTX ISA §9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type"
    /// (https://docs.nvidia.com/cuda/parallel-thread-execution/index.html#warp-level-matrix-fragment-mma-16816-float).
    /// With g = lane >> 2 (groupID) and t = lane & 3 (threadID_in_group), register a[i/2] holds elements a_i, a_i+1
    /// (a_i in the low half), b[i/2] holds b_i, b_i+1:
    ///   a_i = A[g + 8·((i >> 1) & 1)][2t + (i & 1) + 8·(i >> 2)]   (rows g for a0 a1 a4 a5, g + 8 for a2 a3 a6 a7;
    ///                                                               columns 2t, 2t+1, +8 for a4…a7)
    ///   b_i = B[2t + (i & 1) + 8·(i >> 1)][g]                      (b0 b1 at rows 2t, 2t+1; b2 b3 at 2t+8, 2t+9)
    ///   c_i, d_i = C, D[g + 8·(i >> 1)][2t + (i & 1)]
    /// so a[0] = A[g][2t…2t+1], a[1] = A[g+8][2t…], a[2] = A[g][2t+8…], a[3] = A[g+8][2t+8…]; a row-major A or a
    /// B stored column by column (B's column n = a row of the stored tile) is one 32-bit load per register.
    /// All 32 lanes call it together (warp-uniform control flow); d may be c. sm_80 and later: the tensor-core
    /// instruction `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` (its order and intermediate rounding
    /// inside one mma are the hardware's, unspecified by the ISA). The emulator (HASTE_EMULATOR) and older GPUs:
    /// the same product from 32 warp shuffles, d_i = (…((c_i + A[r][0]·B[0][n]) + A[r][1]·B[1][n]) + …) +
    /// A[r][15]·B[15][n], k in order, float32 additions (a product of two bf16 is exact in float32: the 16 sums are
    /// the only roundings).
    __device__ __forceinline__ void haste_mma_bf16_16816(float* d, const u32* a, const u32* b, const float* c) {
    #if !defined(HASTE_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
                     : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                       "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
    #else
        u32 ra[2][8], cb[2][8];   /* rows g, g+8 of A and columns 2t, 2t+1 of B, as 8 k pairs (2j, 2j+1) */
        haste_mma_gather(a, b, ra, cb);
        for (int i = 0; i < 4; i++) {
            const u32* x = ra[i >> 1];
            const u32* y = cb[i & 1];
            float s = c[i];
            for (int j = 0; j < 8; j++) {
                s += haste_bf16_to_float((u16)(x[j] & 0xffffu)) * haste_bf16_to_float((u16)(y[j] & 0xffffu));
                s += haste_bf16_to_float((u16)(x[j] >> 16)) * haste_bf16_to_float((u16)(y[j] >> 16));
            }
            d[i] = s;
        }
    #endif
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
    /// y = float32(low(x)): the memory family's cast_any conversions, float32 → low → float32, in registers (low = 2 or 3; the
    /// conversions through double of cast_any are exact for float32 values, so these are its bits); with s ≠ 0,
    /// float32(low(x + s)) − s, the float32 add and subtract of the scalar ops around it (`__fadd_rn`, nothing fused;
    /// r − s as r + (−s), which IEEE 754 defines it to be). s = 0 adds nothing (−0 stays −0).
    __device__ __forceinline__ float haste_round_through(float v, float s, int lowType) {
        const float t = s != 0.0f ? __fadd_rn(v, s) : v;
        const float r = lowType == 3 ? haste_round_bf16(t) : haste_half_to_float(haste_float_to_half(t));
        return s != 0.0f ? __fadd_rn(r, -s) : r;
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
    /// haste_block_sum's (haste_block_max's) result at blockDim 32·W computed by one warp (CUDANormWarp.swift,
    /// the softmax family): s[w] is virtual warp w's per-lane partial; each virtual warp's xor tree, then the W
    /// totals through lanes 0…W − 1 of a last tree (the other lanes 0, or −∞). The same float operations in the same
    /// order as the block: the same bits.
    template <bool MAX> __device__ __forceinline__ float haste_warp_reduce(float v) { return MAX ? haste_warp_max(v) : haste_warp_sum(v); }
    template <int W, bool MAX>
    __device__ __forceinline__ float haste_warp_block_reduce_w(const float (&s)[W]) {
        float t[W];
        #pragma unroll
        for (int w = 0; w < W; w++) t[w] = haste_warp_reduce<MAX>(s[w]);
        const int lane = threadIdx.x & 31;
        float v = MAX ? -INFINITY : 0.0f;
        #pragma unroll
        for (int w = 0; w < W; w++) if (lane == w) v = t[w];
        return haste_warp_reduce<MAX>(v);
    }
    template <int W> __device__ __forceinline__ float haste_warp_block_sum_w(const float (&s)[W]) { return haste_warp_block_reduce_w<W, false>(s); }
    template <int W> __device__ __forceinline__ float haste_warp_block_max_w(const float (&s)[W]) { return haste_warp_block_reduce_w<W, true>(s); }
    /// Rows by warp: warp k of the grid takes rows k, k + (warps in the grid), …
    #define HASTE_WARP_ROWS(r, rows) \
        for (i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < (rows); r += (i64)gridDim.x * (blockDim.x >> 5))
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
