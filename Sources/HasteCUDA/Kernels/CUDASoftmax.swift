import HasteTensor

extension CUDABackend {
    /// The softmax family: one block per row (grid-stride over rows), the prelude's block reductions for the row
    /// max and sum; rows of up to 256 columns by warp with the same bits (the `_w` entry points,
    /// CUDASoftmaxWarp.swift). Same formulas as CPUSoftmax.swift (max subtracted; softmax multiplies by 1/Σ;
    /// log-softmax is (x − m) − log Σ). The CPU sums in 16 SIMD lanes with a Cephes exp (≤ 0.9 ulp); here each thread sums a
    /// strided subset and the block combines them in a fixed tree with libdevice's expf (≤ 2 ulp): results agree
    /// within float32 rounding of the sum (a few ulps of each output), bitwise reproducible run to run. The soft
    /// cross-entropy (`soft_cross_entropy_f32`, CUDASoftCrossEntropy.swift) and the bf16 rows' softmax (CUDASoftmaxLow.swift)
    /// are in this family too.
    static let softmaxSource = KernelSource(family: "softmax", kernels: ["softmax_forward_f32", "softmax_backward_f32", "softmax_forward_bf16",
                                                                              "softmax_backward_bf16", "soft_cross_entropy_f32",
                                                                              "softmax_forward_f32_w", "softmax_backward_f32_w", "softmax_forward_bf16_w",
                                                                              "softmax_backward_bf16_w", "soft_cross_entropy_f32_w",
                                                                              "soft_cross_entropy_backward_bf16", "soft_cross_entropy_backward_bf16_v4",
                                                                              "soft_cross_entropy_f32_t16", "soft_cross_entropy_f32_t16_w",
                                                                              "soft_cross_entropy_f32_x16", "soft_cross_entropy_f32_x16_w",
                                                                              "soft_cross_entropy_f32_x16_t16", "soft_cross_entropy_f32_x16_t16_w"],
                                            code: softmaxCode + softCrossEntropyCode + "\n" + softmaxWarpCode)

    private static let softmaxCode = #"""
    /// Rows of softmax (log = 0) or log-softmax (log ≠ 0) from x into y, each a float32 buffer or a bf16 one (u16:
    /// widened on load, exact; rounded to nearest even on store), so the bf16 kernels compute the float32 ones' values
    /// on the widened inputs, rounded once. The max skips NaN like CPUReduce.rowMax (a NaN input still makes its row
    /// NaN). softmax's exponentials are taken again for the output (the same bits as keeping them).
    template <typename TX, typename TY>
    __device__ __forceinline__ void haste_softmax_rows(const TX* x, TY* y, i64 rows, i64 cols, int log, float* scratch) {
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const TX* xr = x + r * cols;
            TY* yr = y + r * cols;
            float m = -INFINITY;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) { const float v = haste_ld(xr, j); if (v > m) m = v; }
            m = haste_block_max(m, scratch);
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += expf(haste_ld(xr, j) - m);
            s = haste_block_sum(s, scratch);
            if (log) {
                const float ls = logf(s);
                for (i64 j = threadIdx.x; j < cols; j += blockDim.x) haste_st(yr, j, (haste_ld(xr, j) - m) - ls);
            } else {
                const float inv = 1.0f / s;
                for (i64 j = threadIdx.x; j < cols; j += blockDim.x) haste_st(yr, j, expf(haste_ld(xr, j) - m) * inv);
            }
        }
    }

    /// softmax: dx = y·(dy − Σ dy·y); log-softmax: dx = dy − exp(y)·Σ dy; y and dy float32 or bf16 (widened), dx
    /// float32 or bf16 (rounded once to nearest even on store, as y).
    template <typename T, typename TD>
    __device__ __forceinline__ void haste_softmax_backward_rows(const T* y, const T* dy, TD* dx, i64 rows, i64 cols, int log,
                                                                float* scratch) {
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const T* yr = y + r * cols;
            const T* g = dy + r * cols;
            TD* d = dx + r * cols;
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += log ? haste_ld(g, j) : haste_ld(g, j) * haste_ld(yr, j);
            s = haste_block_sum(s, scratch);
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
                haste_st(d, j, log ? haste_ld(g, j) - expf(haste_ld(yr, j)) * s : haste_ld(yr, j) * (haste_ld(g, j) - s));
            }
        }
    }

    extern "C" __global__ void softmax_forward_f32(const float* x, float* y, i64 rows, i64 cols, int log) {
        __shared__ float scratch[32];
        haste_softmax_rows(x, y, rows, cols, log, scratch);
    }
    extern "C" __global__ void softmax_backward_f32(const float* y, const float* dy, float* dx, i64 rows, i64 cols, int log) {
        __shared__ float scratch[32];
        haste_softmax_backward_rows(y, dy, dx, rows, cols, log, scratch);
    }
    /// bf16 rows (the aligned attention's probabilities, CUDASoftmaxLow.swift): y = bf16(softmax(x)); dx = bf16(y·(dy
    /// − Σ dy·y)).
    extern "C" __global__ void softmax_forward_bf16(const u16* x, u16* y, i64 rows, i64 cols) {
        __shared__ float scratch[32];
        haste_softmax_rows(x, y, rows, cols, 0, scratch);
    }
    extern "C" __global__ void softmax_backward_bf16(const u16* y, const u16* dy, u16* dx, i64 rows, i64 cols) {
        __shared__ float scratch[32];
        haste_softmax_backward_rows(y, dy, dx, rows, cols, 0, scratch);
    }
    """#

    /// Threads for a block that walks a row of `cols`: a multiple of 32 (the block reductions need whole warps),
    /// no more than the row needs, at most 256.
    static func rowThreads(_ cols: Int) -> Int {
        cols <= 32 ? 32 : cols <= 64 ? 64 : cols <= 128 ? 128 : 256
    }

    /// `inputs` and `outputs` in the kernel's argument order (outputs after inputs), then rows, cols and `log`.
    private func softmaxLaunch(_ kernel: String, inputs: [Buffer], outputs: [Buffer], rows: Int, cols: Int, log: Bool) {
        if rows * cols == 0 { return }
        softmaxRows(kernel, (inputs + outputs).map { .pointer(address($0)) } + [.int64(Int64(rows)), .int64(Int64(cols)), .int32(log ? 1 : 0)],
                    rows: rows, cols: cols, variant: log ? " log" : "", repeatable: CUDABackend.separate(outputs: outputs, inputs: inputs))
    }

    public func softmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        requireFloat32(x, "softmax")
        softmaxLaunch("softmax_forward_f32", inputs: [x], outputs: [y], rows: rows, cols: cols, log: false)
    }

    public func softmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) {
        requireFloat32(y, "softmax backward"); requireFloat32(dy, "softmax backward")
        softmaxLaunch("softmax_backward_f32", inputs: [y, dy], outputs: [dx], rows: rows, cols: cols, log: false)
    }

    public func logSoftmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        requireFloat32(x, "log_softmax")
        softmaxLaunch("softmax_forward_f32", inputs: [x], outputs: [y], rows: rows, cols: cols, log: true)
    }

    public func logSoftmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) {
        requireFloat32(y, "log_softmax backward"); requireFloat32(dy, "log_softmax backward")
        softmaxLaunch("softmax_backward_f32", inputs: [y, dy], outputs: [dx], rows: rows, cols: cols, log: true)
    }
}
