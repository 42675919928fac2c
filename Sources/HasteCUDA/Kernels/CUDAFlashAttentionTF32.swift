import Foundation
import HasteTensor

/// The float32 flash-attention forward on TF32 tensor cores (`attention_flash_tf32_forward_*`): what float32
/// attention without a gradient runs on sm_80+ when the device allows TF32 (`--tf32`, generate.py's default, or
/// train's `--allow-tf32`), as `haste generate` in float32 (its default) and a frozen teacher's forward do.
///    - Why: generate.py computes attention as two matmuls (`fused-attn` off), which PyTorch runs as TF32 GEMMs
///      under its default `allow_tf32`: q·kᵀ and P·v from operands rounded to TF32 (10-bit mantissa), sums in
///      float32, softmax in float32. The float32 FMA kernel (CUDAFlashAttentionForward.swift) spent 86 of a 223 ms
///      SiT-XL/2 sampling step on the H200 (batch 64, CFG) where PyTorch's whole step took 169. This kernel is that
///      precision class on the tensor cores; with TF32 off (`--no-tf32`) or `HASTE_FLASH_TF32=0`, and for every call
///      that keeps a gradient (whose backward recomputes P in float32 from the saved log-sum-exp), the float32
///      kernel runs as before.
///    - Tiles: 64 query rows per block, 4 warps of 16 rows, key tiles of 64, `mma.sync.m16n8k8.tf32` (sm_80+).
///      q, k, v are rounded to TF32 once (`cvt.rna.tf32.f32`: to nearest, ties away from zero; CUTLASS's default
///      float → tf32 conversion) as the tiles are loaded into shared memory (row strides Dpad + 4 floats: the
///      ldmatrix rows and the V reads below fall in distinct banks); a warp's Q fragments stay in registers for
///      all key tiles; K's B fragments by ldmatrix (a float is a pair of b16, so the non-transposed ldmatrix gives
///      a thread row g, word t: the tf32 fragment layout).
///    - P·V without a shuffle: the S accumulator of n-tile j holds keys 8j + 2t, 8j + 2t + 1 of rows g, g + 8;
///      read as the A operand of k-step j with k index t ↔ key 8j + 2t and t + 4 ↔ 8j + 2t + 1, and V's rows
///      read in the same order (b0 = V[8j + 2t][n], b1 = V[8j + 2t + 1][n], two shared loads per mma), the sum
///      over keys is the same. P is rounded to TF32 before the product (as a TF32 GEMM rounds its operand); the
///      row sum l adds the unrounded float32 P.
///    - Softmax: the bf16 forward's own step on the accumulator fragments (`tc_softmax_tile`,
///      CUDAFlashAttentionBF16Steps.swift: m′ = sl·max S in log₂ units, sl = scale·log₂e, P = 2^fma(sl, S, −m′) by
///      ex2.approx, masked keys 0, l summed per tile over the quad), out = O / l (no log-sum-exp: only calls without
///      a gradient come here). Head rows by `tc_head` and the direct family's layout parameters.
///    - Entry points: `_d64`, `_d72`, `_d80`, `_d96`, `_d128` where Dh and Dv both pad (to a multiple of 8) to that
///      width (compile-time widths: no guard between the mma), `_d128g` for any other Dh, Dv ≤ 128.
///    - Dynamic shared memory: 64·(kh + 4) + 64·(kv + 4) floats (Q's tile goes through K's buffer first);
///      SiT-XL/2 (72): 38 912 bytes. Registers (NVRTC 12.9, sm_90): d64 and d72 capped at 168 by
///      `__launch_bounds__(128, 3)` for 3 blocks per SM (d72: 24 bytes of stack, five 4-byte local loads per key
///      tile, L1 hits), d80 230, d96 249, d128 255 (48 bytes of stack); per key tile and warp (d72) 144 mma, 45
///      ldmatrix (9 of them Q's, once per query tile), 144 shared loads of V.
extension CUDABackend {
    static let flashTF32Widths = [64, 72, 80, 96, 128]

    static let flashAttentionTF32Source = KernelSource(
        family: "flashAttentionTF32",
        kernels: (flashTF32Widths.map { "d\($0)" } + ["d128g"]).map { "attention_flash_tf32_forward_\($0)" },
        code: flashLayoutCode + "\n" + flashSoftmaxStepCode + "\n" + flashTF32Code + "\n" + flashTF32Widths.map { w in
            "extern \"C\" __global__ void \(w <= 72 ? "__launch_bounds__(128, 3) " : "")attention_flash_tf32_forward_d\(w)(\(flashTF32Parameters)) { HASTE_DYNAMIC_SHARED(float, smem); tf_forward<\(w), true>(smem, \(flashTF32Arguments)); }"
        }.joined(separator: "\n") + "\n"
            + "extern \"C\" __global__ void attention_flash_tf32_forward_d128g(\(flashTF32Parameters)) { HASTE_DYNAMIC_SHARED(float, smem); tf_forward<128, false>(smem, \(flashTF32Arguments)); }\n",
        minimumArchitecture: 80)

    /// The entry points' parameters (one line each, as the emulator reads them): the sizes, then heads and each
    /// operand's (batch, head, token) strides in elements (`HeadLayout`: head b = n·heads + h's row t at
    /// n·batch + h·head + t·token), `vec` where every row starts on 16 bytes.
    static let flashTF32Parameters = "const float* q, const float* k, const float* v, float* out, i64 batch, i64 tq, i64 tk, int dh, int dv, float scale, \(flashLayoutParameters), int vec"
    static let flashTF32Arguments = "q, k, v, out, batch, tq, tk, dh, dv, scale, \(flashLayoutArgument), vec"

    /// The entry point for this shape: "d72" where Dh and Dv both pad to 72, …, else "d128g".
    static func flashTF32Variant(_ s: AttentionShape) -> String {
        let kh = (s.headDim + 7) / 8 * 8, kv = (s.valueDim + 7) / 8 * 8
        return kh == kv && flashTF32Widths.contains(kh) ? "d\(kh)" : "d128g"
    }

    /// Shared-memory floats of the TF32 forward.
    static func flashTF32Words(_ s: AttentionShape) -> Int {
        64 * ((s.headDim + 7) / 8 * 8 + 4) + 64 * ((s.valueDim + 7) / 8 * 8 + 4)
    }

    /// `HASTE_FLASH_TF32=0`: float32 attention keeps the float32 FMA kernel where TF32 is allowed, for comparisons
    /// (a test switches it for its own task: `$flashTF32Allowed.withValue`).
    @TaskLocal static var flashTF32Allowed = ProcessInfo.processInfo.environment["HASTE_FLASH_TF32"] != "0"

    /// Whether a float32 forward takes the TF32 kernel: no log-sum-exp kept (no gradient), keys (Tk = 0 stays with
    /// the float32 kernel, whose output is then 0), the driver allows TF32, sm_80+, Dh and Dv ≤ 128, the switch on.
    func flashUsesTF32(_ s: AttentionShape, lse: Buffer?, _ operands: [Buffer]) -> Bool {
        lse == nil && s.keys > 0 && flashTF32Applies(headDim: s.headDim, valueDim: s.valueDim) && operands.allSatisfy { $0.dtype == .float32 }
    }
    func flashTF32Applies(headDim: Int, valueDim: Int) -> Bool {
        driver.allowTF32 && driver.computeCapability >= 80 && CUDABackend.flashTF32Allowed && Swift.max(headDim, valueDim) <= 128
    }

    /// `Tensor.packedQKVAttention` on CUDA: calls without logits and without a gradient that take the TF32 forward
    /// (sampling in float32, a frozen teacher's layers), which then reads q, k, v inside qkv [N, T, 3·H·Dh] and
    /// writes the heads merged into out [N, T, H·Dh]: no head copies and no merge copy (for SiT-XL/2 sampling at
    /// batch 64 with CFG, 4 of 151 MB each, written and read again, per block and step). The bits of the split path.
    public func packedQKVAttentionRuns(batch: Int, tokens: Int, heads: Int, headDim: Int, scale: Double, logits: Bool,
                                       gradient: Bool) -> Bool {
        !logits && !gradient && flashTF32Applies(headDim: headDim, valueDim: headDim) && CUDABackend.flashStridedAllowed
    }

    public func packedQKVAttention(qkv: Buffer, out: Buffer, logits: Buffer?, probs: Buffer?, batch: Int, tokens: Int,
                                   heads: Int, headDim: Int, scale: Double) {
        guard logits == nil, probs == nil, qkv.dtype == .float32, out.dtype == .float32,
              packedQKVAttentionRuns(batch: batch, tokens: tokens, heads: heads, headDim: headDim, scale: scale,
                                     logits: false, gradient: false) else {
            CUDABackend.fail("packedQKVAttention on \(device): float32, no logits, no probabilities, TF32 allowed only (packedQKVAttentionRuns)")
        }
        let d = heads * headDim
        let s = AttentionShape(batch: batch * heads, queries: tokens, keys: tokens, headDim: headDim, valueDim: headDim)
        let x = HeadLayout.tokenMajor(tokens: tokens, channels: 3 * d, headDim: headDim)
        let o = HeadLayout.tokenMajor(tokens: tokens, channels: d, headDim: headDim)
        let part = { (which: Int) in qkv.advanced(by: which * d) }
        flashForwardTF32(q: part(0), k: part(1), v: part(2), out: out, shape: s, scale: scale,
                         layouts: AttentionLayouts(heads: heads, q: x, k: x, v: x, dOut: o, dq: x, dk: x, dv: x))
    }

    /// Launches the TF32 forward (`flashUsesTF32` said yes: no log-sum-exp); q, k, v and out by `layouts` (q, k, v,
    /// and dOut's for out), contiguous by default.
    func flashForwardTF32(q: Buffer, k: Buffer, v: Buffer, out: Buffer, shape s: AttentionShape, scale: Double,
                          layouts: AttentionLayouts? = nil) {
        if s.batch == 0 || s.queries == 0 { return }
        let l = layouts ?? .contiguous(s)
        // 16-byte loads where every row starts on 16 bytes: Dh, Dv and every stride multiples of 4, buffers aligned.
        let strides = [l.q, l.k, l.v].flatMap { [$0.batch, $0.head, $0.token] }
        let vec = s.headDim % 4 == 0 && s.valueDim % 4 == 0 && strides.allSatisfy { $0 % 4 == 0 }
            && [q, k, v].allSatisfy { address($0) % 16 == 0 }
        launch(CUDABackend.flashAttentionTF32Source, "attention_flash_tf32_forward_\(CUDABackend.flashTF32Variant(s))",
               grid: flashGrid(tiles: s.queries, s), block: Dim3(128), sharedBytes: CUDABackend.flashTF32Words(s) * 4,
               [.pointer(address(q)), .pointer(address(k)), .pointer(address(v)), .pointer(address(out)),
                .int64(Int64(s.batch)), .int64(Int64(s.queries)), .int64(Int64(s.keys)),
                .int32(Int32(s.headDim)), .int32(Int32(s.valueDim)), .float(Float(scale))]
                + CUDABackend.layoutArguments(l) + [.int32(vec ? 1 : 0)])
    }

    static let flashTF32Code = #"""
    /// float → tf32 (`cvt.rna.tf32.f32`: to nearest, ties away from zero; the low 13 bits zero), as float bits.
    __device__ __forceinline__ float tf_round(float x) {
    #if !defined(HASTE_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        u32 r;
        asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
        return __uint_as_float(r);
    #else
        const u32 u = __float_as_uint(x);
        if ((u & 0x7f800000u) == 0x7f800000u) return x;            /* inf, NaN as they are */
        return __uint_as_float((u + 0x1000u) & 0xffffe000u);       /* half an ulp on the magnitude, truncated */
    #endif
    }
    /// D = A·B + C of shape m16n8k8, tf32 operands (float bits, low 13 bits zero), float32 C and D; PTX ISA
    /// "Matrix Fragments for mma.m16n8k8" (.tf32): with g = lane >> 2, t = lane & 3,
    ///   a0 = A[g][t], a1 = A[g + 8][t], a2 = A[g][t + 4], a3 = A[g + 8][t + 4];  b0 = B[t][g], b1 = B[t + 4][g];
    ///   c0, c1 = C[g][2t], C[g][2t + 1];  c2, c3 = C[g + 8][2t], C[g + 8][2t + 1].
    /// The emulator: the same sums, k in order, float32 additions (a product of two tf32 values is exact).
    __device__ __forceinline__ void tf_mma(float* d, const u32* a, const u32* b, const float* c) {
    #if !defined(HASTE_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
                     : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                       "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
    #else
        u32 ra[2][8], cb[2][8];   /* rows g, g + 8 of A and columns 2t, 2t + 1 of B, k = 0…7 */
        haste_mma_gather(a, b, ra, cb);
        for (int i = 0; i < 4; i++) {
            float s = c[i];
            for (int j = 0; j < 8; j++) s += __uint_as_float(ra[i >> 1][j]) * __uint_as_float(cb[i & 1][j]);
            d[i] = s;
        }
    #endif
    }
    /// dst[r][c] = tf32(src[r·rs + c]) for r < 64 (0 past rows_left), c < width (0 from cols on); shared row
    /// stride `stride`; 16-byte loads where `vec` (cols and rs multiples of 4, rows 16-byte aligned).
    template <int W>
    __device__ __forceinline__ void tf_load_tile(float* dst, const float* src, i64 rs, i64 rows_left, int cols, int width,
                                                 int stride, int vec) {
        const int w4 = (W > 0 ? W : width) / 4;
        for (int i = threadIdx.x; i < 64 * w4; i += 128) {
            const int r = i / w4, c = 4 * (i - r * w4);
            haste_f4 x = {0.0f, 0.0f, 0.0f, 0.0f};
            if (r < rows_left) {
                const float* p = src + (i64)r * rs + c;
                if (vec && c < cols) x = *(const haste_f4*)p;
                else if (!vec) {
                    if (c < cols) x.x = p[0];
                    if (c + 1 < cols) x.y = p[1];
                    if (c + 2 < cols) x.z = p[2];
                    if (c + 3 < cols) x.w = p[3];
                }
            }
            x.x = tf_round(x.x); x.y = tf_round(x.y); x.z = tf_round(x.z); x.w = tf_round(x.w);
            *(haste_f4*)(dst + r * stride + c) = x;
        }
    }
    /// The forward (see the file notes). W: the padded width of Dh and Dv as a constant (WHOLE), else the
    /// largest (run-time widths, guarded steps).
    template <int W, bool WHOLE>
    __device__ void tf_forward(float* smem, const float* q, const float* k, const float* v, float* out, i64 batch,
                               i64 tq, i64 tk, int dh, int dv, float scale, const tc_layouts& L, int vec) {
        const int kh = WHOLE ? W : ((dh + 7) & ~7), kv = WHOLE ? W : ((dv + 7) & ~7);
        const int sk = kh + 4, sv = kv + 4;
        float* Ks = smem;               /* 64 rows × sk: the query tile first, then each key tile */
        float* Vs = Ks + 64 * sk;       /* 64 rows × sv */
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, m0 = 16 * (threadIdx.x >> 5);
        const float sl = scale * HASTE_LOG2E;
        const i64 tiles = (tq + 63) / 64;
        for (i64 b = blockIdx.y; b < batch; b += gridDim.y) {
            const float* qb = tc_head<true>(q, L, L.q, b, tq, dh);
            const float* kb = tc_head<true>(k, L, L.k, b, tk, dh);
            const float* vb = tc_head<true>(v, L, L.v, b, tk, dv);
            float* ob = tc_head<true>(out, L, L.o, b, tq, dv);
            for (i64 ti = blockIdx.x; ti < tiles; ti += gridDim.x) {
                const i64 r0 = ti * 64;
                __syncthreads();                          /* the previous tile's readers of Ks, Vs are done */
                tf_load_tile<WHOLE ? W : 0>(Ks, qb + r0 * L.q.t_, L.q.t_, tq - r0, dh, kh, sk, vec);
                __syncthreads();
                u32 qa[W / 8][4];                         /* this warp's 16 query rows, k-step by k-step */
                #pragma unroll
                for (int kk = 0; kk < W / 8; kk++) {
                    if (WHOLE || 8 * kk < kh)
                        haste_ldmatrix_x4(qa[kk], (const u32*)(Ks + (m0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * sk + 8 * kk + 4 * (lane >> 4)));
                }
                float o[W / 8][4];
                #pragma unroll
                for (int n = 0; n < W / 8; n++) { o[n][0] = 0.0f; o[n][1] = 0.0f; o[n][2] = 0.0f; o[n][3] = 0.0f; }
                float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};   /* rows g, g + 8 */
                for (i64 c0 = 0; c0 < tk; c0 += 64) {
                    __syncthreads();                      /* Q's fragments, the previous key tile's readers are done */
                    tf_load_tile<WHOLE ? W : 0>(Ks, kb + c0 * L.k.t_, L.k.t_, tk - c0, dh, kh, sk, vec);
                    tf_load_tile<WHOLE ? W : 0>(Vs, vb + c0 * L.v.t_, L.v.t_, tk - c0, dv, kv, sv, vec);
                    __syncthreads();
                    float s[8][4];
                    #pragma unroll
                    for (int j = 0; j < 8; j++) { s[j][0] = 0.0f; s[j][1] = 0.0f; s[j][2] = 0.0f; s[j][3] = 0.0f; }
                    #pragma unroll
                    for (int kk = 0; kk < W / 8; kk++) {  /* S = Q·Kᵀ: two key n-tiles per ldmatrix */
                        if (WHOLE || 8 * kk < kh) {
                            #pragma unroll
                            for (int jp = 0; jp < 4; jp++) {
                                u32 kf[4];
                                haste_ldmatrix_x4(kf, (const u32*)(Ks + (16 * jp + (lane & 7) + 8 * (lane >> 4)) * sk + 8 * kk + 4 * ((lane >> 3) & 1)));
                                tf_mma(s[2 * jp], qa[kk], kf, s[2 * jp]);
                                tf_mma(s[2 * jp + 1], qa[kk], kf + 2, s[2 * jp + 1]);
                            }
                        }
                    }
                    tc_softmax_tile<W>(s, o, m, l, sl, c0, tk, t);   /* s becomes P, o and l rescaled */
                    #pragma unroll
                    for (int j = 0; j < 8; j++) {         /* O += P·V, k-step j = keys 8j…8j + 7 */
                        const u32 pa[4] = {__float_as_uint(tf_round(s[j][0])), __float_as_uint(tf_round(s[j][2])),
                                           __float_as_uint(tf_round(s[j][1])), __float_as_uint(tf_round(s[j][3]))};
                        const float* v0 = Vs + (8 * j + 2 * t) * sv + g;
                        #pragma unroll
                        for (int n = 0; n < W / 8; n++) {
                            if (WHOLE || 8 * n < kv) {
                                const u32 vf[2] = {__float_as_uint(v0[8 * n]), __float_as_uint(v0[sv + 8 * n])};
                                tf_mma(o[n], pa, vf, o[n]);
                            }
                        }
                    }
                }
                const float iA = 1.0f / l[0], iB = 1.0f / l[1];   /* l > 0: Tk > 0 (flashUsesTF32) */
                const i64 rowA = r0 + m0 + g, rowB = rowA + 8;
                #pragma unroll
                for (int n = 0; n < W / 8; n++) {
                    const int col = 8 * n + 2 * t;
                    if ((WHOLE || 8 * n < kv) && col < dv) {
                        const bool pair = col + 1 < dv;
                        if (rowA < tq) {
                            float* p = ob + rowA * L.o.t_ + col;
                            p[0] = o[n][0] * iA;
                            if (pair) p[1] = o[n][1] * iA;
                        }
                        if (rowB < tq) {
                            float* p = ob + rowB * L.o.t_ + col;
                            p[0] = o[n][2] * iB;
                            if (pair) p[1] = o[n][3] * iB;
                        }
                    }
                }
            }
        }
    }
    """#
}
