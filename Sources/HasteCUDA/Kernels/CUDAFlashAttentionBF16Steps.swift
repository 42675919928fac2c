import HasteTensor

/// The per-tile steps of the bf16 tensor-core flash kernels (CUDAFlashAttentionBF16.swift: the file notes) that are
/// not tile loads or products (CUDAFlashAttentionBF16Tiles.swift): the forward's online softmax, and dk/dv's dq
/// summed by each query tile's last block.
extension CUDABackend {
    /// The forward's online softmax over a key tile, on mma accumulator fragments (16 rows × 64 keys: the C layout
    /// of m16n8k16 bf16 and of m16n8k8 tf32 alike): the bf16 forward and the TF32 forward (CUDAFlashAttentionTF32.swift).
    static let flashSoftmaxStepCode = #"""
    /// The forward's online softmax over one key tile for one m-tile (16 rows; a lane's rows g and g + 8): the S
    /// fragments `s` become P = 2^(sl·S − m') (one fma and one ex2 per element; MASK: columns past Tk give 0), the
    /// running max m' (log₂ units), sum l and the output accumulators `o` are rescaled by 2^(m'_old − m'_new).
    /// The tile's max of sl·S is taken over S and scaled once: max(sl·S) = sl·max(S) exactly for sl ≥ 0 (rounding
    /// is monotone); a negative sl (never from 1/√Dh) scales S first and goes on with sl = 1.
    template <int DMAX, bool MASK>
    __device__ __forceinline__ void tc_softmax_pass(float (*s)[4], float (*o)[4], float* m, float* l, float sl, i64 c0, i64 tk, int t) {
        float mx[2] = {-INFINITY, -INFINITY};
        #pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            #pragma unroll
            for (int i = 0; i < 4; i++) {
                if (!MASK || c0 + 8 * nt + 2 * t + (i & 1) < tk) mx[i >> 1] = fmaxf(mx[i >> 1], s[nt][i]);
            }
        }
        float alpha[2], ls[2] = {0.0f, 0.0f};
        #pragma unroll
        for (int h = 0; h < 2; h++) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(HASTE_FULL_MASK, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(HASTE_FULL_MASK, mx[h], 2));
            mx[h] = fmaxf(m[h], sl * mx[h]);   // finite: every tile holds at least one key
            alpha[h] = haste_exp2(m[h] - mx[h]);   // 0 on the first tile (m = −∞)
            m[h] = mx[h];
        }
        #pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            #pragma unroll
            for (int i = 0; i < 4; i++) {
                const float p = haste_exp2(fmaf(sl, s[nt][i], -m[i >> 1]));
                s[nt][i] = !MASK || c0 + 8 * nt + 2 * t + (i & 1) < tk ? p : 0.0f;
                ls[i >> 1] += s[nt][i];
            }
        }
        #pragma unroll
        for (int h = 0; h < 2; h++) {
            ls[h] += __shfl_xor_sync(HASTE_FULL_MASK, ls[h], 1);
            ls[h] += __shfl_xor_sync(HASTE_FULL_MASK, ls[h], 2);
            l[h] = l[h] * alpha[h] + ls[h];
        }
        #pragma unroll
        for (int nt = 0; nt < DMAX / 8; nt++) {
            o[nt][0] *= alpha[0]; o[nt][1] *= alpha[0]; o[nt][2] *= alpha[1]; o[nt][3] *= alpha[1];
        }
    }

    /// tc_softmax_pass for key tile c0: unmasked for a whole tile (every column < Tk).
    template <int DMAX>
    __device__ __forceinline__ void tc_softmax_tile(float (*s)[4], float (*o)[4], float* m, float* l, float sl, i64 c0, i64 tk, int t) {
        if (sl < 0.0f) {                       // max(sl·S) is not sl·max(S): S scaled first, then sl = 1 (exact)
            #pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                #pragma unroll
                for (int i = 0; i < 4; i++) s[nt][i] *= sl;
            }
            sl = 1.0f;
        }
        if (c0 + 64 <= tk) tc_softmax_pass<DMAX, false>(s, o, m, l, sl, c0, tk, t);
        else tc_softmax_pass<DMAX, true>(s, o, m, l, sl, c0, tk, t);
    }

    """#

    static let flashBF16StepCode = flashSoftmaxStepCode + "\n" + #"""
    /// DIRECT, dq from dk/dv without a summing kernel: after this block stored its share of dq for query rows
    /// r0…r0 + 63 of head b (key tile ti of `tiles`, float32 in dqp[ti][b][t][d]), the block whose count is the
    /// last for that query tile (an atomic per (head, query tile) in `count`, zeroed by the host) adds the tiles'
    /// shares in key-tile order (`haste_tile_sum`, reading through L2) and stores bf16 dq into its layout:
    /// `attention_flash_dq_sum_out16`'s sum and rounding without its launch and its pass over the partials (here
    /// read moments after they were written, so mostly from L2: expected, not measured). The fence before the count
    /// orders every thread's share before it; the one after it, the count before the reads.
    __device__ __forceinline__ void tc_dq_last_block(const float* dqp, u16* dq, const tc_layouts& L, unsigned* count,
                                                     i64 b, i64 batch, i64 tq, int dh, i64 r0, i64 tiles) {
        __shared__ int tc_last[1];
        haste_threadfence();
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned* c = count + b * ((tq + 63) / 64) + (r0 >> 6);
            tc_last[0] = atomicAdd(c, 1u) == (unsigned)(tiles - 1);
        }
        __syncthreads();
        if (tc_last[0] == 0) return;
        haste_threadfence();
        const i64 n = batch * tq * dh, rows = tq - r0 < 64 ? tq - r0 : 64;
        const float* p = dqp + b * tq * dh;
        u16* head = tc_head<true>(dq, L, L.dq, b, tq, dh);
        for (int r = threadIdx.x >> 5; r < rows; r += TC_THREADS / 32) {
            const i64 t = r0 + r;
            for (int d = threadIdx.x & 31; d < dh; d += 32) head[t * L.dq.t_ + d] = haste_float_to_bf16(haste_tile_sum<true>(p, n, tiles, t * dh + d));
        }
        __syncthreads();                       // tc_last is read before the next query tile's count sets it
    }

    /// DIRECT, dq serially (`flashDQSerial`: the host launched one block per head, which walks head b's key tiles
    /// in order): key tile `ti`'s share of dq rows row0 + g, row0 + g + 8 (this thread's fragment, gq times scale)
    /// goes into the float32 running sum acc[b][t][d], which only this thread writes and reads: the first tile
    /// stores its share, the next ones add theirs to what they load, the last stores the sum rounded to bf16 into
    /// dq's layout (head, row stride ts). The partials kernel's and the last block's sum (haste_tile_sum: p0 + p1 +
    /// … in key-tile order) and rounding, bit for bit, without partials per key tile, fences, counts or a
    /// summing pass. Dh is a multiple of 8 here (the direct family), so pairs of columns are whole and 8-byte aligned.
    /// Two steps: `tc_dq_serial_load` fetches the running sum (both halves' loads in flight together) before the
    /// barrier and the dS·K product, so its round trip (mostly L2) overlaps them; `tc_dq_serial` adds and stores.
    /// (Loaded right before the adds, it was two exposed round trips per query tile: sm_90 SASS showed the ten
    /// LDG.E.64 of each half issued after the last HMMA and read by the next FADDs. The "…sl" entry points still load
    /// there, both halves at once: `HASTE_FLASH_DQ_EARLY_LOAD=0`.)
    template <int DMAX>
    __device__ __forceinline__ void tc_dq_serial_load(haste_f2 (*prev)[DMAX / 8], const float* acc, i64 row0, i64 rows,
                                                      int cols, bool first) {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        #pragma unroll
        for (int h = 0; h < 2; h++) {
            const i64 r = row0 + g + 8 * h;
            #pragma unroll
            for (int nt = 0; nt < DMAX / 8; nt++) {
                const int c = 8 * nt + 2 * t;
                prev[h][nt] = !first && r < rows && c < cols ? *(const haste_f2*)(acc + r * cols + c) : haste_f2{0.0f, 0.0f};
            }
        }
    }

    /// One key tile's adds and stores: LAST, bf16 into dq's layout; else float32 into the running sum.
    template <int DMAX, bool LAST>
    __device__ __forceinline__ void tc_dq_serial_store(float* acc, u16* head, i64 ts, float (*gq)[4], const haste_f2 (*prev)[DMAX / 8],
                                                       i64 row0, i64 rows, int cols, float scale, bool first) {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        #pragma unroll
        for (int h = 0; h < 2; h++) {
            const i64 r = row0 + g + 8 * h;
            #pragma unroll
            for (int nt = 0; nt < DMAX / 8; nt++) {
                const int c = 8 * nt + 2 * t;
                const float a0 = __fmul_rn(gq[nt][2 * h], scale), b0 = __fmul_rn(gq[nt][2 * h + 1], scale);
                const float a = first ? a0 : __fadd_rn(prev[h][nt].x, a0), b = first ? b0 : __fadd_rn(prev[h][nt].y, b0);
                if (r < rows && c < cols) {
                    if constexpr (LAST) tc_st2(head + r * ts + c, a, b);
                    else *(haste_f2*)(acc + r * cols + c) = haste_f2{a, b};
                }
            }
        }
    }

    /// `last` is the same for the whole block: one branch around two unrolled store loops, where a branch per element
    /// pair (and a divergent region per column guard) made ~1 200 of the query-tile loop's 2 240 SASS instructions;
    /// `first` selects (the first tile's share is stored as it is, not added to a zero: −0 stays −0).
    template <int DMAX>
    __device__ __forceinline__ void tc_dq_serial(float* acc, u16* head, i64 ts, float (*gq)[4], const haste_f2 (*prev)[DMAX / 8],
                                                 i64 row0, i64 rows, int cols, float scale, bool first, bool last) {
        if (last) tc_dq_serial_store<DMAX, true>(acc, head, ts, gq, prev, row0, rows, cols, scale, first);
        else tc_dq_serial_store<DMAX, false>(acc, head, ts, gq, prev, row0, rows, cols, scale, first);
    }
    """#
}
