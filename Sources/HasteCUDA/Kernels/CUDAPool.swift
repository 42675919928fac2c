import HasteTensor

extension CUDABackend {
    /// Max and average pooling, one thread per output pixel walking its window in the CPU's order (rows, then
    /// columns) with torch's window bounds: start = o·s − p, end = min(start + k, size + p); the include-pad
    /// divisor is the window clipped to the padded input, the exclude-pad one the pixels inside the image.
    /// Results are bitwise the CPU's.
    static let poolSource = KernelSource(family: "pool", kernels: ["max_pool2d_f32", "avg_pool2d_f32"], code: #"""
    /// Padding never wins (the maximum starts at −inf); a NaN in the window wins and stays (torch).
    extern "C" __global__ void max_pool2d_f32(const float* x, float* y, i64 planes, i64 h, i64 w, i64 oh, i64 ow, i64 k, i64 s, i64 p) {
        HASTE_GRID_STRIDE_LOOP(e, planes * oh * ow) {
            i64 ox = e % ow, oy = (e / ow) % oh, plane = e / (ow * oh);
            i64 y0 = oy * s - p, y1 = y0 + k < h + p ? y0 + k : h + p;
            i64 x0 = ox * s - p, x1 = x0 + k < w + p ? x0 + k : w + p;
            i64 ya = y0 > 0 ? y0 : 0, yb = y1 < h ? y1 : h, xa = x0 > 0 ? x0 : 0, xb = x1 < w ? x1 : w;
            const float* src = x + plane * h * w;
            float m = -INFINITY;
            for (i64 iy = ya; iy < yb; iy++) {
                for (i64 ix = xa; ix < xb; ix++) {
                    float v = src[iy * w + ix];
                    if (v > m || (isnan(v) && !isnan(m))) m = v;
                }
            }
            y[e] = m;
        }
    }

    extern "C" __global__ void avg_pool2d_f32(const float* x, float* y, i64 planes, i64 h, i64 w, i64 oh, i64 ow, i64 k, i64 s, i64 p, int includePad) {
        HASTE_GRID_STRIDE_LOOP(e, planes * oh * ow) {
            i64 ox = e % ow, oy = (e / ow) % oh, plane = e / (ow * oh);
            i64 y0 = oy * s - p, y1 = y0 + k < h + p ? y0 + k : h + p;
            i64 x0 = ox * s - p, x1 = x0 + k < w + p ? x0 + k : w + p;
            i64 ya = y0 > 0 ? y0 : 0, yb = y1 < h ? y1 : h, xa = x0 > 0 ? x0 : 0, xb = x1 < w ? x1 : w;
            const float* src = x + plane * h * w;
            float sum = 0.0f;
            for (i64 iy = ya; iy < yb; iy++) {
                for (i64 ix = xa; ix < xb; ix++) sum += src[iy * w + ix];
            }
            i64 count = includePad ? (y1 - y0) * (x1 - x0) : (yb - ya) * (xb - xa);
            y[e] = sum / (float)count;
        }
    }
    """#)

    private func poolArguments(_ x: Buffer, _ y: Buffer, _ planes: Int, _ g: PoolGeometry) -> [KernelArgument] {
        [.pointer(address(x)), .pointer(address(y))]
            + [planes, g.height, g.width, g.outHeight, g.outWidth, g.kernel, g.stride, g.padding].map { .int64(Int64($0)) }
    }

    public func maxPool2d(x: Buffer, y: Buffer, planes: Int, geometry g: PoolGeometry) {
        requireFloat32(x, "maxPool2d")
        let total = planes * g.outHeight * g.outWidth
        if total <= 0 { return }
        launch(CUDABackend.poolSource, "max_pool2d_f32", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256),
               poolArguments(x, y, planes, g))
    }

    public func avgPool2d(x: Buffer, y: Buffer, planes: Int, geometry g: PoolGeometry, countIncludePad: Bool) {
        requireFloat32(x, "avgPool2d")
        let total = planes * g.outHeight * g.outWidth
        if total <= 0 { return }
        launch(CUDABackend.poolSource, "avg_pool2d_f32", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256),
               poolArguments(x, y, planes, g) + [.int32(countIncludePad ? 1 : 0)])
    }
}
