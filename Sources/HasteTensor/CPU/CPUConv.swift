import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// im2col / col2im for the conv2d GEMMs (Ops/Conv.swift). Padding is handled by computing, per kernel
/// offset, the range of output pixels whose source lies inside the image: no bounds test per element.
/// For the patch-embedding case (kernel = stride, no padding) every range is full and im2col is a pure
/// strided gather. im2col also copies bfloat16 (real bf16 conv2d); col2im sums, in float32 or float64.
extension CPUBackend {
    public func im2col(x: Buffer, cols: Buffer, batch: Int, geometry: ConvGeometry) {
        switch x.dtype {
        case .float32: im2col(x.pointer(Float.self), cols.pointer(Float.self), batch, geometry)
        case .float64: im2col(x.pointer(Double.self), cols.pointer(Double.self), batch, geometry)
        case .bfloat16: im2col(x.pointer(UInt16.self), cols.pointer(UInt16.self), batch, geometry)   // a copy of the bits
        default: fatalError("im2col: unsupported dtype \(x.dtype)")
        }
    }

    public func col2im(cols: Buffer, dx: Buffer, batch: Int, geometry: ConvGeometry) {
        switch dx.dtype {
        case .float32: col2im(cols.pointer(Float.self), dx.pointer(Float.self), batch, geometry)
        case .float64: col2im(cols.pointer(Double.self), dx.pointer(Double.self), batch, geometry)
        default: fatalError("col2im: unsupported dtype \(dx.dtype)")
        }
    }

    /// Implicit GEMM (ConvKernels.implicitConv2d): float32 on AVX-512F (not with HASTE_CPU_KERNELS=portable), each
    /// image's product run by the sgemm with its B panels packed straight from the image (CKernels/convpack.c), so no
    /// column matrix is built. A pointwise conv keeps `gemm` (x already is its column matrix).
    public func implicitConv2d(x: Buffer, weight: Buffer, y: Buffer, batch: Int, outChannels: Int, geometry g: ConvGeometry,
                               beta: Double) -> Bool {
        guard x.dtype == .float32 && weight.dtype == .float32 && y.dtype == .float32 && CPUKernels.level == 2,
              !g.isPointwise, g.patchSize > 0, outChannels > 0, g.outPixels > 0, g.height * g.width < 1 << 30 else { return false }
        let conv = haste_conv_geometry(channels: g.channels, height: g.height, width: g.width, kernel_h: g.kernelHeight,
                                       kernel_w: g.kernelWidth, stride: g.stride, pad_h: g.paddingHeight, pad_w: g.paddingWidth,
                                       out_h: g.outHeight, out_w: g.outWidth)
        let k = g.patchSize, l = g.outPixels, image = g.channels * g.height * g.width
        let xp = x.pointer(Float.self), wp = weight.pointer(Float.self), yp = y.pointer(Float.self)
        pthread_mutex_lock(CPUBackend.gemmMutex); defer { pthread_mutex_unlock(CPUBackend.gemmMutex) }
        AVX512Sgemm.runBatch(batch, macs: outChannels * l * k) { i in
            AVX512Sgemm(transA: false, transB: false, m: outChannels, n: l, k: k, alpha: 1, a: wp, lda: k, b: xp + i * image,
                        ldb: l, beta: Float(beta), c: yp + i * outChannels * l, ldc: l, conv: conv)
        }
        return true
    }

    /// One cols row per (image, c, i, j); rows are independent, so chunks of rows run in parallel. A pure copy:
    /// T is any element whose literal 0 is the padding's zero (float32, float64, bfloat16 bits).
    private func im2col<T: ExpressibleByIntegerLiteral>(_ x: UnsafeMutablePointer<T>, _ cols: UnsafeMutablePointer<T>, _ batch: Int,
                                        _ g: ConvGeometry) {
        let kh = g.kernelHeight, kw = g.kernelWidth, s = g.stride, padH = g.paddingHeight, padW = g.paddingWidth
        let h = g.height, w = g.width, oh = g.outHeight, ow = g.outWidth, l = g.outPixels
        let rowsPerImage = g.patchSize, plane = h * w
        let px = SendablePointer(x), pc = SendablePointer(cols)
        Parallel.chunks(batch * rowsPerImage, chunk: max(1, Parallel.defaultChunk / max(l, 1))) { rows in
            for row in rows {
                let n = row / rowsPerImage, r = row % rowsPerImage
                let c = r / (kh * kw), i = (r / kw) % kh, j = r % kw
                let image = px.base + (n * g.channels + c) * plane
                let dst = pc.base + row * l
                let ys = validOutputs(count: oh, size: h, offset: i - padH, stride: s)
                let xs = validOutputs(count: ow, size: w, offset: j - padW, stride: s)
                for oy in 0..<oh {
                    let out = dst + oy * ow
                    guard ys.contains(oy) else {
                        out.update(repeating: 0, count: ow)
                        continue
                    }
                    let src = image + (oy * s + i - padH) * w + (j - padW)
                    for ox in 0..<xs.lowerBound { out[ox] = 0 }
                    if s == 1 {
                        (out + xs.lowerBound).update(from: src + xs.lowerBound, count: xs.count)
                    } else {
                        for ox in xs { out[ox] = src[ox * s] }
                    }
                    for ox in xs.upperBound..<ow { out[ox] = 0 }
                }
            }
        }
    }

    /// One dx plane per (image, c): it gathers from its kh·kw cols rows in a fixed order (kernel offset,
    /// then pixel), so results do not depend on the thread count.
    private func col2im<T: KernelFloat>(_ cols: UnsafeMutablePointer<T>, _ dx: UnsafeMutablePointer<T>, _ batch: Int,
                                        _ g: ConvGeometry) {
        let kh = g.kernelHeight, kw = g.kernelWidth, s = g.stride, padH = g.paddingHeight, padW = g.paddingWidth
        let h = g.height, w = g.width, oh = g.outHeight, ow = g.outWidth, l = g.outPixels
        let plane = h * w
        let pc = SendablePointer(cols), pd = SendablePointer(dx)
        Parallel.chunks(batch * g.channels, chunk: max(1, Parallel.defaultChunk / max(kh * kw * l, 1))) { planes in
            for p in planes {   // p = n·C + c, and cols rows of image n for channel c follow each other
                let out = pd.base + p * plane
                out.update(repeating: 0, count: plane)
                for i in 0..<kh {
                    let ys = validOutputs(count: oh, size: h, offset: i - padH, stride: s)
                    for j in 0..<kw {
                        let xs = validOutputs(count: ow, size: w, offset: j - padW, stride: s)
                        let src = pc.base + (p * kh * kw + i * kw + j) * l
                        for oy in ys {
                            let dst = out + (oy * s + i - padH) * w + (j - padW), row = src + oy * ow
                            for ox in xs { dst[ox * s] += row[ox] }
                        }
                    }
                }
            }
        }
    }
}

/// Output positions o in 0..<count whose source o·stride + offset lies in 0..<size.
@inline(__always)
private func validOutputs(count: Int, size: Int, offset: Int, stride: Int) -> Range<Int> {
    let lo = offset >= 0 ? 0 : min(count, (-offset + stride - 1) / stride)
    let hi = size - offset <= 0 ? 0 : min(count, (size - 1 - offset) / stride + 1)
    return lo..<max(lo, hi)
}
