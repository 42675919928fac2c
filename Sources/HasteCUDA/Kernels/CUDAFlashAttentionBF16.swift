import HasteTensor

/// Flash attention on the tensor cores for Autocast bf16 (`--mixed-precision bf16`): the FlashAttention-2
/// structure of CUDAFlashAttention.swift (same tiles of 64 query × 64 key rows, 128 threads, online softmax,
/// out + lse saved, P recomputed in the backward, one owner per gradient row, no atomics) with every tile product
/// a warp-level `haste_mma_bf16_16816` (Prelude.swift: mma.sync m16n8k16 on sm_80+).
///    - Warps: each of the 4 warps owns 16 of the 64 rows (query rows in the forward and dq, key rows in dk/dv;
///      the WHOLE forward: 32 of 128 query rows, see below);
///      a lane holds rows g = lane/4 and g + 8 of its warp's 16, so row max and sum meet over the 4 lanes of a quad
///      (two `__shfl_xor_sync`). P (and dS) go from the S accumulator fragments straight into the A operand of the
///      next product (the C layout of n-tiles 2j, 2j + 1 is the A layout of k-step j): no Ps/dSs shared buffers.
///    - Operands: q, k, v, dOut are float32 carriers of bf16 values (Autocast rounds them before the op), packed
///      to bf16 pairs while the tiles are loaded into shared memory (`haste_pack_bf16x2`: exact for carriers); or
///      (the `_in16_` families, `attentionTakesBF16Operands`: Autocast's bf16 branches) bf16 buffers, whose pairs
///      are the packed words as they are (half the bytes read and staged; the same bits, FlashBF16OperandTests).
///      Every tile is row-major (Q, K, V, dO), Dh (Dv) padded with zeros to a multiple of 16 (SiT-XL/2's 72 → 80),
///      row stride D/2 + 4 words (the 8 rows of 16 bytes an ldmatrix reads fall in distinct banks), loaded with
///      float2 reads, TC_BATCH per thread in flight, no division per element (`tc_load_rows`). The mma fragments
///      come by `haste_ldmatrix_x4`: A operands and the column-major B operands of ·Kᵀ, ·Vᵀ, ·Qᵀ, ·dOᵀ straight,
///      the B operands of P·V, dS·K, dSᵀ·Q and Pᵀ·dO transposed on the way (`haste_ldmatrix_x4<true>`), so no
///      transposed copy of any tile exists. Rows past Tq/Tk load as zeros.
///    - Rounding points (everything else float32, accumulation float32 in the mma):
///      forward: S = q̃·k̃ᵀ (exact products), P = exp(scale·S − m) in float32 (as 2^(fma(sl, S, −m')), sl =
///      scale·log₂e, m' the row max of sl·S in log₂ units taken as sl·max S, by `haste_exp2`: one ex2.approx; the
///      backward recomputes P with the same fma), l = Σ P over the float32 values,
///      O += bf16(P)·ṽ, out = O / l, lse = m'·ln 2 + log l (float32). Backward: S, dP = dÕ·ṽᵀ in float32 from bf16
///      operands, P = exp(scale·S − lse) (likewise in log₂ units), dS = P ⊙ (dP − D) with D = rowsum(dOut ⊙ out) (float32, the fp32
///      family's `attention_flash_row_dot`); dv += bf16(P)ᵀ·dÕ, dq += bf16(dS)·k̃, dk += bf16(dS)ᵀ·q̃, then
///      dq, dk ·= scale. Compared with the CPU Autocast reference (float32 attention on the same carriers, its
///      output and gradients then rounded to bf16 by the composite, which this op also does), the differences
///      are the bf16 roundings of P and dS before their products (relative 2⁻⁹ each) and the summation order.
///    - Entry points per register width: _d64 (max(Dh, Dv) ≤ 64), _d80 (SiT-XL/2's 72), _d96, _d128.
///    - Direct (the `attention_flash_bf16_direct_in16_*` family, `flashBF16Direct`: bf16 operands, Dh and Dv multiples
///      of 8): the streamed tiles go by cp.async straight from global memory into two pair-tile buffers each
///      (`tc_issue_rows`: a bf16 pair is a packed word as it lies, so there is nothing to pack), one tile ahead, with
///      one barrier per tile; the padding columns are zeroed once per block. No stage and no stage → tile pass
///      (per SiT-XL/2 key tile 2 × 64 × 36 words each thread-block copied through registers), the same bits.
///      Whole key tiles skip the column mask (forward, dq). The direct kernels also take each operand's layout
///      (`tc_layouts`, `AttentionLayouts`: head b's rows at (b / heads)·n + (b % heads)·h + t·t_), so the bf16
///      attention branch hands them q, k, v inside qkv's [N, T, 3·D] output, dOut inside proj's dx, and has dq, dk,
///      dv written into qkv's gradient: no head copies (7 a block and step, 38 MB each for SiT-XL/2 at batch 64).
///      ptxas (NVRTC 12.9, sm_90), d80: forward 167 registers (the key-tile loop 854 SASS instructions, 1 537 for the
///      `_async_in16_` kernel before these changes), dk/dv 255 and 80 bytes of stack (its loop 1 362, 2 390 before).
///    - Whole (the direct family's `…_d64w`/`_d80w`/`_d96w`/`_d128w` entry points, `flashBF16Whole`: Dh and Dv both
///      pad to the width, as SiT's 72 → 80 and 64 → 64): the tile widths, strides and fragment offsets are
///      compile-time constants (`tc_width`), so no n-tile or k-step guard branches between the mma pairs and
///      ptxas schedules the ldmatrix reads ahead of the products (the general loop loaded each fragment right before
///      its mma, behind a branch). The WHOLE forward also takes query tiles of 128 rows, two m-tiles of 16 per warp
///      (`tc_dots_m`, `tc_accumulate_m`: each K and V fragment read once for both), with Q by cp.async too: per key
///      tile and warp 160 mma for 50 ldmatrix.x4 (80 for 45 before). The reason: 4 warps each reading the whole K and
///      V tiles made the forward shared-memory bound (an ldmatrix.x4 moves 512 bytes, 4 of the SM's 128-byte cycles;
///      180 per block and tile against 320 mma). sm_90 d80: forward 255 registers, 16 bytes of stack (3 local
///      loads per key tile), 2 blocks per SM; dk/dv 255 and 8, its serial entry point `_d80ws` (SiT-XL/2's) 255 and 0
///      with the early load and the serial sum's stores by one uniform branch on the last tile (2026-12-07); dq 240.
///      Each row's arithmetic is the general kernels' (the same bits: FlashBF16OperandTests).
///    - Dynamic shared memory (4-byte words; kh, kv = Dh, Dv rounded up to 16; sq = kh/2 + 4, sv = kv/2 + 4):
///      forward 64·sq·2 + 64·sv (the WHOLE forward's 128 query rows: 64·sq more); dq 64·sq·2 + 64·sv·2; dk/dv
///      64·sq·2 + 64·sv·2 + 128 (streaming: see below).
///      In bytes for Dh = Dv = 64 / 72 / 128: forward 27 648 / 33 792 / 52 224; dq 36 864 / 45 056 / 69 632;
///      dk/dv 37 376 / 45 568 / 70 144.
///    - Registers per thread on sm_90 (ptxas -v through NVRTC 12.9, d64 / d80 / d96 / d128): forward 134 / 128 /
///      168 / 237, dq 128 / 167 / 242 / 255, dk/dv 237 / 247 / 255 / 255 with 0 / 0 / 52 / 256 bytes of spills.
///      The PTX holds mma.sync, ldmatrix and no shuffle-built products. dk/dv keeps Sᵀ, dPᵀ (64 floats) and two
///      D-wide accumulators per thread; dk and dv in two passes, or 8 warps over 128 key rows, would relieve the
///      wider ones.
///    - dq from dk/dv (up to `flashFusedDQTiles` = 4 key tiles: SiT's 256 tokens): the dk/dv kernel stores bf16(dSᵀ)
///      in shared memory (64 × 36 words more) and multiplies it back, transposed by ldmatrix, with its K tile into
///      this key tile's share of dq; `attention_flash_dq_sum` adds the shares in key-tile order (the direct family:
///      each query tile's last block adds them while they are in L2, `tc_dq_last_block`, the same sum and bits; an
///      atomic count per query tile and head, no waiting; `HASTE_FLASH_DQ_LAST_BLOCK=0` keeps the kernel). Serially
///      (`flashDQSerialFits`: enough heads to fill the GPU, as SiT-XL/2's rows; `HASTE_FLASH_DQ_SERIAL`), one block per
///      head walks its key tiles in order and each thread keeps its dq elements' running sum in one float32 buffer
///      (`tc_dq_serial`): no partials per key tile, no fence, atomic count and barriers per query tile (the last-block
///      sum's MEMBAR.SC.GPU and ATOMG), no zeroing launch; the same sum and bits. Which of these ways (and the
///      WHOLE or general entry points) runs is timed on the device at a shape's first call (`LaunchTuner`; the rule
///      above is tried first and runs where nothing can be timed). The dq kernel (which
///      computes S and dP a second time) runs only for longer keys. dq differs from the dq kernel's in the order of
///      its float32 sums (on 8 shapes: 3 of 72 145 elements differ, by one bf16 ulp); out, dk, dv are the same
///      bits. The emulator runs the warps in step between shuffles, so it would not catch a missing barrier before
///      the dSᵀ tile is read: keep the one there.
///    - Streaming (the `attention_flash_bf16_async_*` family, `flashBF16Async` chooses it): the tiles a block walks
///      (K and V in the forward and dq, q and dOut in dk/dv, and there lse and D too) are copied with cp.async into a
///      float32 stage (64 rows of Dh and of Dv more shared memory) one tile ahead, so the next tile's global reads
///      overlap this tile's products. The stage is packed to bf16 pairs: the same bits as the synchronous kernels.
///      On sm_90 the d80 kernels take 153 / 167 / 255 registers (forward / dq / dk/dv), no spills; shared memory
///      70 656 / 81 920 / 82 944 bytes (+ 9 216 with dq: 3 forward blocks per SM, 2 of the backward ones).
///    - On the H200, SiT-XL/2 bs64 bf16, ms per step (28 calls each; cuDNN: 8.5 in all) forward / dq / dk/dv:
///      session 15's kernels 24.8 / 51.0 / 58.4 (latency-bound: one global load per thread in flight); float2 loads
///      and shared-memory transposes 29.8 / 48.7 / 52.7; streaming 20.4 / 27.3 / 33.1; batched loads, transposes
///      from the stage, 3 forward blocks per SM 11.8 / 21.4 / 24.6 (2979dd6). ldmatrix, the direct, in-place and
///      WHOLE kernels since: not measured yet.
///      Left out: TMA and wgmma on sm_90.
extension CUDABackend {
    /// The tile helpers (CUDAFlashAttentionBF16Tiles.swift) and steps (…Steps.swift), then the three kernels.
    static let flashBF16Code = flashBF16TileCode + "\n" + flashBF16StepCode + "\n" + #"""
    /// Forward: one block per (query tile, head), online softmax over key tiles; see the file notes. MT m-tiles
    /// per warp: query tiles of 64·MT rows, warp w's rows 16·MT·w…, every K and V fragment read once for its MT
    /// m-tiles (MT = 2: the direct WHOLE entry points; each row's arithmetic as with MT = 1, the same bits).
    template <int DMAX, bool ASYNC, typename T, bool DIRECT = false, bool WHOLE = false, int MT = 1>
    __device__ void tc_forward(u32* smem, const T* q, const T* k, const T* v, float* out, float* lse,
                               i64 batch, i64 tq, i64 tk, int dh, int dv, float scale, const tc_layouts& L, T* o16 = 0) {
        const int kh = tc_width<DMAX, WHOLE>(dh), kv = tc_width<DMAX, WHOLE>(dv), sq = kh / 2 + 4, sv = kv / 2 + 4;
        constexpr int ROWS = 64 * MT;
        u32* Qs = smem;                       /* ROWS query rows */
        u32* Ks = Qs + ROWS * sq;
        u32* Vs = Ks + 64 * sq;
        T* SK = (T*)(Vs + 64 * sv);           /* ASYNC: the next key tile's K and V as given (T), in flight */
        T* SV = SK + 64 * dh;
        u32* K1 = Vs + 64 * sv;               /* DIRECT: the second buffers of the key tiles, where the stage is */
        u32* V1 = K1 + 64 * sq;
        if constexpr (DIRECT) {
            tc_zero_paddings(Ks, K1, Vs, V1, dh, dv, kh, kv, sq, sv);
            #pragma unroll
            for (int h = 0; h < MT; h++) tc_zero_padding(Qs + 64 * h * sq, dh, kh, sq);
        }
        const int lane = threadIdx.x & 31, t = lane & 3, m0 = 16 * MT * (threadIdx.x >> 5);
        const float sl = scale * HASTE_LOG2E;  // scores in log₂ units: exp(scale·s − x) = 2^(sl·s − x·log₂e)
        const i64 tiles = (tq + ROWS - 1) / ROWS;
        for (i64 b = blockIdx.y; b < batch; b += gridDim.y) {
            const tc_rows<T> R = tc_head_rows<DIRECT>(q, k, v, q, L, b, tq, tk, dh, dv);      // head b's rows
            const T *qb = R.q, *kb = R.k, *vb = R.v;
            const i64 qs = R.qs, ks = R.ks, vs = R.vs;
            for (i64 ti = blockIdx.x; ti < tiles; ti += gridDim.x) {
                const i64 r0 = ti * ROWS;
                __syncthreads();                       // the previous tile's readers of Qs (and the stage) are done
                tc_first_key_tile<ASYNC, DIRECT>(Ks, Vs, SK, SV, kb, vb, ks, vs, k, v, b, tk, dh, dv, sq, sv);
                #pragma unroll
                for (int h = 0; h < MT; h++) {         // DIRECT: by cp.async with the first key tile (its wait covers both)
                    if constexpr (DIRECT) tc_issue_rows(Qs + 64 * h * sq, qb + (r0 + 64 * h) * qs, tq - r0 - 64 * h, dh, sq, qs);
                    else tc_load_rows<DMAX>(Qs + 64 * h * sq, qb + (r0 + 64 * h) * qs, tq - r0 - 64 * h, dh, kh / 2, sq, qs);
                }
                float o[MT][DMAX / 8][4];
                float m[MT][2], l[MT][2];
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    #pragma unroll
                    for (int nt = 0; nt < DMAX / 8; nt++) { o[mt][nt][0] = 0.0f; o[mt][nt][1] = 0.0f; o[mt][nt][2] = 0.0f; o[mt][nt][3] = 0.0f; }
                    m[mt][0] = -INFINITY; m[mt][1] = -INFINITY; l[mt][0] = 0.0f; l[mt][1] = 0.0f;
                }
                for (i64 c0 = 0; c0 < tk; c0 += 64) {
                    u32* Kc = Ks;
                    u32* Vc = Vs;
                    if constexpr (DIRECT) tc_key_tile_direct(Kc, Vc, Ks, Vs, K1, V1, kb, vb, ks, vs, tk, c0, dh, dv, sq, sv);
                    else tc_key_tile<DMAX, ASYNC, T>(Ks, Vs, SK, SV, k, v, b, tk, c0, dh, dv, sq, sv);
                    float s[MT][8][4];
                    tc_dots_m<DMAX, MT>(s, Qs, sq, m0, Kc, sq, kh / 16);
                    #pragma unroll
                    for (int mt = 0; mt < MT; mt++) tc_softmax_tile<DMAX>(s[mt], o[mt], m[mt], l[mt], sl, c0, tk, t);
                    tc_accumulate_m<DMAX, MT>(o, s, Vc, sv, kv / 8);   // O += bf16(P)·V
                }
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const float inv[2] = {l[mt][0] > 0.0f ? 1.0f / l[mt][0] : 0.0f, l[mt][1] > 0.0f ? 1.0f / l[mt][1] : 0.0f};
                    if (out != 0) tc_store<DMAX>(out + b * tq * dv, o[mt], r0 + m0 + 16 * mt, tq, dv, inv, (i64)dv);
                    if constexpr (DIRECT) {             // DIRECT with o16: bf16(out) merged into tokens (the dOut layout; out may be null)
                        if (o16 != 0) tc_store<DMAX>(tc_head<true>(o16, L, L.o, b, tq, dv), o[mt], r0 + m0 + 16 * mt, tq, dv, inv, L.o.t_);
                    }
                    if (lse != 0 && t == 0) {
                        #pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const i64 r = r0 + m0 + 16 * mt + (lane >> 2) + 8 * h;
                            if (r < tq) lse[b * tq + r] = l[mt][h] > 0.0f ? m[mt][h] * HASTE_LN2 + logf(l[mt][h]) : -INFINITY;
                        }
                    }
                }
            }
        }
    }

    /// dq = scale·bf16(dS)·k, dS = P ⊙ (dO·vᵀ − D), P = exp(scale·q·kᵀ − lse): one block per (query tile, head).
    template <int DMAX, bool ASYNC, typename T, typename TO, bool DIRECT = false, bool WHOLE = false>
    __device__ void tc_backward_dq(u32* smem, const T* q, const T* k, const T* v, const T* dout,
                                   const float* lse, const float* delta, TO* dq,
                                   i64 batch, i64 tq, i64 tk, int dh, int dv, float scale, const tc_layouts& L) {
        const int kh = tc_width<DMAX, WHOLE>(dh), kv = tc_width<DMAX, WHOLE>(dv), sq = kh / 2 + 4, sv = kv / 2 + 4;
        u32* Qs = smem;
        u32* Ks = Qs + 64 * sq;
        u32* dOs = Ks + 64 * sq;
        u32* Vs = dOs + 64 * sv;
        T* SK = (T*)(Vs + 64 * sv);           /* ASYNC: the next key tile's K and V as given (T), in flight */
        T* SV = SK + 64 * dh;
        u32* K1 = Vs + 64 * sv;               /* DIRECT: the second buffers of the key tiles, where the stage is */
        u32* V1 = K1 + 64 * sq;
        if constexpr (DIRECT) tc_zero_paddings(Ks, K1, Vs, V1, dh, dv, kh, kv, sq, sv);
        const int lane = threadIdx.x & 31, t = lane & 3, m0 = 16 * (threadIdx.x >> 5);
        const float sl = scale * HASTE_LOG2E;  // scores in log₂ units: exp(scale·s − x) = 2^(sl·s − x·log₂e)
        const i64 tiles = (tq + 63) / 64;
        for (i64 b = blockIdx.y; b < batch; b += gridDim.y) {
            const tc_rows<T> R = tc_head_rows<DIRECT>(q, k, v, dout, L, b, tq, tk, dh, dv);   // head b's rows
            const T *qb = R.q, *kb = R.k, *vb = R.v, *ob = R.o;
            const i64 qs = R.qs, ks = R.ks, vs = R.vs, os = R.os;
            for (i64 ti = blockIdx.x; ti < tiles; ti += gridDim.x) {
                const i64 r0 = ti * 64;
                __syncthreads();
                tc_first_key_tile<ASYNC, DIRECT>(Ks, Vs, SK, SV, kb, vb, ks, vs, k, v, b, tk, dh, dv, sq, sv);
                tc_load_rows<DMAX>(Qs, qb + r0 * qs, tq - r0, dh, kh / 2, sq, qs);
                tc_load_rows<DMAX>(dOs, ob + r0 * os, tq - r0, dv, kv / 2, sv, os);
                float lr[2], dr[2];
                #pragma unroll
                for (int h = 0; h < 2; h++) {
                    const i64 r = r0 + m0 + (lane >> 2) + 8 * h;
                    lr[h] = r < tq ? lse[b * tq + r] * HASTE_LOG2E : 0.0f;   // in log₂ units
                    dr[h] = r < tq ? delta[b * tq + r] : 0.0f;
                }
                float acc[DMAX / 8][4];
                #pragma unroll
                for (int nt = 0; nt < DMAX / 8; nt++) { acc[nt][0] = 0.0f; acc[nt][1] = 0.0f; acc[nt][2] = 0.0f; acc[nt][3] = 0.0f; }
                for (i64 c0 = 0; c0 < tk; c0 += 64) {
                    u32* Kc = Ks;
                    u32* Vc = Vs;
                    if constexpr (DIRECT) tc_key_tile_direct(Kc, Vc, Ks, Vs, K1, V1, kb, vb, ks, vs, tk, c0, dh, dv, sq, sv);
                    else tc_key_tile<DMAX, ASYNC, T>(Ks, Vs, SK, SV, k, v, b, tk, c0, dh, dv, sq, sv);
                    float s[8][4], dp[8][4];
                    tc_dots<DMAX>(s, Qs, sq, m0, Kc, sq, kh / 16);
                    tc_dots<DMAX>(dp, dOs, sv, m0, Vc, sv, kv / 16);
                    const bool whole = c0 + 64 <= tk;  // no column past Tk to mask
                    #pragma unroll
                    for (int nt = 0; nt < 8; nt++) {
                        #pragma unroll
                        for (int i = 0; i < 4; i++) {
                            const float p = whole || c0 + 8 * nt + 2 * t + (i & 1) < tk ? haste_exp2(fmaf(sl, s[nt][i], -lr[i >> 1])) : 0.0f;
                            s[nt][i] = p * (dp[nt][i] - dr[i >> 1]);   // dS
                        }
                    }
                    tc_accumulate<DMAX>(acc, s, Kc, sq, kh / 8);   // dq += bf16(dS)·K
                }
                const float mul[2] = {scale, scale};
                tc_store<DMAX>(tc_head<DIRECT>(dq, L, L.dq, b, tq, dh), acc, r0 + m0, tq, dh, mul, tc_stride<DIRECT>(L.dq, dh));
            }
        }
    }

    /// dk = scale·bf16(dS)ᵀ·q, dv = bf16(P)ᵀ·dO: one block per (key tile, head), looping over query tiles; the
    /// warp's 16 key rows compute Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ. dk or dv may be null (not computed). With `dqp`, also
    /// this key tile's share of dq, scale·bf16(dS)·k over its 64 keys, into dqp[key tile][head][query][Dh] (the
    /// host sums the tiles in order, `attention_flash_dq_sum`): bf16(dSᵀ) goes through shared memory (DSt, 64 keys ×
    /// 64 queries) and comes back transposed by ldmatrix as the A operand of dS·K. The separate dq kernel would
    /// compute S and dP a second time. DIRECT with dq and no `dqcount`: launched with gridDim.x 1, the block walks
    /// every key tile of its head and dqp is the running sum (`tc_dq_serial`).
    template <int DMAX, bool ASYNC, typename T, typename TO, bool DIRECT = false, bool WHOLE = false, bool SERIAL = false,
              bool EARLY = true>
    __device__ void tc_backward_dkdv(u32* smem, const T* q, const T* k, const T* v, const T* dout,
                                     const float* lse, const float* delta, TO* dk, TO* dvout, float* dqp,
                                     i64 batch, i64 tq, i64 tk, int dh, int dv, float scale, const tc_layouts& L,
                                     TO* dq = 0, unsigned* dqcount = 0) {
        const int kh = tc_width<DMAX, WHOLE>(dh), kv = tc_width<DMAX, WHOLE>(dv), sq = kh / 2 + 4, sv = kv / 2 + 4;
        u32* Ks = smem;
        u32* Qs = Ks + 64 * sq;
        u32* Vs = Qs + 64 * sq;
        u32* dOs = Vs + 64 * sv;
        float* Ls = (float*)(dOs + 64 * sv);  /* ASYNC: two tiles' lse and D (this one, the next in flight) */
        float* Ds = Ls + (ASYNC ? 128 : 64);
        T* SQ = (T*)(Ds + (ASYNC ? 128 : 64));    /* ASYNC: the next query tile's q and dOut as given (T), in flight */
        T* SO = SQ + 64 * dh;
        u32* Q1 = (u32*)SQ;                   /* DIRECT: the second buffers of q's and dOut's tiles, where the stage is */
        u32* O1 = Q1 + 64 * sq;
        u32* DSt = DIRECT ? O1 + 64 * sv : (u32*)(ASYNC ? SO + 64 * dv : SQ);   /* with dqp: bf16(dSᵀ), 64 keys × 32 query pairs + 4 */
        if constexpr (DIRECT) tc_zero_paddings(Qs, Q1, dOs, O1, dh, dv, kh, kv, sq, sv);
        const int lane = threadIdx.x & 31, t = lane & 3, m0 = 16 * (threadIdx.x >> 5);
        const float sl = scale * HASTE_LOG2E;  // scores in log₂ units: exp(scale·s − x) = 2^(sl·s − x·log₂e)
        const i64 tiles = (tk + 63) / 64;
        for (i64 b = blockIdx.y; b < batch; b += gridDim.y) {
            const tc_rows<T> R = tc_head_rows<DIRECT>(q, k, v, dout, L, b, tq, tk, dh, dv);   // head b's rows
            const T *qb = R.q, *kb = R.k, *vb = R.v, *ob = R.o;
            const i64 qs = R.qs, ks = R.ks, vs = R.vs, os = R.os;
            for (i64 ti = blockIdx.x; ti < tiles; ti += gridDim.x) {
                const i64 c0 = ti * 64;
                __syncthreads();
                if constexpr (DIRECT) {
                    tc_issue_rows(Qs, qb, tq, dh, sq, qs);
                    tc_issue_rows(dOs, ob, tq, dv, sv, os);
                    tc_stage_stats(Ls, Ds, lse, delta, b * tq, tq);
                } else if (ASYNC) {
                    tc_stage_rows(SQ, q + b * tq * dh, tq, dh);
                    tc_stage_rows(SO, dout + b * tq * dv, tq, dv);
                    tc_stage_stats(Ls, Ds, lse, delta, b * tq, tq);
                }
                tc_load_rows<DMAX>(Ks, kb + c0 * ks, tk - c0, dh, kh / 2, sq, ks);
                tc_load_rows<DMAX>(Vs, vb + c0 * vs, tk - c0, dv, kv / 2, sv, vs);
                float gk[DMAX / 8][4], gv[DMAX / 8][4];
                #pragma unroll
                for (int nt = 0; nt < DMAX / 8; nt++) {
                    #pragma unroll
                    for (int i = 0; i < 4; i++) { gk[nt][i] = 0.0f; gv[nt][i] = 0.0f; }
                }
                for (i64 r0 = 0; r0 < tq; r0 += 64) {
                    const int cur = ASYNC ? (int)((r0 >> 6) & 1) * 64 : 0;   // this tile's lse and D in Ls, Ds
                    u32* Qc = Qs;                       // this query tile's q and dOut (DIRECT: buffer cur / 64)
                    u32* Oc = dOs;
                    if constexpr (DIRECT) {             // one barrier: the tile has landed, the other buffers' readers are done
                        haste_cp_async_wait_all();
                        __syncthreads();
                        if (cur != 0) { Qc = Q1; Oc = O1; }
                        if (r0 + 64 < tq) {
                            tc_issue_rows(cur != 0 ? Qs : Q1, qb + (r0 + 64) * qs, tq - r0 - 64, dh, sq, qs);
                            tc_issue_rows(cur != 0 ? dOs : O1, ob + (r0 + 64) * os, tq - r0 - 64, dv, sv, os);
                            tc_stage_stats(Ls + 64 - cur, Ds + 64 - cur, lse, delta, b * tq + r0 + 64, tq - r0 - 64);
                        }
                    } else {
                        if (ASYNC) haste_cp_async_wait_all();
                        __syncthreads();
                        tc_load_rows<DMAX>(Qs, ASYNC ? SQ : q + (b * tq + r0) * dh, tq - r0, dh, kh / 2, sq, dh);
                        tc_load_rows<DMAX>(dOs, ASYNC ? SO : dout + (b * tq + r0) * dv, tq - r0, dv, kv / 2, sv, dv);
                        if (!ASYNC) {
                            for (int i = threadIdx.x; i < 64; i += TC_THREADS) {
                                const bool live = r0 + i < tq;  // rows past Tq: P = exp(· − ∞) = 0, dS = 0
                                Ls[i] = live ? lse[b * tq + r0 + i] : INFINITY;
                                Ds[i] = live ? delta[b * tq + r0 + i] : 0.0f;
                            }
                        }
                        __syncthreads();
                        if (ASYNC && r0 + 64 < tq) {
                            tc_stage_rows(SQ, q + (b * tq + r0 + 64) * dh, tq - r0 - 64, dh);
                            tc_stage_rows(SO, dout + (b * tq + r0 + 64) * dv, tq - r0 - 64, dv);
                            tc_stage_stats(Ls + 64 - cur, Ds + 64 - cur, lse, delta, b * tq + r0 + 64, tq - r0 - 64);
                        }
                    }
                    float s[8][4], dp[8][4];
                    tc_dots<DMAX>(s, Ks, sq, m0, Qc, sq, kh / 16);     // Sᵀ
                    tc_dots<DMAX>(dp, Vs, sv, m0, Oc, sv, kv / 16);    // dPᵀ
                    #pragma unroll
                    for (int nt = 0; nt < 8; nt++) {
                        #pragma unroll
                        for (int i = 0; i < 4; i++) {
                            const int r = 8 * nt + 2 * t + (i & 1);
                            const float p = haste_exp2(fmaf(sl, s[nt][i], -Ls[cur + r] * HASTE_LOG2E));
                            s[nt][i] = p;
                            dp[nt][i] = p * (dp[nt][i] - Ds[cur + r]);    // dSᵀ
                        }
                    }
                    if (dqp != 0) {                     // bf16(dSᵀ) rows m0 + g, m0 + g + 8 (keys), query pairs 4nt + t
                        #pragma unroll
                        for (int nt = 0; nt < 8; nt++) {
                            DSt[(m0 + (lane >> 2)) * 36 + 4 * nt + t] = haste_pack_bf16x2(dp[nt][0], dp[nt][1]);
                            DSt[(m0 + (lane >> 2) + 8) * 36 + 4 * nt + t] = haste_pack_bf16x2(dp[nt][2], dp[nt][3]);
                        }
                    }
                    if (dvout != 0) tc_accumulate<DMAX>(gv, s, Oc, sv, kv / 8);    // dv += bf16(Pᵀ)·dO
                    if (dk != 0) tc_accumulate<DMAX>(gk, dp, Qc, sq, kh / 8);      // dk += bf16(dSᵀ)·Q
                    if (dqp != 0) {                     // this key tile's dq for the warp's 16 queries m0…
                        // the serial running sum (one block per head): loaded now, added after dS·K (tc_dq_serial_load)
                        // (the serial entry points alone: elsewhere the 40 registers it holds across dS·K would spill;
                        // EARLY false, the "…sl" entry points: loaded right before the adds, for comparisons)
                        haste_f2 prev[2][DMAX / 8];
                        if constexpr (SERIAL && EARLY) tc_dq_serial_load<DMAX>(prev, dqp + b * tq * dh, r0 + m0, tq, dh, ti == 0);
                        __syncthreads();                // every warp's dSᵀ rows are in DSt
                        float gq[DMAX / 8][4];
                        #pragma unroll
                        for (int nt = 0; nt < DMAX / 8; nt++) { gq[nt][0] = 0.0f; gq[nt][1] = 0.0f; gq[nt][2] = 0.0f; gq[nt][3] = 0.0f; }
                        tc_accumulate_t<DMAX>(gq, DSt, m0, Ks, sq, kh / 8);
                        const float mul[2] = {scale, scale};
                        if constexpr (DIRECT) {
                            if (SERIAL || (dq != 0 && dqcount == 0)) {   // the serial entry points, or one block per head (gridDim.x 1)
                                if constexpr (!(SERIAL && EARLY)) tc_dq_serial_load<DMAX>(prev, dqp + b * tq * dh, r0 + m0, tq, dh, ti == 0);
                                tc_dq_serial<DMAX>(dqp + b * tq * dh, tc_head<true>(dq, L, L.dq, b, tq, dh), L.dq.t_, gq, prev,
                                                   r0 + m0, tq, dh, scale, ti == 0, ti == tiles - 1);
                            } else {                        // bf16 dq by the query tile's last block (tc_dq_last_block)
                                tc_store<DMAX>(dqp + (ti * batch + b) * tq * dh, gq, r0 + m0, tq, dh, mul, (i64)dh);
                                if (dqcount != 0) tc_dq_last_block(dqp, dq, L, dqcount, b, batch, tq, dh, r0, tiles);
                            }
                        } else {
                            tc_store<DMAX>(dqp + (ti * batch + b) * tq * dh, gq, r0 + m0, tq, dh, mul, (i64)dh);
                        }
                    }
                }
                const float one[2] = {1.0f, 1.0f}, mul[2] = {scale, scale};
                if (dk != 0) tc_store<DMAX>(tc_head<DIRECT>(dk, L, L.dk, b, tk, dh), gk, c0 + m0, tk, dh, mul, tc_stride<DIRECT>(L.dk, dh));
                if (dvout != 0) tc_store<DMAX>(tc_head<DIRECT>(dvout, L, L.dv, b, tk, dv), gv, c0 + m0, tk, dv, one, tc_stride<DIRECT>(L.dv, dv));
            }
        }
    }

    """#
}
