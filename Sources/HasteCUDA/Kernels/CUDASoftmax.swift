import HasteTensor

extension CUDABackend {
    /// The softmax family: one block per row (grid-stride over rows), the prelude's block reductions for the row
    /// max and sum. Same formulas as CPUSoftmax.swift (max subtracted; softmax multiplies by 1/Σ; log-softmax
    /// is (x − m) − log Σ). The CPU sums in 16 SIMD lanes with a Cephes exp (≤ 0.9 ulp); here each thread sums a
    /// strided subset and the block combines them in a fixed tree with libdevice's expf (≤ 2 ulp): results agree
    /// within float32 rounding of the sum (a few ulps of each output), bitwise reproducible run to run. The soft
    /// cross-entropy (`soft_cross_entropy_f32`, CUDASoftCrossEntropy.swift) is in this family too.
    static let softmaxSource = KernelSource(family: "softmax", kernels: ["softmax_forward_f32", "softmax_backward_f32", "soft_cross_entropy_f32"],
                                            code: softmaxCode + softCrossEntropyCode)

    private static let softmaxCode = #"""
    /// log ≠ 0: log-softmax. The max skips NaN like CPUReduce.rowMax (a NaN input still makes its row NaN).
    extern "C" __global__ void softmax_forward_f32(const float* x, float* y, i64 rows, i64 cols, int log) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = x + r * cols;
            float* yr = y + r * cols;
            float m = -INFINITY;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) if (xr[j] > m) m = xr[j];
            m = haste_block_max(m, scratch);
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
                float e = expf(xr[j] - m);
                if (!log) yr[j] = e;
                s += e;
            }
            s = haste_block_sum(s, scratch);
            if (log) {
                float ls = logf(s);
                for (i64 j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = (xr[j] - m) - ls;
            } else {
                float inv = 1.0f / s;
                for (i64 j = threadIdx.x; j < cols; j += blockDim.x) yr[j] *= inv;
            }
        }
    }

    /// softmax: dx = y·(dy − Σ dy·y); log-softmax: dx = dy − exp(y)·Σ dy.
    extern "C" __global__ void softmax_backward_f32(const float* y, const float* dy, float* dx, i64 rows, i64 cols, int log) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* yr = y + r * cols;
            const float* g = dy + r * cols;
            float* d = dx + r * cols;
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += log ? g[j] : g[j] * yr[j];
            s = haste_block_sum(s, scratch);
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) d[j] = log ? g[j] - expf(yr[j]) * s : yr[j] * (g[j] - s);
        }
    }

    """#

    /// Threads for a block that walks a row of `cols`: a multiple of 32 (the block reductions need whole warps),
    /// no more than the row needs, at most 256.
    static func rowThreads(_ cols: Int) -> Int {
        cols <= 32 ? 32 : cols <= 64 ? 64 : cols <= 128 ? 128 : 256
    }

    private func softmaxLaunch(_ kernel: String, _ args: [KernelArgument], rows: Int, cols: Int, log: Bool) {
        if rows * cols == 0 { return }
        launch(CUDABackend.softmaxSource, kernel, grid: Dim3(Swift.min(rows, 65_535)), block: Dim3(CUDABackend.rowThreads(cols)),
               args + [.int64(Int64(rows)), .int64(Int64(cols)), .int32(log ? 1 : 0)])
    }

    public func softmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        requireFloat32(x, "softmax")
        softmaxLaunch("softmax_forward_f32", [.pointer(address(x)), .pointer(address(y))], rows: rows, cols: cols, log: false)
    }

    public func softmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) {
        requireFloat32(y, "softmax backward"); requireFloat32(dy, "softmax backward")
        softmaxLaunch("softmax_backward_f32", [.pointer(address(y)), .pointer(address(dy)), .pointer(address(dx))],
                      rows: rows, cols: cols, log: false)
    }

    public func logSoftmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        requireFloat32(x, "log_softmax")
        softmaxLaunch("softmax_forward_f32", [.pointer(address(x)), .pointer(address(y))], rows: rows, cols: cols, log: true)
    }

    public func logSoftmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) {
        requireFloat32(y, "log_softmax backward"); requireFloat32(dy, "log_softmax backward")
        softmaxLaunch("softmax_backward_f32", [.pointer(address(y)), .pointer(address(dy)), .pointer(address(dx))],
                      rows: rows, cols: cols, log: true)
    }
}
