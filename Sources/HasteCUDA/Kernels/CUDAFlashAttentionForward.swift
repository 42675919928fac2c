import HasteTensor

/// The float32 flash-attention forward (`attention_flash_forward_d*`; the backward and the file notes:
/// CUDAFlashAttention.swift), register-tiled: what `haste generate` runs in float32 (its default, as generate.py).
///    - Why: the lane-pair kernel before it read one shared-memory word per FMA (S = Q·Kᵀ and O += P·V alike), so it
///      was bound by load instructions: on the H200, SiT-XL/2 sampling at batch 64 (CFG: 128 rows) spent 3.1 ms per
///      call, 86 of a 223 ms sampling step, in it (12 TFLOP/s of the 67 the FMA units give).
///    - Now each thread owns a 4 × 8 micro-tile of S (rows 4·ty…4·ty + 3, keys tx + 8j; tx = lane & 7) built from
///      16-byte loads of Q and K rows (4 Q and 8 K loads per 4 columns of D: 128 FMAs), and a 4 × DMAX/8 tile of O
///      (columns 4·tx + 32c…+3) built from one P value per row and 16-byte V loads per key (4 + DMAX/32 loads for
///      4·DMAX/8 FMAs). K rows have stride D + 4 (the 8 rows a load touches fall in distinct banks).
///    - The same bits as the lane-pair kernel: every S and O element is the same FMA chain in the same order (d, then
///      keys), and the row statistics stay with the lane pairs (row = tid / 2, half = tid % 2): each sums its 32 P
///      values (keys half + 2j) in order from the P tile in shared memory, adds its partner's, and updates m, l, α
///      as before; the micro-tiles read the new row max, α and finally 1/l from shared memory. The row max is the
///      same value whatever the order (max is exact).
///    - Dynamic shared memory (floats; dh4, dv4 = Dh, Dv rounded up to 4): 64·(dh4 + dh4 + 4 + dv4 + 68) + 3·64;
///      SiT-XL/2 (72, 72): 74 496 bytes (the lane-pair kernel: 72 704), 3 blocks per SM on sm_90.
extension CUDABackend {
    /// Shared-memory words of `attention_flash_forward_d*` (see the notes above).
    static func flashF32ForwardWords(_ s: AttentionShape) -> Int {
        let dh4 = (s.headDim + 3) / 4 * 4, dv4 = (s.valueDim + 3) / 4 * 4
        return 64 * (dh4 + dh4 + 4 + dv4 + 68) + 3 * 64
    }

    static let flashF32ForwardCode = #"""
    #define FF_PS 68   /* row stride (floats) of the P tile: 64 keys + 4 (16-byte rows, rows in distinct banks) */

    /// Forward: one block per (query tile, head) (grid-stride over both), online softmax over key tiles.
    template <int DMAX>
    __device__ void flash_forward(float* smem, const float* q, const float* k, const float* v, float* out, float* lse,
                                  i64 batch, i64 tq, i64 tk, int dh, int dv, float scale) {
        const int dh4 = (dh + 3) & ~3, dv4 = (dv + 3) & ~3, sk = dh4 + 4;
        float* Qs = smem;
        float* Ks = Qs + 64 * dh4;
        float* Vs = Ks + 64 * sk;
        float* Ps = Vs + 64 * dv4;
        float* Ms = Ps + 64 * FF_PS;   // the rows' running max m (the lane pairs')
        float* Mn = Ms + 64;           // this key tile's new max
        float* Al = Mn + 64;           // this key tile's α, and 1/l at the end
        const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;      // micro-tiles
        const int row = threadIdx.x >> 1, half = threadIdx.x & 1;   // row statistics
        const int d4 = dh & ~3;
        const i64 tiles = (tq + 63) / 64;
        for (i64 b = blockIdx.y; b < batch; b += gridDim.y) {
            for (i64 t = blockIdx.x; t < tiles; t += gridDim.x) {
                const i64 r0 = t * 64;
                __syncthreads();                       // the previous tile's readers of Qs, Al are done
                flash_load_tile(Qs, q + (b * tq + r0) * dh, tq - r0, dh, dh4, dh4);
                if (threadIdx.x < 64) Ms[threadIdx.x] = -INFINITY;
                float o[4][DMAX / 8];
                #pragma unroll
                for (int i = 0; i < 4; i++) {
                    #pragma unroll
                    for (int e = 0; e < DMAX / 8; e++) o[i][e] = 0.0f;
                }
                float m = -INFINITY, l = 0.0f;
                for (i64 c0 = 0; c0 < tk; c0 += 64) {
                    __syncthreads();                   // the previous key tile's readers of Ks, Vs, Ps, Al are done
                    flash_load_tile(Ks, k + (b * tk + c0) * dh, tk - c0, dh, sk, dh4);
                    flash_load_tile(Vs, v + (b * tk + c0) * dv, tk - c0, dv, dv4, dv4);
                    __syncthreads();
                    float s[4][8];
                    #pragma unroll
                    for (int i = 0; i < 4; i++) {
                        #pragma unroll
                        for (int j = 0; j < 8; j++) s[i][j] = 0.0f;
                    }
                    for (int d = 0; d < d4; d += 4) {  // S = Q·Kᵀ, four columns of D per step, in order
                        haste_f4 a[4], kk[8];
                        #pragma unroll
                        for (int i = 0; i < 4; i++) a[i] = *(const haste_f4*)(Qs + (4 * ty + i) * dh4 + d);
                        #pragma unroll
                        for (int j = 0; j < 8; j++) kk[j] = *(const haste_f4*)(Ks + (tx + 8 * j) * sk + d);
                        #pragma unroll
                        for (int i = 0; i < 4; i++) {
                            #pragma unroll
                            for (int j = 0; j < 8; j++) {
                                s[i][j] += a[i].x * kk[j].x;
                                s[i][j] += a[i].y * kk[j].y;
                                s[i][j] += a[i].z * kk[j].z;
                                s[i][j] += a[i].w * kk[j].w;
                            }
                        }
                    }
                    for (int d = d4; d < dh; d++) {
                        #pragma unroll
                        for (int i = 0; i < 4; i++) {
                            const float x = Qs[(4 * ty + i) * dh4 + d];
                            #pragma unroll
                            for (int j = 0; j < 8; j++) s[i][j] += x * Ks[(tx + 8 * j) * sk + d];
                        }
                    }
                    #pragma unroll
                    for (int i = 0; i < 4; i++) {
                        float mt = -INFINITY;
                        #pragma unroll
                        for (int j = 0; j < 8; j++) {
                            s[i][j] = c0 + tx + 8 * j < tk ? scale * s[i][j] : -INFINITY;
                            mt = fmaxf(mt, s[i][j]);
                        }
                        mt = fmaxf(mt, __shfl_xor_sync(HASTE_FULL_MASK, mt, 1));
                        mt = fmaxf(mt, __shfl_xor_sync(HASTE_FULL_MASK, mt, 2));
                        mt = fmaxf(mt, __shfl_xor_sync(HASTE_FULL_MASK, mt, 4));
                        const float mn = fmaxf(Ms[4 * ty + i], mt);   // finite: every tile holds at least one key
                        #pragma unroll
                        for (int j = 0; j < 8; j++) Ps[(4 * ty + i) * FF_PS + tx + 8 * j] = expf(s[i][j] - mn);
                        if (tx == 0) Mn[4 * ty + i] = mn;
                    }
                    __syncthreads();                   // P and the new maxima are in shared memory
                    {                                  // the lane pair's statistics, in the lane-pair kernel's order
                        const float mn = Mn[row];
                        const float alpha = expf(m - mn);   // 0 on the first tile (m = −∞)
                        float ls = 0.0f;
                        #pragma unroll 8
                        for (int j = 0; j < 32; j++) ls += Ps[row * FF_PS + half + 2 * j];
                        ls += __shfl_xor_sync(HASTE_FULL_MASK, ls, 1);
                        l = l * alpha + ls;
                        m = mn;
                        if (half == 0) { Al[row] = alpha; Ms[row] = mn; }
                    }
                    __syncthreads();                   // α is in shared memory
                    const int cn = tk - c0 < 64 ? (int)(tk - c0) : 64;
                    #pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float al = Al[4 * ty + i];
                        #pragma unroll
                        for (int e = 0; e < DMAX / 8; e++) o[i][e] *= al;
                    }
                    for (int c = 0; c < cn; c++) {     // O += P·V, key by key
                        float p[4];
                        #pragma unroll
                        for (int i = 0; i < 4; i++) p[i] = Ps[(4 * ty + i) * FF_PS + c];
                        #pragma unroll
                        for (int ch = 0; ch < DMAX / 32; ch++) {
                            if (4 * tx + 32 * ch < dv) {
                                const haste_f4 w = *(const haste_f4*)(Vs + c * dv4 + 4 * tx + 32 * ch);
                                #pragma unroll
                                for (int i = 0; i < 4; i++) {
                                    o[i][4 * ch] += p[i] * w.x;
                                    o[i][4 * ch + 1] += p[i] * w.y;
                                    o[i][4 * ch + 2] += p[i] * w.z;
                                    o[i][4 * ch + 3] += p[i] * w.w;
                                }
                            }
                        }
                    }
                }
                __syncthreads();                       // the last tile's readers of α are done
                if (half == 0) {
                    Al[row] = l > 0.0f ? 1.0f / l : 0.0f;
                    if (lse != 0 && r0 + row < tq) lse[b * tq + r0 + row] = l > 0.0f ? m + logf(l) : -INFINITY;
                }
                __syncthreads();                       // 1/l is in shared memory
                #pragma unroll
                for (int i = 0; i < 4; i++) {
                    const i64 r = r0 + 4 * ty + i;
                    if (r >= tq) continue;
                    const float inv = Al[4 * ty + i];
                    float* orow = out + (b * tq + r) * dv;
                    #pragma unroll
                    for (int ch = 0; ch < DMAX / 32; ch++) {
                        #pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int col = 4 * tx + 32 * ch + e;
                            if (col < dv) orow[col] = o[i][4 * ch + e] * inv;
                        }
                    }
                }
            }
        }
    }
    """#
}
