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
    private func pool<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ planes: Int,
                                      _ g: PoolGeometry, max: Bool, countIncludePad: Bool) {
        let h = g.height, w = g.width, oh = g.outHeight, ow = g.outWidth
        let k = g.kernel, s = g.stride, p = g.padding
        let px = SendablePointer(x), py = SendablePointer(y)
        let work = Swift.max(1, oh * ow * k * k)
        Parallel.chunks(planes, chunk: Swift.max(1, Parallel.defaultChunk / work)) { range in
            for plane in range {
                let src = px.base + plane * h * w, dst = py.base + plane * oh * ow
                for oy in 0..<oh {
                    let y0 = oy * s - p, y1 = Swift.min(y0 + k, h + p)
                    let ya = Swift.max(y0, 0), yb = Swift.min(y1, h)
                    for ox in 0..<ow {
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
                }
            }
        }
    }
}
