// Hot float32 loops that need the CPU's FMA instructions (STYLE §4.10: in Swift on baseline x86-64 a fused
// multiply-add is a libm call per lane). Each kernel comes in variants compiled for AVX-512F and for AVX2+FMA;
// the caller picks one at run time from the CPU's flags (`haste_cpu_level`), and keeps its portable Swift loop
// for other CPUs. Every variant computes exactly the same values as that Swift loop: the same IEEE operations
// (fma, sqrt and division are correctly rounded in every instruction set) in the same order per element.
#include <stddef.h>

/// 2: AVX-512F; 1: AVX2 and FMA; 0: neither (the caller's portable loop). From CPUID via the compiler's runtime.
int haste_cpu_level(void);

/// Σ p[i]² over n float32 elements as CPUOptimizer.swift's blockedSquares computes it (level 1 or 2; the Swift loop
/// otherwise): per 1024-element block, 16 float lanes of s·s added (unfused), the lanes summed in order from −0,
/// the block's tail added, the block's sum added to a double. The same bits.
double haste_sum_squares_f32(int level, const float *p, size_t n);

/// torch AdamW over float32 elements [0, n) (see CPUBackend.adamw for the per-element formula, which this repeats).
/// `level` is haste_cpu_level()'s answer (1 or 2).
void haste_adamw_f32(int level, float *p, const float *g, float *m, float *v, size_t n, float decay, int apply_decay,
                     float w, int small_weight, float b2, float one_minus_b2, float bc2s, float eps, float neg_step);

// ---- GELU and SiLU activations in float32 vectors (activations.c) ----
#define HASTE_ACT_GELU 0       /* x·Φ(x) through erf (GeluF) */
#define HASTE_ACT_GELU_TANH 1  /* the tanh approximation (GeluTanhF) */
#define HASTE_ACT_SILU 2       /* x·σ(x), σ(x) = 1 / (1 + e^{−x}) (SiluF) */
/// y[i] = f(x[i] + b[i]) (f(x[i]) where b is NULL) for i below n rounded down to 16, the count it returns; the rest
/// is the caller's (its scalar formula). Bit for bit the Swift SIMD16 vf of GeluF / GeluTanhF / SiluF. level: haste_cpu_level().
long haste_act_forward_f32(int level, int act, const float *x, const float *b, float *y, long n);
/// d = dy[i]·f′(x[i] + b[i]) (x[i] where b is NULL) into dx[i], and part[i] += d where part is given, for i below n
/// rounded down to 16 (returned); bit for bit the Swift SIMD16 dy·vdf. dx may be dy.
long haste_act_backward_f32(int level, int act, const float *x, const float *b, const float *dy, float *dx, float *part,
                            long n);

/// The 16 lane sums of e = exp(x[i] − m) over x[0..<n] in 16-lane blocks, the last padded with −∞ (e stored to out[i]
/// where out is given): CPUSoftmax.swift's sumExpShifted for float32 bit for bit, before its final acc16 sum, which
/// the caller does. level: 1 or 2 (haste_cpu_level()).
void haste_sum_exp_shifted_f32(int level, const float *x, long n, float m, float *out, float *acc16);

// ---- float32 GEMM for AVX-512F (sgemm.c): C = alpha·op(A)·op(B) + beta·C, row-major, as cblas_sgemm ----
// Call only when haste_cpu_level() == 2. Each output element is one fma chain over k in order, restarted every
// haste_sgemm_kc_step(K) (a function of K alone) and added to C, so splitting M and N between threads never changes a bit.
// beta == 0 never reads C (NaN there is ignored, as BLAS does); alpha == 0 is the caller's to handle.
#define HASTE_SGEMM_MR 8      /* rows of the register tile (split rows between threads in multiples of it) */
#define HASTE_SGEMM_NR 48     /* columns of the register tile (three zmm) */
#define HASTE_SGEMM_KC 256    /* most k per packed block (haste_sgemm_kc_step) */
#define HASTE_SGEMM_MC 448    /* rows of A packed at a time (a multiple of MR) */
#define HASTE_SGEMM_CW 768    /* columns of packed B a tile row runs across before the next (kc × CW in L2; a multiple of NR) */
#define HASTE_SGEMM_NC 4032   /* columns of B packed at a time by a serial product of many rows (a multiple of NR) */

/// k rows per packed block for a product of depth k: K split into ceil(k / KC) blocks of equal size, rounded up to a
/// multiple of 16 (at most KC; the last block takes the rest). Every path (serial, column split, shared packed B)
/// uses it. Before, the blocks were KC rows and the last took the rest: K = 384 ran as 256 + 128, whose 256-row block
/// with MC = 448 and CW = 768 overfilled a 1.25 MiB L2, and attention's K = 257 (DINOv2's tokens) as 256 + 1, a
/// whole pass over C for one row of k. Measured: 1024×1536×384 on 1 thread, Xeon Ice Lake, best of 4 rounds: 134 →
/// 145 GFLOP/s (MKL 150–163 on such shapes).
long haste_sgemm_kc_step(long k);
/// Per-thread float scratch (slot 0..3, grown on demand, 64-byte aligned, kept for the thread's life); NULL when
/// allocation fails or the slot is out of range.
float *haste_thread_scratch_f32(int slot, size_t floats);
/// Floats of a packed op(B) block of kc rows and n columns (n rounded up to NR).
size_t haste_sgemm_packed_b_floats(long kc, long n);
/// Packs op(B) rows [k0, k0+kc), columns [j0, j1) into NR-wide panels from `dst` on (kc × NR each, zero-padded).
/// op(B) is b (k × n, ldb) or, with trans_b, its transpose (b is n × k). dst: 64-byte aligned.
void haste_sgemm_pack_b(int trans_b, const float *b, long ldb, long k0, long kc, long j0, long j1, float *dst);
/// C[i0..<i1, j0..<j1] = alpha · op(A)[i0..<i1, k0..<k0+kc] · B̃ + beta · C, where `packed_b` holds the panels of
/// columns j0..<j1 (haste_sgemm_pack_b with this j0 and kc). Packs A in a per-thread buffer. With `bias` (beta must
/// be 0): C = fma(alpha, op(A)·B̃, bias[j]) for column j (a linear layer's first K block; bias indexed by C's column,
/// j0 included), bit for bit what beta = 1 on a C that holds the bias in every row gives.
void haste_sgemm_block(int trans_a, const float *a, long lda, long k0, long kc, long i0, long i1,
                       const float *packed_b, long j0, long j1, float alpha, float beta, float *c, long ldc,
                       const float *bias);

// ---- Winograd F(2×2, 3×3) transforms for stride-1 3×3 conv2d (winograd.c) ----
/// U[ξ][k][c] (ξ ∈ [0, 16), planes k_count·c_count apart) = G g Gᵀ of the filters w[k][c][3][3], k ∈ [k0, k1).
void haste_winograd_weights(const float *w, long k_count, long c_count, long k0, long k1, float *u);
/// V[ξ][t] = Bᵀ d B of the 4 × 4 input tiles of tile rows [ty0, ty1) of one channel plane (h × w, padding pad_h,
/// pad_w), t = (ty − ty0)·tw + tx, ξ planes `stride` floats apart, written as this channel's row of the sgemm's
/// packed B (haste_sgemm_pack_b's NR-wide panels, `panel` = kc·NR floats apart: element t at (t / NR)·panel + t % NR),
/// the last panel's columns past the n = (ty1 − ty0)·tw tiles zeroed; `row`: scratch of haste_winograd_row_floats(tw).
/// The input and output transforms need AVX-512F (x86-64; call where haste_cpu_level() == 2).
static inline long haste_winograd_row_floats(long tw) { return 4 * (2 * tw + 2 + 48); }
void haste_winograd_input(const float *x, long h, long w, long pad_h, long pad_w, long ty0, long ty1, long tw, float *v,
                          long stride, long panel, float *row);
/// y (oh × ow) tiles of tile rows [ty0, ty1) = Aᵀ m A of M[ξ][t] (t = (ty − ty0)·tw + tx, contiguous), plus *bias
/// (bias + product) where bias is not NULL.
void haste_winograd_output(const float *m, long stride, long ty0, long ty1, long tw, long oh, long ow, const float *bias,
                           float *y);

// ---- anonymous host memory for HostBlockCache (hostmap.c) ----
/// byte_count (a page multiple) of fresh zeroed private memory, or NULL with errno in *error. From one huge page
/// up, the block starts on a huge-page boundary and is advised MADV_HUGEPAGE.
void *haste_map(size_t byte_count, int *error);
/// The kernel's transparent huge page size (hpage_pmd_size, 2 MiB on x86-64), or 0 where it has none.
size_t haste_huge_page_size(void);
/// Returns the pages; 0 or errno.
int haste_unmap(void *address, size_t byte_count);
/// The mapping resized, its first min(old, new) bytes kept in place or moved with their pages (no copy, no fault);
/// NULL where the system refuses or has no mremap (the mapping is then unchanged).
void *haste_remap(void *address, size_t old_byte_count, size_t new_byte_count);

// ---- implicit-GEMM conv2d forward for AVX-512F (convpack.c): the sgemm with op(B) packed from the image ----
/// One image's convolution (Ops/Conv.swift's ConvGeometry, plus its output size). height·width < 2^30.
typedef struct {
    long channels, height, width, kernel_h, kernel_w, stride, pad_h, pad_w, out_h, out_w;
} haste_conv_geometry;
/// What haste_sgemm_pack_b(0, cols, out_h·out_w, k0, kc, j0, j1, dst) writes for cols = im2col(x) (x: one image,
/// [channels, height, width]), read straight from x: the same floats in the same places.
void haste_conv_pack_b(const haste_conv_geometry *g, const float *x, long k0, long kc, long j0, long j1, float *dst);
/// Columns [j0, j1) of C = alpha·op(A)·op(B) + beta·C on the calling thread (k ≥ 1), op(B) packed nc columns (a
/// multiple of HASTE_SGEMM_NR) at a time, with per-thread packing buffers; with `conv` (then trans_a = trans_b = 0,
/// lda = k, ldb = ldc = n = out_h·out_w), op(B) is im2col of the image b, packed straight from b: bit for bit what
/// im2col + the same call give. The bits never depend on j0, j1 or nc. `bias` (NULL, or beta = 0): the row vector
/// added to every row of C in the first K block (haste_sgemm_block).
void haste_sgemm_columns(int trans_a, int trans_b, const haste_conv_geometry *conv, long m, long k, float alpha,
                         const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                         long j0, long j1, long nc, const float *bias);

// ---- haste's thread pool (pool.c; Parallel.swift) ----
typedef void (*haste_pool_task)(void *ctx, long index);
/// Calls fn(ctx, i) for every i in [0, n), on the calling thread and up to threads - 1 pool workers (started on
/// first use), and returns when all have run. Tasks may call it again (nested jobs share the workers). Idle
/// workers spin HASTE_POOL_SPIN_US µs (default 200) before they sleep.
void haste_pool_run(long n, int threads, haste_pool_task fn, void *ctx);
