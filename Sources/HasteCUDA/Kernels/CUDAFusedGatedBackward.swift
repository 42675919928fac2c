import Foundation
import HasteTensor

/// gatedResidual's backward in one pass when both dy and dgate are wanted (every adaLN half-block of a training
/// step): `fused_gated_backward_dy*` read dout to write dy = gate·dout, then `fused_*_partials` read dout again (and
/// y) for dgate's chunk sums. Here one thread per (item, chunk, column) walks the chunk's rows once, writes each
/// element's dy and keeps the chunk's sum: dout is read once, and one launch goes. The same expressions, the same
/// chunks (`fusedChunkRows`) in the same row order, then the same `fused_column_reduce`: dy and dgate are the two
/// kernels' bits. For SiT-XL/2 at batch 64 each call reads 75 MB of float32 dout once instead of twice (56 calls a
/// step). `HASTE_FUSED_GATED_BACKWARD=0` keeps the two kernels.
extension CUDABackend {
    /// `HASTE_FUSED_GATED_BACKWARD=0`: dy and dgate by their own kernels again, for comparisons (the same bits; a
    /// test switches it for its own task: `$fusedGatedBackwardAllowed.withValue`).
    @TaskLocal static var fusedGatedBackwardAllowed = ProcessInfo.processInfo.environment["HASTE_FUSED_GATED_BACKWARD"] != "0"

    /// Entry points: float32 (`fused_gated_backward_both`), Autocast bf16 on float32 carriers (`_bf16`), and with
    /// the branch side in bf16 (`_y16`: y; `_d16`: dy).
    static let fusedGatedBackwardKernels = ["fused_gated_backward_both", "fused_gated_backward_both_bf16",
                                            "fused_gated_backward_both_bf16_y16", "fused_gated_backward_both_bf16_d16",
                                            "fused_gated_backward_both_bf16_y16_d16"]

    static let fusedGatedBackwardCode = #"""
    /// dy = gate[item]·dout (ROUND: gate[item]·bf16(dout), stored as TD) and part[task, j] = Σ over the task's rows
    /// in order of dout·y (ROUND: bf16(bf16(dout)·y)): haste_gated_backward_dy's and haste_partials's expressions,
    /// tasks as haste_partials's (task = item·perItem + chunk, `chunkRows` of the item's tokens). Four rows' operands
    /// are loaded before their dy are stored (dy is never an operand here).
    template <bool ROUND, typename TY, typename TD>
    __device__ __forceinline__ void haste_gated_backward_both(const float* gate, const float* dout, const TY* y, TD* dy, float* part,
                                                              i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        const i64 perItem = (tokens + chunkRows - 1) / chunkRows;
        HASTE_GRID_STRIDE_LOOP(p, batch * perItem * cols) {
            const i64 task = p / cols, j = p % cols;
            const i64 item = task / perItem, c = task % perItem;
            const i64 t1 = (c + 1) * chunkRows < tokens ? (c + 1) * chunkRows : tokens;
            const float g = gate[item * cols + j];
            float s = 0.0f;
            for (i64 t0 = c * chunkRows; t0 < t1; t0 += 4) {
                float dv[4], yv[4];
                #pragma unroll
                for (int u = 0; u < 4; u++) {
                    const i64 o = (item * tokens + t0 + u) * cols + j;
                    dv[u] = t0 + u < t1 ? dout[o] : 0.0f;
                    yv[u] = t0 + u < t1 ? haste_ld(y, o) : 0.0f;
                }
                #pragma unroll
                for (int u = 0; u < 4; u++) {
                    if (t0 + u >= t1) break;
                    const i64 o = (item * tokens + t0 + u) * cols + j;
                    haste_st(dy, o, g * (ROUND ? haste_round_bf16(dv[u]) : dv[u]));
                    if (ROUND) s += haste_round_bf16(haste_round_bf16(dv[u]) * yv[u]);
                    else s += dv[u] * yv[u];
                }
            }
            part[task * cols + j] = s;
        }
    }
    extern "C" __global__ void fused_gated_backward_both(const float* gate, const float* dout, const float* y, float* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_gated_backward_both<false, float, float>(gate, dout, y, dy, part, batch, tokens, cols, chunkRows);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16(const float* gate, const float* dout, const float* y, float* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_gated_backward_both<true, float, float>(gate, dout, y, dy, part, batch, tokens, cols, chunkRows);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16_y16(const float* gate, const float* dout, const u16* y, float* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_gated_backward_both<true, u16, float>(gate, dout, y, dy, part, batch, tokens, cols, chunkRows);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16_d16(const float* gate, const float* dout, const float* y, u16* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_gated_backward_both<true, float, u16>(gate, dout, y, dy, part, batch, tokens, cols, chunkRows);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16_y16_d16(const float* gate, const float* dout, const u16* y, u16* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_gated_backward_both<true, u16, u16>(gate, dout, y, dy, part, batch, tokens, cols, chunkRows);
    }
    """#

    /// dy and dgate of gatedResidual's backward by `fused_gated_backward_both*` (names as `gatedResidualBackward`'s
    /// suffixes: "" float32, else "_bf16" + y16 + d16), dgate through `columnSums`.
    func gatedResidualBackwardBoth(gate: Buffer, _ y: Buffer, _ dout: Buffer, dy: Buffer, dgate: Buffer,
                                   batch: Int, tokens: Int, cols: Int, suffix: String) {
        columnSums(batch: batch, tokens: tokens, cols: cols, lanes: 1, outs: (dgate, nil)) { part, chunkRows in
            self.launch(CUDABackend.fusedSource, "fused_gated_backward_both" + suffix,
                        grid: Dim3(CUDABackend.blocks(batch * ((tokens + chunkRows - 1) / chunkRows) * cols)), block: Dim3(256), [
                .pointer(self.address(gate)), .pointer(self.address(dout)), .pointer(self.address(y)), .pointer(self.address(dy)),
                .pointer(part), .int64(Int64(batch)), .int64(Int64(tokens)), .int64(Int64(cols)), .int64(Int64(chunkRows)),
            ])
        }
    }
}
