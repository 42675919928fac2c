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
        return CPUBackend.withGemmMutex {
            AVX512Sgemm.runBatch(batch, macs: outChannels * l * k) { i in
                AVX512Sgemm(transA: false, transB: false, m: outChannels, n: l, k: k, alpha: 1, a: wp, lda: k, b: xp + i * image,
                            ldb: l, beta: Float(beta), c: yp + i * outChannels * l, ldc: l, conv: conv)
            }
            return true
        }
    }

    /// Winograd F(2×2, 3×3) (ConvKernels.winogradConv2d, CKernels/winograd.c): float32 on AVX-512F (not with
    /// HASTE_CPU_KERNELS=portable), stride 1, 3×3, padding ≤ 1, at least 16 channels in and out. Per image, in chunks
    /// of tile rows (`Winograd`): input tiles transformed per channel straight into the sgemm's packed-B layout,
    /// 16 GEMMs M[ξ] = U[ξ]·V[ξ] on the sgemm over them, products transformed back per output channel.
    public func winogradConv2d(x: Buffer, weight: Buffer, bias: Buffer?, y: Buffer, batch: Int, outChannels: Int,
                               geometry g: ConvGeometry) -> Bool {
        winogradConv2d(x: x, weight: weight, bias: bias, y: y, batch: batch, outChannels: outChannels, geometry: g,
                       chunkFloats: Winograd.chunkFloats)
    }

    /// With a cap on the chunks' transformed floats (tests shrink it: chunking never changes a bit).
    func winogradConv2d(x: Buffer, weight: Buffer, bias: Buffer?, y: Buffer, batch: Int, outChannels: Int,
                        geometry g: ConvGeometry, chunkFloats: Int) -> Bool {
        guard x.dtype == .float32 && weight.dtype == .float32 && y.dtype == .float32 && CPUKernels.level == 2,
              bias == nil || bias!.dtype == .float32,
              g.kernelHeight == 3, g.kernelWidth == 3, g.stride == 1, g.paddingHeight <= 1, g.paddingWidth <= 1,
              g.channels >= 16, outChannels >= 16, g.outHeight >= 2, g.outWidth >= 2,
              g.height * g.width < 1 << 30 else { return false }
        let c = g.channels, kOut = outChannels, h = g.height, w = g.width, oh = g.outHeight, ow = g.outWidth
        let th = (oh + 1) / 2, tw = (ow + 1) / 2
        let rows = Swift.max(1, Swift.min(th, (Winograd.tiles + tw - 1) / tw, chunkFloats / (16 * (c + kOut) * tw)))
        let nr = AVX512Sgemm.nr, kcStep = haste_sgemm_kc_step(c)
        let u = UnsafeMutablePointer<Float>.allocate(capacity: 16 * kOut * c)
        let vFloats = 16 * c * ((rows * tw + nr - 1) / nr * nr)   // 64-byte aligned: the kernel loads B̃ panels aligned
        let v = UnsafeMutableRawPointer.allocate(byteCount: vFloats * 4, alignment: 64).bindMemory(to: Float.self, capacity: vFloats)
        let m = UnsafeMutablePointer<Float>.allocate(capacity: 16 * kOut * rows * tw)
        defer { u.deallocate(); UnsafeMutableRawPointer(v).deallocate(); m.deallocate() }
        let up = SendablePointer(u), vp = SendablePointer(v), mp = SendablePointer(m)
        let xp = SendablePointer(x.pointer(Float.self)), wp = SendablePointer(weight.pointer(Float.self))
        let yp = SendablePointer(y.pointer(Float.self)), bp = bias.map { SendablePointer($0.pointer(Float.self)) }
        return CPUBackend.withGemmMutex {
            Parallel.chunks(kOut, chunk: Swift.max(1, (kOut + Parallel.threads - 1) / Parallel.threads)) { ks in
                haste_winograd_weights(wp.base, kOut, c, ks.lowerBound, ks.upperBound, up.base)
            }
            let perChannel = Swift.max(1, (c + Parallel.threads - 1) / Parallel.threads)
            let perFilter = Swift.max(1, (kOut + Parallel.threads - 1) / Parallel.threads)
            let rowFloats = haste_winograd_row_floats(tw)   // each channel chunk's padded rows
            let rowScratch = UnsafeMutablePointer<Float>.allocate(capacity: (c + perChannel - 1) / perChannel * rowFloats)
            defer { rowScratch.deallocate() }
            let rp = SendablePointer(rowScratch)
            for image in 0..<batch {
                for ty0 in stride(from: 0, to: th, by: rows) {
                    let ty1 = Swift.min(th, ty0 + rows), n = (ty1 - ty0) * tw, width = (n + nr - 1) / nr * nr
                    // V[ξ] (c × n) is written as the sgemm's packed B̃ (`runPacked`'s layout: KC block p0 at p0 · width,
                    // its NR-wide panels kc · NR apart), so the 16 GEMMs pack nothing: channel ch is row ch − p0 of
                    // its block.
                    Parallel.chunks(c, chunk: perChannel) { chs in
                        let row = rp.base + chs.lowerBound / perChannel * rowFloats
                        for ch in chs {
                            let p0 = ch / kcStep * kcStep, kc = Swift.min(kcStep, c - p0)
                            haste_winograd_input(xp.base + (image * c + ch) * h * w, h, w, g.paddingHeight, g.paddingWidth,
                                                 ty0, ty1, tw, vp.base + p0 * width + (ch - p0) * nr, c * width, kc * nr, row)
                        }
                    }
                    AVX512Sgemm.runBatchPacked(16, m: kOut, n: n, k: c) { xi in
                        (a: UnsafePointer(up.base + xi * kOut * c), packed: UnsafePointer(vp.base + xi * c * width),
                         c: mp.base + xi * kOut * n)
                    }
                    Parallel.chunks(kOut, chunk: perFilter) { ks in
                        for k in ks {
                            haste_winograd_output(mp.base + k * n, kOut * n, ty0, ty1, tw, oh, ow, bp.map { UnsafePointer($0.base + k) },
                                                  yp.base + (image * kOut + k) * oh * ow)
                        }
                    }
                }
            }
            return true
        }
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

/// Winograd's chunks of tile rows: about `tiles` tiles each (the 16 GEMMs' N; measured on the SD-VAE's layers,
/// `haste bench ops`: 256 tiles beat 1024 by ~25% at 128 channels, 256², the transformed tiles staying in cache),
/// and at most `chunkFloats` floats of transformed input and products (64 MiB).
enum Winograd {
    static let tiles = 256, chunkFloats = 1 << 24
}
