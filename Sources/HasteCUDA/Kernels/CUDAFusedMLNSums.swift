import Foundation
import HasteTensor

/// modulatedLayerNorm's backward with its column sums in the dx pass: `fused_mln_backward_partials*` read x and dy
/// a second time (one thread per chunk and column) for dshift and dscale; the by-warp dx kernels
/// (`fused_mln_backward_dx_partials[_dy16]_w…`, CUDANormWarp.swift) add each row's terms to the warp's chunk sums
/// while the row is in registers. Chunks of `mlnChunkRows` = 8 rows (one warp's task; the partials kernel, where it
/// still runs, sums the same chunks in the same order: the same bits either way), reduced in chunk order by
/// `fused_column_reduce`. For SiT-XL/2 at batch 64 each call reads 113 MB (x float32, dy bf16) once instead of
/// twice (56 calls a step), and writes 2 048 chunk rows of sums where 256 were written (19 MB, not 2.4).
/// `HASTE_FUSED_MLN_PARTIALS=0` keeps the partials kernel (with the same 8-row chunks).
/// sm_90 SASS of `…_partials_dy16_w40` (2026-12-07, NVRTC, no GPU): each element of a row's dx took its residual in
/// a load right before its add and store, behind the element's guard and after the previous element's store (the
/// pointers could alias), so a row's 36 residuals were 36 global round trips one after another (~600 cycles each,
/// against one for x and dy). With `__restrict__` on the row kernels and the residual loaded a group of
/// `rowDxGroup` elements ahead (`haste_warp_row_dx`), ptxas issues them ahead of the stores (`…_partials_dy16_w36`:
/// 178 registers, no stack; the scale row's loads, L1 hits, stay beside their use). Same bits (FusedMLNSumsTests).
extension CUDABackend {
    /// Rows per chunk of modulatedLayerNorm's dshift and dscale sums (fixed: the bits depend on it).
    static let mlnChunkRows = 8

    /// `HASTE_FUSED_MLN_PARTIALS=0`: dshift and dscale's chunk sums by their own kernel again, for comparisons (the
    /// same bits; a test switches it for its own task: `$fusedMLNPartialsAllowed.withValue`).
    @TaskLocal static var fusedMLNPartialsAllowed = ProcessInfo.processInfo.environment["HASTE_FUSED_MLN_PARTIALS"] != "0"

    /// The by-warp kernel's dynamic shared memory: each of the 8 warps' two sums for its 32·`per` columns.
    static func mlnSumsSharedBytes(per: Int) -> Int { 8 * 2 * 32 * per * 4 }

    /// dx (and the residual) with the chunk sums of dshift and dscale, by warp (`per`: the register width).
    func modulatedLayerNormBackwardWithSums(_ x: Buffer, scale: Buffer, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                            residual: Buffer?, dshift: Buffer?, dscale: Buffer?, batch: Int, tokens: Int, cols: Int,
                                            per: Int, roundScale: Bool) {
        let dy16 = branchSuffix(dy, "_dy16", "modulatedLayerNorm backward")
        columnSums(batch: batch, tokens: tokens, cols: cols, lanes: 2, outs: (dscale, dshift), chunkRows: CUDABackend.mlnChunkRows,
                   roundFirst: roundScale) { part, chunkRows in
            let tasks = batch * ((tokens + chunkRows - 1) / chunkRows)
            self.launch(CUDABackend.fusedSource, "fused_mln_backward_dx_partials" + dy16 + "_w\(per)", grid: CUDABackend.warpRowsGrid(tasks),
                        block: Dim3(256), sharedBytes: CUDABackend.mlnSumsSharedBytes(per: per), [
                .pointer(self.address(x)), .pointer(self.address(scale)), .pointer(self.address(mean)), .pointer(self.address(rstd)),
                .pointer(self.address(dy)), .pointer(residual.map(self.address) ?? 0), .pointer(self.address(dx)), .pointer(part),
                .int64(Int64(batch)), .int64(Int64(tokens)), .int64(Int64(cols)), .int64(Int64(chunkRows)),
            ])
        }
    }
}
