import HasteTensor

extension CUDABackend {
    /// The embedding family, float32 tables, int32 or int64 indices. The forward is a row gather. The backward
    /// is deterministic without atomics: a thread owns one column of a block of table rows and walks every
    /// index in order, adding the rows that fall in its block, so repeated indices add up in index order for
    /// every element, bit for bit as the CPU's scatter-add (work: row blocks × count × dim index reads, about
    /// 65 536·count, fine for class labels). An index outside [0, rows) sets the error word
    /// (`DeviceErrorCode.embeddingIndex`) and is never dereferenced (the forward writes 0 there).
    static let embeddingSource = KernelSource(family: "embedding", kernels: ["embedding_forward_f32", "embedding_backward_f32"], code: #"""
    __device__ __forceinline__ i64 haste_index(const u8* indices, int wide, i64 n) {
        return wide ? ((const i64*)indices)[n] : (i64)((const int*)indices)[n];
    }

    extern "C" __global__ void embedding_forward_f32(const float* weight, const u8* indices, int wide, float* out, i64 rows, i64 dim, i64 count, int* errorWord, int errorCode) {
        HASTE_GRID_STRIDE_LOOP(i, count * dim) {
            i64 n = i / dim, d = i - n * dim;
            i64 t = haste_index(indices, wide, n);
            if (t < 0 || t >= rows) {
                atomicCAS(errorWord, 0, errorCode);
                out[i] = 0.0f;
            } else {
                out[i] = weight[t * dim + d];
            }
        }
    }

    extern "C" __global__ void embedding_backward_f32(const float* dy, const u8* indices, int wide, float* dWeight, i64 rows, i64 dim, i64 count, i64 rowsPerBlock, i64 rowBlocks, int* errorWord, int errorCode) {
        HASTE_GRID_STRIDE_LOOP(k, rowBlocks * dim) {
            i64 rb = k / dim, d = k - rb * dim, lo = rb * rowsPerBlock, hi = lo + rowsPerBlock;
            if (hi > rows) hi = rows;
            for (i64 n = 0; n < count; ++n) {
                i64 t = haste_index(indices, wide, n);
                if (t >= lo && t < hi) dWeight[t * dim + d] += dy[n * dim + d];
                else if ((t < 0 || t >= rows) && k == 0) atomicCAS(errorWord, 0, errorCode);
            }
        }
    }
    """#)

    private func indicesWide(_ indices: Buffer, _ op: String) -> Int32 {
        switch indices.dtype {
        case .int64: return 1
        case .int32: return 0
        default: CUDABackend.fail("\(op): indices must be int32 or int64, got \(indices.dtype)")
        }
    }

    public func embeddingForward(weight: Buffer, indices: Buffer, out: Buffer, rows: Int, dim: Int, count: Int) {
        requireFloat32(weight, "embedding")
        let wide = indicesWide(indices, "embedding")
        if count * dim == 0 { return }
        launch(CUDABackend.embeddingSource, "embedding_forward_f32", grid: Dim3(CUDABackend.blocks(count * dim)), block: Dim3(256),
               [.pointer(address(weight)), .pointer(address(indices)), .int32(wide), .pointer(address(out)),
                .int64(Int64(rows)), .int64(Int64(dim)), .int64(Int64(count)), .pointer(errorWord), .int32(DeviceErrorCode.embeddingIndex.rawValue)])
    }

    public func embeddingBackward(dy: Buffer, indices: Buffer, dWeight: Buffer, rows: Int, dim: Int, count: Int) {
        requireFloat32(dy, "embedding backward"); requireFloat32(dWeight, "embedding backward")
        let wide = indicesWide(indices, "embedding backward")
        if count * dim == 0 || rows == 0 { return }
        // About 64 K threads: as many row blocks as that allows, at most one row each.
        let wanted = Swift.min(rows, Swift.max(1, (65_536 + dim - 1) / dim))
        let rowsPerBlock = (rows + wanted - 1) / wanted
        let rowBlocks = (rows + rowsPerBlock - 1) / rowsPerBlock
        launch(CUDABackend.embeddingSource, "embedding_backward_f32", grid: Dim3(CUDABackend.blocks(rowBlocks * dim)), block: Dim3(256),
               [.pointer(address(dy)), .pointer(address(indices)), .int32(wide), .pointer(address(dWeight)),
                .int64(Int64(rows)), .int64(Int64(dim)), .int64(Int64(count)), .int64(Int64(rowsPerBlock)),
                .int64(Int64(rowBlocks)), .pointer(errorWord), .int32(DeviceErrorCode.embeddingIndex.rawValue)])
    }
}
