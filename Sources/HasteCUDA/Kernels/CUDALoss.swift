import HasteTensor

extension CUDABackend {
    /// The loss family: cross-entropy with a block per row (CPULoss.swift's formulas: per row (m − x[t]) +
    /// log Σ exp(x − m), the rows' mean summed serially in row order by one thread, so the mean's order is the
    /// CPU's; each row's log-sum-exp agrees within float32 rounding, see CUDASoftmax.swift). A target outside
    /// [0, classes) sets the error word (`DeviceErrorCode.crossEntropyTarget`) and is never used as an index:
    /// the forward's loss becomes NaN and the backward leaves that row's one-hot out; the host reports the error
    /// at its next synchronisation.
    static let lossSource = KernelSource(family: "loss", kernels: ["cross_entropy_rows_f32", "cross_entropy_mean_f32", "cross_entropy_backward_f32"], code: #"""
    __device__ __forceinline__ i64 haste_target(const u8* targets, int wide, i64 r) {
        return wide ? ((const i64*)targets)[r] : (i64)((const int*)targets)[r];
    }

    /// Fills the row's max and Σ exp(x − m) (every thread gets both); stores each exp into `e` when it is not null.
    __device__ __forceinline__ void haste_row_lse(const float* xr, i64 cols, float* e, float* scratch, float* mOut, float* sOut) {
        float m = -INFINITY;
        for (i64 j = threadIdx.x; j < cols; j += blockDim.x) if (xr[j] > m) m = xr[j];
        m = haste_block_max(m, scratch);
        float s = 0.0f;
        for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
            float v = expf(xr[j] - m);
            if (e) e[j] = v;
            s += v;
        }
        *mOut = m;
        *sOut = haste_block_sum(s, scratch);
    }

    extern "C" __global__ void cross_entropy_rows_f32(const float* logits, const u8* targets, int wide, float* perRow, i64 rows, i64 classes, int* errorWord, int errorCode) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = logits + r * classes;
            float m, s;
            haste_row_lse(xr, classes, 0, scratch, &m, &s);
            if (threadIdx.x == 0) {
                i64 t = haste_target(targets, wide, r);
                if (t < 0 || t >= classes) {
                    atomicCAS(errorWord, 0, errorCode);
                    perRow[r] = NAN;
                } else {
                    perRow[r] = (m - xr[t]) + logf(s);
                }
            }
        }
    }

    /// One thread: the mean of the rows' losses, summed in row order.
    extern "C" __global__ void cross_entropy_mean_f32(const float* perRow, float* loss, i64 rows) {
        if (blockIdx.x == 0 && threadIdx.x == 0) {
            float total = 0.0f;
            for (i64 r = 0; r < rows; ++r) total += perRow[r];
            loss[0] = total / (float)rows;
        }
    }

    /// dx[r, c] = (softmax(x[r])[c] − [c = t]) · dy/rows, in the CPU's order: softmax, minus one, times the scale.
    extern "C" __global__ void cross_entropy_backward_f32(const float* logits, const u8* targets, int wide, const float* dy, float* dx, i64 rows, i64 classes, int* errorWord, int errorCode) {
        __shared__ float scratch[32];
        float scale = dy[0] / (float)rows;
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = logits + r * classes;
            float* d = dx + r * classes;
            float m, s;
            haste_row_lse(xr, classes, d, scratch, &m, &s);
            i64 t = haste_target(targets, wide, r);
            if ((t < 0 || t >= classes) && threadIdx.x == 0) atomicCAS(errorWord, 0, errorCode);
            float inv = 1.0f / s;
            for (i64 j = threadIdx.x; j < classes; j += blockDim.x) {
                float v = d[j] * inv;
                if (j == t) v -= 1.0f;
                d[j] = v * scale;
            }
        }
    }
    """#)

    private func targetsWide(_ targets: Buffer, _ op: String) -> Int32 {
        switch targets.dtype {
        case .int64: return 1
        case .int32: return 0
        default: CUDABackend.fail("\(op): targets must be int32 or int64, got \(targets.dtype)")
        }
    }

    public func crossEntropyForward(_ logits: Buffer, targets: Buffer, loss: Buffer, rows: Int, classes: Int) {
        requireFloat32(logits, "cross_entropy")
        let wide = targetsWide(targets, "cross_entropy")
        let perRowBytes = Swift.max(rows, 1) * 4
        let perRow = allocator.allocate(byteCount: perRowBytes)
        if rows > 0 {
            launch(CUDABackend.lossSource, "cross_entropy_rows_f32", grid: Dim3(Swift.min(rows, 65_535)),
                   block: Dim3(CUDABackend.rowThreads(classes)),
                   [.pointer(address(logits)), .pointer(address(targets)), .int32(wide), .pointer(perRow),
                    .int64(Int64(rows)), .int64(Int64(classes)), .pointer(errorWord),
                    .int32(DeviceErrorCode.crossEntropyTarget.rawValue)])
        }
        launch(CUDABackend.lossSource, "cross_entropy_mean_f32", grid: Dim3(1), block: Dim3(32),
               [.pointer(perRow), .pointer(address(loss)), .int64(Int64(rows))])
        // Stream order: whatever reuses the block next is queued after the mean has read it.
        allocator.release(perRow, byteCount: perRowBytes)
    }

    public func crossEntropyBackward(_ logits: Buffer, targets: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, classes: Int) {
        requireFloat32(logits, "cross_entropy backward"); requireFloat32(dy, "cross_entropy backward")
        let wide = targetsWide(targets, "cross_entropy backward")
        if rows * classes == 0 { return }
        launch(CUDABackend.lossSource, "cross_entropy_backward_f32", grid: Dim3(Swift.min(rows, 65_535)),
               block: Dim3(CUDABackend.rowThreads(classes)),
               [.pointer(address(logits)), .pointer(address(targets)), .int32(wide), .pointer(address(dy)),
                .pointer(address(dx)), .int64(Int64(rows)), .int64(Int64(classes)), .pointer(errorWord),
                    .int32(DeviceErrorCode.crossEntropyTarget.rawValue)])
    }
}
