/// Resize kernels (Ops/Resize.swift). Bicubic resampling runs one axis at a time from a per-axis table of
/// taps and weights built like torch's `UpSampleKernel.cpp` (`compute_indices_weights_cubic` for the plain
/// filter, `_compute_indices_min_size_weights_aa` for the antialiased one), in the buffers' dtype and
/// with torch's float/double conversions, so float32 results agree to rounding.
extension CPUBackend {
    public func upsampleNearest2x(x: Buffer, y: Buffer, planes: Int, height: Int, width: Int) {
        switch x.dtype {
        case .float32: nearest2x(x.pointer(Float.self), y.pointer(Float.self), planes * height, width)
        case .float64: nearest2x(x.pointer(Double.self), y.pointer(Double.self), planes * height, width)
        default: fatalError("upsampleNearest2x: unsupported dtype \(x.dtype)")
        }
    }

    public func upsampleNearest2xBackward(dy: Buffer, dx: Buffer, planes: Int, height: Int, width: Int) {
        switch dx.dtype {
        case .float32: nearest2xBackward(dy.pointer(Float.self), dx.pointer(Float.self), planes * height, width)
        case .float64: nearest2xBackward(dy.pointer(Double.self), dx.pointer(Double.self), planes * height, width)
        default: fatalError("upsampleNearest2xBackward: unsupported dtype \(dx.dtype)")
        }
    }

    public func resample(_ filter: ResizeFilter, x: Buffer, y: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int) {
        switch x.dtype {
        case .float32:
            resample(ResampleTable<Float>(filter, inSize: inSize, outSize: outSize), x.pointer(Float.self),
                     y.pointer(Float.self), outer, inSize, outSize, inner)
        case .float64:
            resample(ResampleTable<Double>(filter, inSize: inSize, outSize: outSize), x.pointer(Double.self),
                     y.pointer(Double.self), outer, inSize, outSize, inner)
        default: fatalError("resample: unsupported dtype \(x.dtype)")
        }
    }

    public func resampleBackward(_ filter: ResizeFilter, dy: Buffer, dx: Buffer, outer: Int, inSize: Int, outSize: Int,
                                 inner: Int) {
        switch dx.dtype {
        case .float32:
            resampleBackward(ResampleTable<Float>(filter, inSize: inSize, outSize: outSize), dy.pointer(Float.self),
                             dx.pointer(Float.self), outer, inSize, outSize, inner)
        case .float64:
            resampleBackward(ResampleTable<Double>(filter, inSize: inSize, outSize: outSize), dy.pointer(Double.self),
                             dx.pointer(Double.self), outer, inSize, outSize, inner)
        default: fatalError("resampleBackward: unsupported dtype \(dx.dtype)")
        }
    }

    /// rows = planes·height input rows; each makes two identical output rows.
    private func nearest2x<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ rows: Int, _ w: Int) {
        let px = SendablePointer(x), py = SendablePointer(y)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / max(4 * w, 1))) { range in
            for r in range {
                let src = px.base + r * w, top = py.base + r * 4 * w
                for j in 0..<w { top[2 * j] = src[j]; top[2 * j + 1] = src[j] }
                (top + 2 * w).update(from: top, count: 2 * w)
            }
        }
    }

    private func nearest2xBackward<T: KernelFloat>(_ dy: UnsafeMutablePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                                   _ rows: Int, _ w: Int) {
        let pg = SendablePointer(dy), pd = SendablePointer(dx)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / max(4 * w, 1))) { range in
            for r in range {
                let top = pg.base + r * 4 * w, bottom = top + 2 * w, out = pd.base + r * w
                for j in 0..<w { out[j] = top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1] }
            }
        }
    }

    /// y[o, i, :] = Σ_t w_t·x[o, index_t, :], the first tap assigned and the rest added in order (torch's order).
    private func resample<T: KernelFloat>(_ table: ResampleTable<T>, _ x: UnsafeMutablePointer<T>,
                                          _ y: UnsafeMutablePointer<T>, _ outer: Int, _ inSize: Int, _ outSize: Int,
                                          _ inner: Int) {
        let taps = table.taps, cnt = table.count.baseAddress!, idx = table.index.baseAddress!, wt = table.weight.baseAddress!
        let px = SendablePointer(x), py = SendablePointer(y)
        defer { withExtendedLifetime(table) {} }   // the table owns cnt/idx/wt: keep it alive through the loops
        Parallel.chunks(outer, chunk: max(1, Parallel.defaultChunk / max(outSize * inner, 1))) { range in
            for o in range {
                let src = px.base + o * inSize * inner, dst = py.base + o * outSize * inner
                for i in 0..<outSize {
                    let d = dst + i * inner, n = cnt[i], base = i * taps
                    if n == 0 { d.update(repeating: 0, count: inner); continue }
                    if inner == 1 {
                        var acc = src[idx[base]] * wt[base]
                        for t in 1..<n { acc += src[idx[base + t]] * wt[base + t] }
                        d[0] = acc
                        continue
                    }
                    let w0 = wt[base], s0 = src + idx[base] * inner
                    for k in 0..<inner { d[k] = s0[k] * w0 }
                    for t in 1..<n {
                        let wk = wt[base + t], s = src + idx[base + t] * inner
                        for k in 0..<inner { d[k] += s[k] * wk }
                    }
                }
            }
        }
    }

    /// dx[o, index_t, :] += w_t·dy[o, i, :] over outputs i and taps t in order; one slab of dx per o.
    private func resampleBackward<T: KernelFloat>(_ table: ResampleTable<T>, _ dy: UnsafeMutablePointer<T>,
                                                  _ dx: UnsafeMutablePointer<T>, _ outer: Int, _ inSize: Int,
                                                  _ outSize: Int, _ inner: Int) {
        let taps = table.taps, cnt = table.count.baseAddress!, idx = table.index.baseAddress!, wt = table.weight.baseAddress!
        let pg = SendablePointer(dy), pd = SendablePointer(dx)
        defer { withExtendedLifetime(table) {} }   // the table owns cnt/idx/wt: keep it alive through the loops
        Parallel.chunks(outer, chunk: max(1, Parallel.defaultChunk / max(outSize * inner, 1))) { range in
            for o in range {
                let src = pg.base + o * outSize * inner, dst = pd.base + o * inSize * inner
                dst.update(repeating: 0, count: inSize * inner)
                for i in 0..<outSize {
                    let g = src + i * inner
                    for t in 0..<cnt[i] {
                        let wk = wt[i * taps + t], d = dst + idx[i * taps + t] * inner
                        for k in 0..<inner { d[k] += wk * g[k] }
                    }
                }
            }
        }
    }
}

/// Taps of one axis: output i reads index[i·taps + t] with weight[i·taps + t] for t < count[i].
/// A class so its buffers are freed once; kernels copy the base pointers out before looping.
final class ResampleTable<T: KernelFloat> {
    let taps: Int
    let count: UnsafeMutableBufferPointer<Int>
    let index: UnsafeMutableBufferPointer<Int>
    let weight: UnsafeMutableBufferPointer<T>

    init(_ filter: ResizeFilter, inSize: Int, outSize: Int) {
        // torch's area_pixel_compute_scale (align_corners=False, no explicit scale): in/out in the compute dtype.
        let scale = T(inSize) / T(outSize)
        let support: T = filter == .bicubic || scale < 1 ? 2 : 2 * scale
        let taps = filter == .bicubic ? 4 : Int(Double(support).rounded(.up)) * 2 + 1   // torch's max_interp_size
        self.taps = taps
        count = .allocate(capacity: max(outSize, 1))
        index = .allocate(capacity: max(outSize * taps, 1))
        weight = .allocate(capacity: max(outSize * taps, 1))
        for i in 0..<outSize {
            if filter == .bicubic {
                cubicTaps(i, inSize: inSize, scale: scale)
            } else {
                antialiasTaps(i, inSize: inSize, scale: scale, support: support)
            }
        }
    }

    deinit {
        count.deallocate(); index.deallocate(); weight.deallocate()
    }

    /// compute_indices_weights_cubic + guard_index_and_lambda: source (i + 0.5)·scale − 0.5, taps at
    /// floor − 1 … floor + 2 clamped into the input, A = −0.75.
    private func cubicTaps(_ i: Int, inSize: Int, scale: T) {
        let real = T(-0.5).addingProduct(scale, T(i) + 0.5)   // scale·(i + 0.5) − 0.5, fused like torch's
        let first = Swift.min(Int(real.rounded(.down)), inSize - 1)
        let t = Swift.min(Swift.max(real - T(first), 0), 1)
        let a: T = -0.75
        let x2 = 1 - t
        weight[i * 4] = cubic2(t + 1, a)
        weight[i * 4 + 1] = cubic1(t, a)
        weight[i * 4 + 2] = cubic1(x2, a)
        weight[i * 4 + 3] = cubic2(x2 + 1, a)
        for j in 0..<4 { index[i * 4 + j] = Swift.max(Swift.min(first - 1 + j, inSize - 1), 0) }
        count[i] = 4
    }

    /// _compute_indices_min_size_weights_aa with the bicubic aa_filter (A = −0.5). The intermediate
    /// double roundings are torch's C++ promotions (int64/float with a double literal).
    private func antialiasTaps(_ i: Int, inSize: Int, scale: T, support: T) {
        let center = T(Double(scale) * (Double(i) + 0.5))
        let invscale: T = scale >= 1 ? T(1.0 / Double(scale)) : 1
        let first = Swift.max(Int(Double(center - support) + 0.5), 0)
        let size = Swift.min(Swift.max(Swift.min(Int(Double(center + support) + 0.5), inSize) - first, 0), taps)
        let base = i * taps
        var total: T = 0
        for j in 0..<size {
            let u = T((Double(T(j + first) - center) + 0.5) * Double(invscale)).magnitude
            let w: T = u < 1 ? cubic1(u, -0.5) : (u < 2 ? cubic2(u, -0.5) : 0)
            index[base + j] = j + first
            weight[base + j] = w
            total += w
        }
        if total != 0 {
            for j in 0..<size { weight[base + j] /= total }
        }
        count[i] = size
    }
}

// torch's compiled kernels contract these polynomials and the source coordinate into fused multiply-adds
// (GCC/Clang/nvcc default fp-contract); writing the FMAs out brings float32 results from ~2e-6 to ~4e-7 of
// torch's. They run once per table entry, never per pixel (a software fmaf there would be slow).

/// Keys' cubic convolution kernel for |x| ≤ 1 (torch's cubic_convolution1): ((a + 2)·x − (a + 3))·x·x + 1.
@inline(__always) private func cubic1<T: KernelFloat>(_ x: T, _ a: T) -> T {
    let inner = (-(a + 3)).addingProduct(a + 2, x)
    return T(1).addingProduct(inner * x, x)
}

/// … and for 1 ≤ |x| < 2 (cubic_convolution2): ((a·x − 5a)·x + 8a)·x − 4a.
@inline(__always) private func cubic2<T: KernelFloat>(_ x: T, _ a: T) -> T {
    let inner = (8 * a).addingProduct((-5 * a).addingProduct(a, x), x)
    return (-4 * a).addingProduct(inner, x)
}
