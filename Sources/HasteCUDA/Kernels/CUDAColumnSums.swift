import HasteTensor

/// The fused kernels' per-item column sums (dshift, dscale, dgate, dbias): fixed chunks of rows that never cross
/// an item, summed by a partials kernel (or the pass that makes them: CUDAFusedGatedBackward.swift,
/// CUDAFusedMLNSums.swift), then in chunk order by `fused_column_reduce`: no atomics, the same bits every run.
extension CUDABackend {
    /// The partials and the chunk-order reduce (the fused family's code; tasks as the family's notes).
    static let columnSumsCode = #"""
    /// part[task, j] = Σ term over the task's rows in order (task = item·perItem + chunk, a chunk `chunkRows` of the
    /// item's tokens): a·b (b null: a), or with ROUND
    /// (Autocast bf16's gated residual) bf16(bf16(a)·b). With `dy` (gatedResidual's backward wanting dy and dgate:
    /// one pass, CUDAFusedGatedBackward.swift; a is dout) also dy = gate[item]·a, with ROUND gate[item]·bf16(a):
    /// haste_gated_backward_dy's expression, stored as TD. Four rows' operands are loaded before their terms are
    /// used (dy is never an operand).
    template <bool ROUND, typename TB = float, typename TD = float>
    __device__ __forceinline__ void haste_partials(const float* a, const TB* b, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows,
                                                   const float* gate = 0, TD* dy = 0) {
        const i64 perItem = (tokens + chunkRows - 1) / chunkRows;
        HASTE_GRID_STRIDE_LOOP(p, batch * perItem * cols) {
            const i64 task = p / cols, j = p % cols;
            const i64 item = task / perItem, c = task % perItem;
            const i64 t1 = (c + 1) * chunkRows < tokens ? (c + 1) * chunkRows : tokens;
            const float g = dy ? gate[item * cols + j] : 0.0f;
            float s = 0.0f;
            for (i64 t0 = c * chunkRows; t0 < t1; t0 += 4) {
                float av[4], bv[4];
                #pragma unroll
                for (int u = 0; u < 4; u++) {
                    const i64 o = (item * tokens + t0 + u) * cols + j;
                    av[u] = t0 + u < t1 ? a[o] : 0.0f;
                    bv[u] = t0 + u < t1 && b ? haste_ld(b, o) : 0.0f;
                }
                #pragma unroll
                for (int u = 0; u < 4; u++) {
                    if (t0 + u >= t1) break;
                    if (dy) haste_st(dy, (item * tokens + t0 + u) * cols + j, g * (ROUND ? haste_round_bf16(av[u]) : av[u]));
                    if (ROUND) s += haste_round_bf16(haste_round_bf16(av[u]) * bv[u]);
                    else s += b ? av[u] * bv[u] : av[u];
                }
            }
            part[task * cols + j] = s;
        }
    }
    extern "C" __global__ void fused_product_partials(const float* a, const float* b, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<false>(a, b, part, batch, tokens, cols, chunkRows);
    }
    extern "C" __global__ void fused_gated_partials_bf16(const float* dout, const float* y, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<true>(dout, y, part, batch, tokens, cols, chunkRows);
    }
    extern "C" __global__ void fused_gated_partials_bf16_y16(const float* dout, const u16* y, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<true>(dout, y, part, batch, tokens, cols, chunkRows);
    }

    /// out_l[item, j] = Σ_chunk part[(item·perItem + chunk)·lanes + l, j] in chunk order, for l = 0 (out0) and
    /// l = 1 (out1, only when lanes = 2); either output may be null. round0 ≠ 0: out0 rounded to bf16 (float32 values,
    /// round_through_f32's bits), the modulated LayerNorm's dscale under Autocast bf16.
    extern "C" __global__ void fused_column_reduce(const float* part, float* out0, float* out1, i64 batch, i64 perItem, i64 lanes, i64 cols,
                                                   int round0) {
        HASTE_GRID_STRIDE_LOOP(p, batch * cols) {
            i64 item = p / cols, j = p % cols;
            float s0 = 0.0f, s1 = 0.0f;
            for (i64 c = 0; c < perItem; c++) {
                i64 task = item * perItem + c;
                s0 += part[(task * lanes) * cols + j];
                if (lanes > 1) s1 += part[(task * lanes + 1) * cols + j];
            }
            if (out0) out0[p] = round0 ? haste_round_bf16(s0) : s0;
            if (out1) out1[p] = s1;
        }
    }
    """#

    /// Allocates the [batch·perItem, lanes, cols] partials, lets `partials` fill them (skipped when there are no
    /// tokens), then reduces them in chunk order into outs (lane 0, lane 1); no tokens → zeros (empty sums).
    /// `roundFirst`: lane 0's sums rounded to bf16 as they are written.
    func columnSums(batch: Int, tokens: Int, cols: Int, lanes: Int, outs: (Buffer?, Buffer?),
                    chunkRows: Int = CUDABackend.fusedChunkRows, roundFirst: Bool = false, _ partials: (DevicePointer, Int) -> Void) {
        if batch == 0 { return }
        let perItem = (tokens + chunkRows - 1) / chunkRows
        let partBytes = Swift.max(batch * perItem, 1) * lanes * cols * 4
        let part = allocator.allocate(byteCount: partBytes)
        if perItem > 0 { partials(part, chunkRows) }
        launch(CUDABackend.fusedSource, "fused_column_reduce", grid: Dim3(CUDABackend.blocks(batch * cols)), block: Dim3(256), [
            .pointer(part), .pointer(outs.0.map(address) ?? 0), .pointer(outs.1.map(address) ?? 0),
            .int64(Int64(batch)), .int64(Int64(perItem)), .int64(Int64(lanes)), .int64(Int64(cols)), .int32(roundFirst ? 1 : 0),
        ])
        allocator.release(part, byteCount: partBytes)   // one stream, in order: the kernels above run first
    }
}
