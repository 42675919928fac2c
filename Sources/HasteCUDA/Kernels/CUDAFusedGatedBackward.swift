import Foundation
import HasteTensor

/// gatedResidual's backward in one pass when both dy and dgate are wanted (every adaLN half-block of a training
/// step): `fused_gated_backward_dy*` read dout to write dy = gate·dout, then `fused_*_partials` read dout again (and
/// y) for dgate's chunk sums. Here the partials kernel's thread per (item, chunk, column) also writes each element's
/// dy as it walks the chunk's rows (`haste_partials` with dy): dout is read once, and one launch goes. The dy
/// kernel's expression, the partials' chunks (`fusedChunkRows`) and row order, then the same `fused_column_reduce`:
/// dy and dgate are the two kernels' bits. For SiT-XL/2 at batch 64 each call reads 75 MB of float32 dout once instead of twice (56 calls a
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

    /// `haste_partials` (CUDAFused.swift) with dy: the partials kernels' terms and chunks, the dy kernel's expression.
    static let fusedGatedBackwardCode = #"""
    extern "C" __global__ void fused_gated_backward_both(const float* gate, const float* dout, const float* y, float* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<false, float, float>(dout, y, part, batch, tokens, cols, chunkRows, gate, dy);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16(const float* gate, const float* dout, const float* y, float* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<true, float, float>(dout, y, part, batch, tokens, cols, chunkRows, gate, dy);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16_y16(const float* gate, const float* dout, const u16* y, float* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<true, u16, float>(dout, y, part, batch, tokens, cols, chunkRows, gate, dy);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16_d16(const float* gate, const float* dout, const float* y, u16* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<true, float, u16>(dout, y, part, batch, tokens, cols, chunkRows, gate, dy);
    }
    extern "C" __global__ void fused_gated_backward_both_bf16_y16_d16(const float* gate, const float* dout, const u16* y, u16* dy, float* part, i64 batch, i64 tokens, i64 cols, i64 chunkRows) {
        haste_partials<true, u16, u16>(dout, y, part, batch, tokens, cols, chunkRows, gate, dy);
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
