import HasteTensor

extension CUDABackend {
    /// Resize kernels. Nearest 2× and its backward are bitwise the CPU's (same sums in torch's order). Bicubic
    /// resampling first builds the per-axis tap table on the device with CPUResize's formulas in float (double
    /// where torch promotes), then one thread per output sums its taps in order. The CPU writes the polynomial
    /// and source-coordinate FMAs out; the subset has no fmaf, so here they are plain expressions, which NVRTC
    /// contracts into the same FMAs (its default --fmad=true) and a host compiler may not: weights then agree to
    /// float32 rounding. The backward is a gather: one thread per dx element adds w·dy over the outputs whose
    /// taps read it (a contiguous range of outputs, found by binary search, since tap bounds grow with the
    /// output index), in output-then-tap order: the CPU's order, no atomics.
    static let resizeSource = KernelSource(family: "resize", kernels: [
        "upsample_nearest2x_f32", "upsample_nearest2x32_f32", "upsample_nearest2x_backward_f32", "resample_table", "resample_f32",
        "resample_backward_f32",
    ], code: #"""
    /// y [rows, 2, 2w] from x [rows, w] (rows = planes·height): each pixel over a 2×2 block.
    extern "C" __global__ void upsample_nearest2x_f32(const float* x, float* y, i64 rows, i64 w) {
        HASTE_GRID_STRIDE_LOOP(e, rows * 4 * w) {
            i64 c = e % (2 * w), r = e / (4 * w);
            y[e] = x[r * w + c / 2];
        }
    }

    /// The same, one thread per input pixel writing its 2×2 block, where x has fewer than 2³¹ elements: one
    /// multiply-high division per input pixel (`haste_fdiv`) instead of two 64-bit divisions per output pixel.
    extern "C" __global__ void upsample_nearest2x32_f32(const float* x, float* y, int n, int w, u64 fw) {
        for (u32 e = blockIdx.x * blockDim.x + threadIdx.x; e < (u32)n; e += blockDim.x * gridDim.x) {
            const u32 r = haste_fdiv(e, fw), c = e - r * (u32)w;
            const float v = x[e];
            float* top = y + (i64)r * 4 * w + 2 * c;
            top[0] = v; top[1] = v; top[2 * w] = v; top[2 * w + 1] = v;
        }
    }

    /// dx[r, j] = top[2j] + top[2j+1] + bottom[2j] + bottom[2j+1] (torch's order).
    extern "C" __global__ void upsample_nearest2x_backward_f32(const float* dy, float* dx, i64 rows, i64 w) {
        HASTE_GRID_STRIDE_LOOP(e, rows * w) {
            i64 j = e % w, r = e / w;
            const float* top = dy + r * 4 * w;
            const float* bottom = top + 2 * w;
            dx[e] = top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1];
        }
    }

    /// Keys' cubic convolution for |x| ≤ 1: ((a + 2)·x − (a + 3))·x·x + 1, and for 1 ≤ |x| < 2.
    __device__ __forceinline__ float haste_cubic1(float x, float a) { return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f; }
    __device__ __forceinline__ float haste_cubic2(float x, float a) { return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a; }

    /// One thread per output i: count[i] taps at index[i·taps + t] with weight[i·taps + t]; lo[i], hi[i] bound
    /// the input indices its taps read ([lo, hi), nondecreasing in i). filter 0: bicubic (A = −0.75, 4 taps
    /// clamped to the border); 1: antialiased bicubic (A = −0.5, support around the centre, normalised).
    extern "C" __global__ void resample_table(int filter, i64 inSize, i64 outSize, i64 taps, float scale, float support, i64* count, i64* index, float* weight, i64* lo, i64* hi) {
        HASTE_GRID_STRIDE_LOOP(i, outSize) {
            i64 base = i * taps;
            if (filter == 0) {
                float real = scale * ((float)i + 0.5f) - 0.5f;
                i64 first = (i64)floorf(real);
                if (first > inSize - 1) first = inSize - 1;
                float t = fminf(fmaxf(real - (float)first, 0.0f), 1.0f);
                float a = -0.75f, x2 = 1.0f - t;
                weight[base] = haste_cubic2(t + 1.0f, a);
                weight[base + 1] = haste_cubic1(t, a);
                weight[base + 2] = haste_cubic1(x2, a);
                weight[base + 3] = haste_cubic2(x2 + 1.0f, a);
                for (i64 j = 0; j < 4; j++) {
                    i64 v = first - 1 + j;
                    if (v > inSize - 1) v = inSize - 1;
                    if (v < 0) v = 0;
                    index[base + j] = v;
                }
                count[i] = 4;
                lo[i] = index[base];
                hi[i] = index[base + 3] + 1;
            } else {
                // torch's promotions: int64/float with a double literal computes in double.
                float center = (float)((double)scale * ((double)i + 0.5));
                float invscale = scale >= 1.0f ? (float)(1.0 / (double)scale) : 1.0f;
                i64 first = (i64)((double)(center - support) + 0.5);
                if (first < 0) first = 0;
                i64 end = (i64)((double)(center + support) + 0.5);
                if (end > inSize) end = inSize;
                i64 size = end - first;
                if (size < 0) size = 0;
                if (size > taps) size = taps;
                float total = 0.0f;
                for (i64 j = 0; j < size; j++) {
                    float u = fabsf((float)(((double)((float)(j + first) - center) + 0.5) * (double)invscale));
                    float w = u < 1.0f ? haste_cubic1(u, -0.5f) : (u < 2.0f ? haste_cubic2(u, -0.5f) : 0.0f);
                    index[base + j] = j + first;
                    weight[base + j] = w;
                    total += w;
                }
                if (total != 0.0f) {
                    for (i64 j = 0; j < size; j++) weight[base + j] = weight[base + j] / total;
                }
                count[i] = size;
                lo[i] = first;
                hi[i] = first + size;
            }
        }
    }

    /// y[o, i, k] = Σ_t w_t·x[o, index_t, k], the first tap assigned and the rest added in order.
    extern "C" __global__ void resample_f32(const float* x, float* y, i64 outer, i64 inSize, i64 outSize, i64 inner, i64 taps, const i64* count, const i64* index, const float* weight) {
        HASTE_GRID_STRIDE_LOOP(e, outer * outSize * inner) {
            i64 k = e % inner, i = (e / inner) % outSize, o = e / (inner * outSize);
            const float* src = x + o * inSize * inner + k;
            i64 n = count[i], base = i * taps;
            float acc = 0.0f;
            if (n > 0) {
                acc = src[index[base] * inner] * weight[base];
                for (i64 t = 1; t < n; t++) acc += src[index[base + t] * inner] * weight[base + t];
            }
            y[e] = acc;
        }
    }

    /// dx[o, j, k] = Σ over outputs i (in order) and their taps t (in order) with index_t(i) = j of w_t(i)·dy[o, i, k].
    /// The outputs reading j are those with lo[i] ≤ j < hi[i]: from the first i with hi[i] > j to the last
    /// with lo[i] ≤ j.
    extern "C" __global__ void resample_backward_f32(const float* dy, float* dx, i64 outer, i64 inSize, i64 outSize, i64 inner, i64 taps, const i64* count, const i64* index, const float* weight, const i64* lo, const i64* hi) {
        HASTE_GRID_STRIDE_LOOP(e, outer * inSize * inner) {
            i64 k = e % inner, j = (e / inner) % inSize, o = e / (inner * inSize);
            i64 a = 0, b = outSize;                     // first i with hi[i] > j
            while (a < b) { i64 mid = (a + b) / 2; if (hi[mid] > j) b = mid; else a = mid + 1; }
            i64 start = a;
            a = start; b = outSize;                     // first i with lo[i] > j
            while (a < b) { i64 mid = (a + b) / 2; if (lo[mid] > j) b = mid; else a = mid + 1; }
            i64 stop = a;
            const float* g = dy + o * outSize * inner + k;
            float acc = 0.0f;
            for (i64 i = start; i < stop; i++) {
                i64 n = count[i], base = i * taps;
                for (i64 t = 0; t < n; t++) {
                    if (index[base + t] == j) acc += weight[base + t] * g[i * inner];
                }
            }
            dx[e] = acc;
        }
    }
    """#)

    public func upsampleNearest2x(x: Buffer, y: Buffer, planes: Int, height: Int, width: Int) {
        requireFloat32(x, "upsampleNearest2x")
        let rows = planes * height
        if rows * width == 0 { return }
        if rows * width < 1 << 31 && CUDABackend.index32Allowed {
            launch(CUDABackend.resizeSource, "upsample_nearest2x32_f32", grid: Dim3(CUDABackend.blocks(rows * width)), block: Dim3(256),
                   [.pointer(address(x)), .pointer(address(y)), .int32(Int32(rows * width)), .int32(Int32(width)),
                    .uint64(CUDABackend.fastDivisor(width))])
            return
        }
        launch(CUDABackend.resizeSource, "upsample_nearest2x_f32", grid: Dim3(CUDABackend.blocks(rows * 4 * width)),
               block: Dim3(256), [.pointer(address(x)), .pointer(address(y)), .int64(Int64(rows)), .int64(Int64(width))])
    }

    public func upsampleNearest2xBackward(dy: Buffer, dx: Buffer, planes: Int, height: Int, width: Int) {
        requireFloat32(dy, "upsampleNearest2x backward")
        let rows = planes * height
        if rows * width == 0 { return }
        launch(CUDABackend.resizeSource, "upsample_nearest2x_backward_f32", grid: Dim3(CUDABackend.blocks(rows * width)),
               block: Dim3(256), [.pointer(address(dy)), .pointer(address(dx)), .int64(Int64(rows)), .int64(Int64(width))])
    }

    /// A tap table on the device (count, index, lo, hi: i64; weight: float), built by `resample_table` with the
    /// CPU's scale, support and tap count (computed here in Float exactly as `ResampleTable` does).
    private struct ResampleTableOnDevice {
        let taps: Int, bytes: Int, base: DevicePointer, outSize: Int
        var count: DevicePointer { base }
        var index: DevicePointer { base + DevicePointer(8 * outSize) }
        var lo: DevicePointer { index + DevicePointer(8 * outSize * taps) }
        var hi: DevicePointer { lo + DevicePointer(8 * outSize) }
        var weight: DevicePointer { hi + DevicePointer(8 * outSize) }
    }

    private func resampleTable(_ filter: ResizeFilter, inSize: Int, outSize: Int) -> ResampleTableOnDevice {
        let scale = Float(inSize) / Float(outSize)
        let support: Float = filter == .bicubic || scale < 1 ? 2 : 2 * scale
        let taps = filter == .bicubic ? 4 : Int(Double(support).rounded(.up)) * 2 + 1   // torch's max_interp_size
        let bytes = 8 * outSize * (3 + taps) + 4 * outSize * taps
        let table = ResampleTableOnDevice(taps: taps, bytes: bytes, base: allocator.allocate(byteCount: bytes), outSize: outSize)
        launch(CUDABackend.resizeSource, "resample_table", grid: Dim3(CUDABackend.blocks(outSize)), block: Dim3(256), [
            .int32(filter == .bicubic ? 0 : 1), .int64(Int64(inSize)), .int64(Int64(outSize)), .int64(Int64(taps)),
            .float(scale), .float(support), .pointer(table.count), .pointer(table.index), .pointer(table.weight),
            .pointer(table.lo), .pointer(table.hi),
        ])
        return table
    }

    public func resample(_ filter: ResizeFilter, x: Buffer, y: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int) {
        requireFloat32(x, "resample")
        let total = outer * outSize * inner
        if total == 0 { return }
        let table = resampleTable(filter, inSize: inSize, outSize: outSize)
        launch(CUDABackend.resizeSource, "resample_f32", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256), [
            .pointer(address(x)), .pointer(address(y)), .int64(Int64(outer)), .int64(Int64(inSize)),
            .int64(Int64(outSize)), .int64(Int64(inner)), .int64(Int64(table.taps)), .pointer(table.count),
            .pointer(table.index), .pointer(table.weight),
        ])
        allocator.release(table.base, byteCount: table.bytes)   // one stream, in order: the kernels above run first
    }

    public func resampleBackward(_ filter: ResizeFilter, dy: Buffer, dx: Buffer, outer: Int, inSize: Int, outSize: Int,
                                 inner: Int) {
        requireFloat32(dy, "resample backward")
        let total = outer * inSize * inner
        if total == 0 { return }
        // No outputs: no table, and the kernel's empty ranges write zeros (the CPU overwrites dx too).
        let table = outSize > 0 ? resampleTable(filter, inSize: inSize, outSize: outSize) : nil
        launch(CUDABackend.resizeSource, "resample_backward_f32", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256), [
            .pointer(address(dy)), .pointer(address(dx)), .int64(Int64(outer)), .int64(Int64(inSize)),
            .int64(Int64(outSize)), .int64(Int64(inner)), .int64(Int64(table?.taps ?? 0)), .pointer(table?.count ?? 0),
            .pointer(table?.index ?? 0), .pointer(table?.weight ?? 0), .pointer(table?.lo ?? 0), .pointer(table?.hi ?? 0),
        ])
        if let table { allocator.release(table.base, byteCount: table.bytes) }
    }
}
