import HasteTensor

extension CUDABackend {
    /// The optimizer family, float32. AdamW and EMA follow CPUOptimizer.swift operation by operation with the
    /// same host-computed scalars (`AdamWCoefficients`); their fused multiply-adds go through
    /// `haste_fma_exact` (fmaf is outside the kernel subset), correctly rounded like the CPU's `addingProduct`,
    /// and sqrtf and division are IEEE (NVRTC's defaults), so both agree with the CPU bit for bit. `scale` is
    /// one multiply (exact). `sumOfSquares` squares and sums in double (more accurate than the CPU's float lanes
    /// summed per 1024-element block into a double) in a fixed two-pass tree: bitwise reproducible run to run,
    /// equal to the CPU's within its float32 block sums' error (≈ 2⁻²⁴·64 relative at worst).
    static let optimizerSource = KernelSource(family: "optimizer", kernels: ["adamw_f32", "ema_update_f32", "scale_f32", "sum_squares_partial_f32", "sum_squares_final"], code: #"""
    __device__ __forceinline__ float haste_next_up(float r) {
        if (r == 0.0f) return __uint_as_float(1u);
        u32 b = __float_as_uint(r);
        return __uint_as_float(r > 0.0f ? b + 1u : b - 1u);
    }
    __device__ __forceinline__ float haste_next_down(float r) { return -haste_next_up(-r); }

    /// fmaf(a, b, c), correctly rounded, in double: a·b is exact in double, so s = a·b + c has one rounding, and
    /// rounding s to float is wrong only when s lands exactly on a midpoint between two floats while the exact
    /// sum (s + e, e from TwoSum) does not; then e says which neighbour is nearer.
    __device__ __forceinline__ float haste_fma_exact(float a, float b, float c) {
        double p = (double)a * (double)b;
        double s = p + (double)c;
        double bb = s - p;
        double e = (p - (s - bb)) + ((double)c - bb);
        float r = (float)s;
        if (e != 0.0 && !isnan(s) && !isinf(r) && (double)r != s) {
            float o = s > (double)r ? haste_next_up(r) : haste_next_down(r);
            if ((double)r + (double)o == 2.0 * s) {
                float up = r > o ? r : o, down = r > o ? o : r;
                r = e > 0.0 ? up : down;
            }
        }
        return r;
    }

    /// torch's AdamW (foreach=False) element arithmetic, as CPUBackend.adamw.
    extern "C" __global__ void adamw_f32(float* param, const float* grad, float* m, float* v, i64 n, int applyDecay, float decay, float w, int smallWeight, float b2, float oneMinusB2, float bc2s, float eps, float negStep) {
        HASTE_GRID_STRIDE_LOOP(i, n) {
            float gi = grad[i], pi = param[i], mi0 = m[i];
            if (applyDecay) pi = pi * decay;
            float diff = gi - mi0;
            float mi = smallWeight ? haste_fma_exact(w, diff, mi0) : haste_fma_exact(w - 1.0f, diff, gi);
            float vb = v[i] * b2, cg = oneMinusB2 * gi;
            float vi = haste_fma_exact(cg, gi, vb);
            float denom = sqrtf(vi) / bc2s + eps;
            m[i] = mi;
            v[i] = vi;
            param[i] = pi + (negStep * mi) / denom;
        }
    }

    /// ema ← fma(p, 1 − d, ema·d), torch's `ema.mul_(d).add_(p, alpha=1-d)`.
    extern "C" __global__ void ema_update_f32(float* ema, const float* param, i64 n, float d, float alpha) {
        HASTE_GRID_STRIDE_LOOP(i, n) {
            float ed = ema[i] * d;
            ema[i] = haste_fma_exact(param[i], alpha, ed);
        }
    }

    extern "C" __global__ void scale_f32(float* x, i64 n, float factor) {
        HASTE_GRID_STRIDE_LOOP(i, n) x[i] *= factor;
    }

    /// Sums `v` over the block (blockDim.x = 256) in a fixed tree; thread 0 gets the total.
    __device__ __forceinline__ double haste_block_sum_double(double v, double* sh) {
        sh[threadIdx.x] = v;
        __syncthreads();
        for (int s = 128; s > 0; s >>= 1) {
            if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
            __syncthreads();
        }
        return sh[0];
    }

    /// Pass 1 (blockDim 256, a grid fixed by n): block b's Σ x² over its grid-stride elements, in double.
    extern "C" __global__ void sum_squares_partial_f32(const float* x, i64 n, double* partial) {
        __shared__ double sh[256];
        double acc = 0.0;
        HASTE_GRID_STRIDE_LOOP(i, n) { double xi = (double)x[i]; acc += xi * xi; }
        double total = haste_block_sum_double(acc, sh);
        if (threadIdx.x == 0) partial[blockIdx.x] = total;
    }

    /// Pass 2 (one block of 256): the partials' sum.
    extern "C" __global__ void sum_squares_final(const double* partial, i64 parts, double* out) {
        __shared__ double sh[256];
        double acc = 0.0;
        for (i64 i = threadIdx.x; i < parts; i += blockDim.x) acc += partial[i];
        double total = haste_block_sum_double(acc, sh);
        if (threadIdx.x == 0) out[0] = total;
    }
    """#)

    public func adamw(param: Buffer, grad: Buffer, m: Buffer, v: Buffer, count: Int, lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) {
        requireFloat32(param, "adamw"); requireFloat32(grad, "adamw"); requireFloat32(m, "adamw"); requireFloat32(v, "adamw")
        let c = AdamWCoefficients(lr: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay, step: step)
        if count <= 0 { return }
        launch(CUDABackend.optimizerSource, "adamw_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(param)), .pointer(address(grad)), .pointer(address(m)), .pointer(address(v)),
                .int64(Int64(count)), .int32(c.applyDecay ? 1 : 0), .float(Float(c.decayFactor)), .float(Float(c.lerpWeight)),
                .int32(Swift.abs(c.lerpWeight) < 0.5 ? 1 : 0), .float(Float(c.beta2)), .float(Float(c.oneMinusBeta2)),
                .float(Float(c.biasCorrection2Sqrt)), .float(Float(c.eps)), .float(Float(c.negStepSize))])
    }

    public func emaUpdate(ema: Buffer, param: Buffer, count: Int, decay: Double) {
        requireFloat32(ema, "ema"); requireFloat32(param, "ema")
        if count <= 0 { return }
        launch(CUDABackend.optimizerSource, "ema_update_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(ema)), .pointer(address(param)), .int64(Int64(count)), .float(Float(decay)), .float(Float(1 - decay))])
    }

    /// Two passes on the device, then one double copied back: a synchronisation point.
    public func sumOfSquares(_ x: Buffer, count: Int) -> Double {
        requireFloat32(x, "sum of squares")
        if count <= 0 { return 0 }
        let parts = Swift.min(CUDABackend.blocks(count), 1024)
        let bytes = (parts + 1) * 8
        let scratch = allocator.allocate(byteCount: bytes)
        let out = scratch + DevicePointer(parts * 8)
        launch(CUDABackend.optimizerSource, "sum_squares_partial_f32", grid: Dim3(parts), block: Dim3(256),
               [.pointer(address(x)), .int64(Int64(count)), .pointer(scratch)])
        launch(CUDABackend.optimizerSource, "sum_squares_final", grid: Dim3(1), block: Dim3(256),
               [.pointer(scratch), .int64(Int64(parts)), .pointer(out)])
        synchronize()
        var total = 0.0
        driver.copy(from: out, toHost: &total, byteCount: 8)
        allocator.release(scratch, byteCount: bytes)
        return total
    }

    public func scale(_ x: Buffer, count: Int, by: Double) {
        requireFloat32(x, "scale")
        if count <= 0 { return }
        launch(CUDABackend.optimizerSource, "scale_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(x)), .int64(Int64(count)), .float(Float(by))])
    }
}
