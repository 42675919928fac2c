/// Max and average pooling (Ops/Pool.swift): x [planes, H, W] → y [planes, Ho, Wo]. Planes are independent,
/// so fixed chunks of planes run in parallel; each output is computed by one thread in window order.
extension CPUBackend {
    public func maxPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry) {
        switch x.dtype {
        case .float32: pool(x.pointer(Float.self), y.pointer(Float.self), planes, geometry, max: true, countIncludePad: false)
        case .float64: pool(x.pointer(Double.self), y.pointer(Double.self), planes, geometry, max: true, countIncludePad: false)
        default: fatalError("maxPool2d: unsupported dtype \(x.dtype)")
        }
    }

    public func avgPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry, countIncludePad: Bool) {
        switch x.dtype {
        case .float32: pool(x.pointer(Float.self), y.pointer(Float.self), planes, geometry, max: false, countIncludePad: countIncludePad)
        case .float64: pool(x.pointer(Double.self), y.pointer(Double.self), planes, geometry, max: false, countIncludePad: countIncludePad)
        default: fatalError("avgPool2d: unsupported dtype \(x.dtype)")
        }
    }

    /// torch's window bounds: start = o·stride − padding, end = min(start + kernel, size + padding); the
    /// include-pad divisor is (end − start) per axis before clamping to the image, the exclude-pad one after.
    /// float32 with stride 1 or 2: windows wholly inside the image go 16 outputs of a row at a time, each lane doing
    /// the scalar loop's arithmetic in the same order, so the results are bit-identical to it.
    private func pool<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ planes: Int,
                                      _ g: PoolGeometry, max: Bool, countIncludePad: Bool) {
        let h = g.height, w = g.width, oh = g.outHeight, ow = g.outWidth
        let k = g.kernel, s = g.stride, p = g.padding
        let px = SendablePointer(x), py = SendablePointer(y)
        let work = Swift.max(1, oh * ow * k * k)
        let lanes = T.self == Float.self && (s == 1 || s == 2)
        // Interior columns: ox·s − p ≥ 0 and ox·s − p + k ≤ w; stride 2 loads 32 floats, one past its last lane's window.
        let oxLo = (p + s - 1) / s, last = w - k + p - (s == 2 ? 1 : 0)
        let oxEnd = last < 0 ? 0 : Swift.min(ow, last / s + 1)
        Parallel.chunks(planes, chunk: Swift.max(1, Parallel.defaultChunk / work)) { range in
            for plane in range {
                let src = px.base + plane * h * w, dst = py.base + plane * oh * ow
                for oy in 0..<oh {
                    let y0 = oy * s - p, y1 = Swift.min(y0 + k, h + p)
                    let ya = Swift.max(y0, 0), yb = Swift.min(y1, h)
                    var ox = 0
                    @inline(__always) func one(_ ox: Int) {
                        let x0 = ox * s - p, x1 = Swift.min(x0 + k, w + p)
                        let xa = Swift.max(x0, 0), xb = Swift.min(x1, w)
                        if max {
                            var m = -T.infinity
                            for iy in ya..<yb {
                                let row = src + iy * w
                                for ix in xa..<xb { m = stickyMax(m, row[ix]) }
                            }
                            dst[oy * ow + ox] = m
                        } else {
                            var sum: T = 0
                            for iy in ya..<yb {
                                let row = src + iy * w
                                for ix in xa..<xb { sum += row[ix] }
                            }
                            let count = countIncludePad ? (y1 - y0) * (x1 - x0) : (yb - ya) * (xb - xa)
                            dst[oy * ow + ox] = sum / T(count)
                        }
                    }
                    if lanes && y0 >= 0 && y0 + k <= h {
                        while ox < Swift.min(oxLo, ow) { one(ox); ox += 1 }
                        let row0 = UnsafeRawPointer(src + y0 * w), out = UnsafeMutableRawPointer(dst + oy * ow)
                        while ox + 16 <= oxEnd {
                            let v = windowLanes(row0, rowBytes: w * 4, x0: ox * s - p, k: k, stride2: s == 2, max: max)
                            out.storeBytes(of: v, toByteOffset: ox * 4, as: FVec.self)
                            ox += 16
                        }
                    }
                    while ox < ow { one(ox); ox += 1 }
                }
            }
        }
    }
}

/// 16 adjacent outputs of a float32 pool whose windows (k×k from column x0 + lane·stride) lie inside the image:
/// the same sequence of adds (or sticky maxima) per lane as the scalar loop, then the same division by k².
@inline(__always)
private func windowLanes(_ row0: UnsafeRawPointer, rowBytes: Int, x0: Int, k: Int, stride2: Bool, max: Bool) -> FVec {
    var acc = FVec(repeating: max ? -.infinity : 0)
    for iy in 0..<k {
        let row = row0 + iy * rowBytes
        for kx in 0..<k {
            let offset = (x0 + kx) * 4
            let v = stride2 ? row.loadUnaligned(fromByteOffset: offset, as: SIMD32<Float>.self).evenHalf
                            : row.loadUnaligned(fromByteOffset: offset, as: FVec.self)
            if max { acc.replace(with: v, where: (v .> acc) .| ((v .!= v) .& (acc .== acc))) } else { acc += v }
        }
    }
    return max ? acc : acc / Float(k * k)
}
