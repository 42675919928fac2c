import HasteTensor

extension CUDABackend {
    /// Softmax over rows of bfloat16 values (the aligned attention's probabilities under autocast bf16,
    /// `Tensor.autocastAdaLNAttentionWithLogits`): softmax_forward_f32's and softmax_backward_f32's float32 arithmetic
    /// on the widened values (exact), the same block size and reduction tree, each result rounded once to nearest
    /// even — so the results are the float32 kernels' on a float32 carrier of the same values, rounded, bit for bit.
    /// Forward y = bf16(softmax(x)); backward dx = bf16(y·(dy − Σ dy·y)) stored widened (a float32 carrier of bf16
    /// values: the gradient autograd adds to the logits' other one, as torch adds two bf16 gradients).
    static let softmaxLowSource = KernelSource(family: "softmax_low", kernels: ["softmax_forward_bf16", "softmax_backward_bf16_carrier"], code: #"""
    extern "C" __global__ void softmax_forward_bf16(const u16* x, u16* y, i64 rows, i64 cols) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const u16* xr = x + r * cols;
            u16* yr = y + r * cols;
            float m = -INFINITY;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) { float v = haste_bf16_to_float(xr[j]); if (v > m) m = v; }
            m = haste_block_max(m, scratch);
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += expf(haste_bf16_to_float(xr[j]) - m);
            s = haste_block_sum(s, scratch);
            float inv = 1.0f / s;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x)
                yr[j] = haste_float_to_bf16(expf(haste_bf16_to_float(xr[j]) - m) * inv);
        }
    }

    extern "C" __global__ void softmax_backward_bf16_carrier(const u16* y, const u16* dy, float* dx, i64 rows, i64 cols) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            const u16* yr = y + r * cols;
            const u16* g = dy + r * cols;
            float* d = dx + r * cols;
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += haste_bf16_to_float(g[j]) * haste_bf16_to_float(yr[j]);
            s = haste_block_sum(s, scratch);
            for (i64 j = threadIdx.x; j < cols; j += blockDim.x)
                d[j] = haste_round_bf16(haste_bf16_to_float(yr[j]) * (haste_bf16_to_float(g[j]) - s));
        }
    }
    """#)

    public func softmaxForwardLow(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) -> Bool {
        guard x.dtype == .bfloat16, y.dtype == .bfloat16 else { return false }
        if rows * cols == 0 { return true }
        launch(CUDABackend.softmaxLowSource, "softmax_forward_bf16", grid: Dim3(Swift.min(rows, 65_535)),
               block: Dim3(CUDABackend.rowThreads(cols)),
               [.pointer(address(x)), .pointer(address(y)), .int64(Int64(rows)), .int64(Int64(cols))])
        return true
    }

    public func softmaxBackwardLow(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) -> Bool {
        guard y.dtype == .bfloat16, dy.dtype == .bfloat16, dx.dtype == .float32 else { return false }
        if rows * cols == 0 { return true }
        launch(CUDABackend.softmaxLowSource, "softmax_backward_bf16_carrier", grid: Dim3(Swift.min(rows, 65_535)),
               block: Dim3(CUDABackend.rowThreads(cols)),
               [.pointer(address(y)), .pointer(address(dy)), .pointer(address(dx)), .int64(Int64(rows)), .int64(Int64(cols))])
        return true
    }
}
