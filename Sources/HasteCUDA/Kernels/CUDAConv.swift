import Foundation
import HasteTensor

extension CUDABackend {
    /// im2col, one thread per column-matrix entry, for float32 and for bfloat16 (a 2-byte copy: the bf16 column
    /// matrix of autocast's conv2d is half the float32 one); col2im as a gather, one thread per input pixel summing
    /// the entries that read it in the CPU's order (kernel row, then column), so it is deterministic with no atomics
    /// and bitwise equal to the CPU.
    static let convSource = KernelSource(family: "conv", kernels: ["im2col_f32", "im2col_u16", "im2col32_f32", "im2col32_u16", "col2im_f32"], code: #"""
    /// cols[n, (c·kh + i)·kw + j, oy·ow + ox] = x[n, c, oy·s − ph + i, ox·s − pw + j], 0 (all bits clear: +0 in
    /// float32 and bfloat16) in the padding.
    template <typename E>
    __device__ __forceinline__ void im2col_body(const E* x, E* cols, i64 batch, i64 channels, i64 h, i64 w, i64 kh, i64 kw,
                                                i64 s, i64 ph, i64 pw, i64 oh, i64 ow) {
        i64 l = oh * ow, total = batch * channels * kh * kw * l;
        HASTE_GRID_STRIDE_LOOP(e, total) {
            i64 pix = e % l, row = e / l;              // row = (n·C + c)·kh·kw + i·kw + j
            i64 j = row % kw, i = (row / kw) % kh, plane = row / (kw * kh);
            i64 oy = pix / ow, ox = pix % ow;
            i64 iy = oy * s - ph + i, ix = ox * s - pw + j;
            cols[e] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(plane * h + iy) * w + ix] : (E)0;
        }
    }
    /// The same where the column matrix and x have fewer than 2³¹ elements (every call of SiT, the SD-VAE and
    /// Inception at their batch chunks): 32-bit indices, each division by an extent a multiply-high and a shift
    /// (`haste_fdiv`, the divisors' magics from the host) instead of six 64-bit divisions per element.
    template <typename E>
    __device__ __forceinline__ void im2col32_body(const E* x, E* cols, int total, int h, int w, int s, int ph, int pw,
                                                  int l, u64 fl, int ow, u64 fow, int kw, u64 fkw, int kh, u64 fkh) {
        for (u32 e = blockIdx.x * blockDim.x + threadIdx.x; e < (u32)total; e += blockDim.x * gridDim.x) {
            const u32 row = haste_fdiv(e, fl), pix = e - row * (u32)l;     // row = (n·C + c)·kh·kw + i·kw + j
            const u32 r1 = haste_fdiv(row, fkw), j = row - r1 * (u32)kw;
            const u32 plane = haste_fdiv(r1, fkh), i = r1 - plane * (u32)kh;
            const u32 oy = haste_fdiv(pix, fow), ox = pix - oy * (u32)ow;
            const int iy = (int)(oy * (u32)s) - ph + (int)i, ix = (int)(ox * (u32)s) - pw + (int)j;
            cols[e] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(plane * (u32)h + (u32)iy) * (u32)w + (u32)ix] : (E)0;
        }
    }
    extern "C" __global__ void im2col32_f32(const float* x, float* cols, int total, int h, int w, int s, int ph, int pw, int l, u64 fl, int ow, u64 fow, int kw, u64 fkw, int kh, u64 fkh) { im2col32_body(x, cols, total, h, w, s, ph, pw, l, fl, ow, fow, kw, fkw, kh, fkh); }
    extern "C" __global__ void im2col32_u16(const u16* x, u16* cols, int total, int h, int w, int s, int ph, int pw, int l, u64 fl, int ow, u64 fow, int kw, u64 fkw, int kh, u64 fkh) { im2col32_body(x, cols, total, h, w, s, ph, pw, l, fl, ow, fow, kw, fkw, kh, fkh); }
    extern "C" __global__ void im2col_f32(const float* x, float* cols, i64 batch, i64 channels, i64 h, i64 w, i64 kh, i64 kw, i64 s, i64 ph, i64 pw, i64 oh, i64 ow) { im2col_body(x, cols, batch, channels, h, w, kh, kw, s, ph, pw, oh, ow); }
    extern "C" __global__ void im2col_u16(const u16* x, u16* cols, i64 batch, i64 channels, i64 h, i64 w, i64 kh, i64 kw, i64 s, i64 ph, i64 pw, i64 oh, i64 ow) { im2col_body(x, cols, batch, channels, h, w, kh, kw, s, ph, pw, oh, ow); }

    /// dx[n, c, y, x] = Σ over (i, j) in order of the cols entry that im2col filled from (y, x), if any.
    extern "C" __global__ void col2im_f32(const float* cols, float* dx, i64 batch, i64 channels, i64 h, i64 w, i64 kh, i64 kw, i64 s, i64 ph, i64 pw, i64 oh, i64 ow) {
        i64 l = oh * ow, total = batch * channels * h * w;
        HASTE_GRID_STRIDE_LOOP(e, total) {
            i64 px = e % w, py = (e / w) % h, plane = e / (w * h);
            const float* src = cols + plane * kh * kw * l;
            float acc = 0.0f;
            for (i64 i = 0; i < kh; i++) {
                i64 ty = py + ph - i;
                if (ty < 0 || ty % s != 0 || ty / s >= oh) continue;
                i64 oy = ty / s;
                for (i64 j = 0; j < kw; j++) {
                    i64 tx = px + pw - j;
                    if (tx < 0 || tx % s != 0 || tx / s >= ow) continue;
                    acc += src[(i * kw + j) * l + oy * ow + tx / s];
                }
            }
            dx[e] = acc;
        }
    }
    """#)

    private func convArguments(_ a: DevicePointer, _ b: DevicePointer, _ batch: Int, _ g: ConvGeometry) -> [KernelArgument] {
        [.pointer(a), .pointer(b)] + [batch, g.channels, g.height, g.width, g.kernelHeight, g.kernelWidth, g.stride,
                                      g.paddingHeight, g.paddingWidth, g.outHeight, g.outWidth].map { .int64(Int64($0)) }
    }

    public func im2col(x: Buffer, cols: Buffer, batch: Int, geometry g: ConvGeometry) {
        if x.dtype != cols.dtype || (x.dtype != .float32 && x.dtype != .bfloat16) {
            CUDABackend.fail("im2col on \(device): \(x.dtype) → \(cols.dtype) (needs float32 or bfloat16, the same for x and cols)")
        }
        let total = batch * g.patchSize * g.outPixels
        if total <= 0 { return }
        let suffix = x.dtype == .float32 ? "f32" : "u16"
        if total < 1 << 31 && batch * g.channels * g.height * g.width < 1 << 31 && CUDABackend.index32Allowed {
            let (l, ow, kw, kh) = (g.outPixels, g.outWidth, g.kernelWidth, g.kernelHeight)
            launch(CUDABackend.convSource, "im2col32_\(suffix)", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256),
                   [.pointer(address(x)), .pointer(address(cols)), .int32(Int32(total)), .int32(Int32(g.height)),
                    .int32(Int32(g.width)), .int32(Int32(g.stride)), .int32(Int32(g.paddingHeight)), .int32(Int32(g.paddingWidth))]
                   + [l, ow, kw, kh].flatMap { [KernelArgument.int32(Int32($0)), .uint64(CUDABackend.fastDivisor($0))] })
            return
        }
        launch(CUDABackend.convSource, "im2col_\(suffix)", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256),
               convArguments(address(x), address(cols), batch, g))
    }

    /// `HASTE_INDEX32=0`: the 64-bit im2col and nearest upsampling everywhere, for comparisons (the same bits; a
    /// test switches it: `$index32Allowed.withValue`).
    @TaskLocal static var index32Allowed = ProcessInfo.processInfo.environment["HASTE_INDEX32"] != "0"

    public func col2im(cols: Buffer, dx: Buffer, batch: Int, geometry g: ConvGeometry) {
        requireFloat32(dx, "col2im")
        let total = batch * g.channels * g.height * g.width
        if total <= 0 { return }
        launch(CUDABackend.convSource, "col2im_f32", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256),
               convArguments(address(cols), address(dx), batch, g))
    }
}
