import HasteTensor

/// The fused kernels' per-item column sums (dshift, dscale, dgate, dbias): fixed chunks of rows that never cross
/// an item, summed by a partials kernel (or the pass that makes them: CUDAFusedGatedBackward.swift,
/// CUDAFusedMLNSums.swift), then in chunk order by `fused_column_reduce`: no atomics, the same bits every run.
extension CUDABackend {
    /// Allocates the [batch·perItem, lanes, cols] partials, lets `partials` fill them (skipped when there are no
    /// tokens), then reduces them in chunk order into outs (lane 0, lane 1); no tokens → zeros (empty sums).
    func columnSums(batch: Int, tokens: Int, cols: Int, lanes: Int, outs: (Buffer?, Buffer?),
                    chunkRows: Int = CUDABackend.fusedChunkRows, _ partials: (DevicePointer, Int) -> Void) {
        if batch == 0 { return }
        let perItem = (tokens + chunkRows - 1) / chunkRows
        let partBytes = Swift.max(batch * perItem, 1) * lanes * cols * 4
        let part = allocator.allocate(byteCount: partBytes)
        if perItem > 0 { partials(part, chunkRows) }
        launch(CUDABackend.fusedSource, "fused_column_reduce", grid: Dim3(CUDABackend.blocks(batch * cols)), block: Dim3(256), [
            .pointer(part), .pointer(outs.0.map(address) ?? 0), .pointer(outs.1.map(address) ?? 0),
            .int64(Int64(batch)), .int64(Int64(perItem)), .int64(Int64(lanes)), .int64(Int64(cols)),
        ])
        allocator.release(part, byteCount: partBytes)   // one stream, in order: the kernels above run first
    }
}
