import CKernels
/// Optimizer kernels on the host: one pass over a flat arena region each (STYLE §2.6, R13).
extension CPUBackend {
    public func adamw(param: Buffer, grad: Buffer, m: Buffer, v: Buffer, count: Int, lr: Double, beta1: Double,
                      beta2: Double, eps: Double, weightDecay: Double, step: Int) {
        let c = AdamWCoefficients(lr: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay, step: step)
        switch param.dtype {
        case .float32 where CPUKernels.level > 0:
            adamwVector(param.pointer(Float.self), grad.pointer(Float.self), m.pointer(Float.self), v.pointer(Float.self), count, c, level: CPUKernels.level)
        case .float32:
            adamw(param.pointer(Float.self), grad.pointer(Float.self), m.pointer(Float.self), v.pointer(Float.self), count, c)
        case .float64:
            adamw(param.pointer(Double.self), grad.pointer(Double.self), m.pointer(Double.self), v.pointer(Double.self), count, c)
        default: fatalError("adamw: unsupported dtype \(param.dtype)")
        }
    }

    /// Mirrors torch's float32 CPU kernels operation by operation (verified bitwise against torch 2.13,
    /// except torch's MKL `sqrt`, which may differ from the correctly rounded one by 1 ulp):
    ///   `param.mul_(1 - lr*wd)`                     p·d
    ///   `exp_avg.lerp_(grad, w)`                    fma(w, g − m, m) for w < 0.5, else fma(w − 1, g − m, g)
    ///   `exp_avg_sq.mul_(b2).addcmul_(g, g, c)`     fma(c·g, g, v·b2)   (torch's build contracts this)
    ///   `denom = (exp_avg_sq.sqrt() / bc2s).add_(eps)`
    ///   `param.addcdiv_(exp_avg, denom, value=-s)`  p + (−s·m) / denom
    func adamw<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ g: UnsafeMutablePointer<T>,
                               _ m: UnsafeMutablePointer<T>, _ v: UnsafeMutablePointer<T>,
                               _ count: Int, _ c: AdamWCoefficients) {
        let pp = SendablePointer(p), pg = SendablePointer(g), pm = SendablePointer(m), pv = SendablePointer(v)
        let decay = T(c.decayFactor), applyDecay = c.applyDecay
        let w = T(c.lerpWeight), smallWeight = Swift.abs(c.lerpWeight) < 0.5
        let b2 = T(c.beta2), oneMinusB2 = T(c.oneMinusBeta2)
        let bc2s = T(c.biasCorrection2Sqrt), eps = T(c.eps), negStep = T(c.negStepSize)
        Parallel.chunks(count) { r in
            let p = pp.base, g = pg.base, m = pm.base, v = pv.base
            for i in r {
                let gi = g[i]
                var pi = p[i]
                if applyDecay { pi = pi * decay }
                let diff = gi - m[i]
                let mi = smallWeight ? m[i].addingProduct(w, diff) : gi.addingProduct(w - 1, diff)
                let vi = (v[i] * b2).addingProduct(oneMinusB2 * gi, gi)
                let denom = vi.squareRoot() / bc2s + eps
                m[i] = mi
                v[i] = vi
                p[i] = pi + (negStep * mi) / denom
            }
        }
    }

    /// The loop below in CKernels' AVX-512 / AVX2+FMA variant (the same operations per element, so the same bits;
    /// the portable loop calls libm's fma per element on baseline x86-64: 9% of a SiT-B/2 batch-4 step).
    func adamwVector(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                     _ v: UnsafeMutablePointer<Float>, _ count: Int, _ c: AdamWCoefficients, level: Int) {
        let pp = SendablePointer(p), pg = SendablePointer(g), pm = SendablePointer(m), pv = SendablePointer(v)
        let level = Int32(level)
        Parallel.chunks(count) { r in
            let o = r.lowerBound
            haste_adamw_f32(level, pp.base + o, pg.base + o, pm.base + o, pv.base + o, r.count, Float(c.decayFactor),
                            c.applyDecay ? 1 : 0, Float(c.lerpWeight), Swift.abs(c.lerpWeight) < 0.5 ? 1 : 0, Float(c.beta2),
                            Float(c.oneMinusBeta2), Float(c.biasCorrection2Sqrt), Float(c.eps), Float(c.negStepSize))
        }
    }

    public func emaUpdate(ema: Buffer, param: Buffer, count: Int, decay: Double) {
        switch ema.dtype {
        case .float32: emaUpdate(ema.pointer(Float.self), param.pointer(Float.self), count, decay)
        case .float64: emaUpdate(ema.pointer(Double.self), param.pointer(Double.self), count, decay)
        default: fatalError("emaUpdate: unsupported dtype \(ema.dtype)")
        }
    }

    /// torch `ema.mul_(d).add_(p, alpha=1-d)`: the add kernel is `fmadd(p, alpha, a)`, so fused.
    private func emaUpdate<T: KernelFloat>(_ e: UnsafeMutablePointer<T>, _ p: UnsafeMutablePointer<T>,
                                           _ count: Int, _ decay: Double) {
        let pe = SendablePointer(e), pp = SendablePointer(p)
        let d = T(decay), alpha = T(1 - decay)
        Parallel.chunks(count) { r in
            let e = pe.base, p = pp.base
            for i in r { e[i] = (e[i] * d).addingProduct(p[i], alpha) }
        }
    }

    public func sumOfSquares(_ x: Buffer, count: Int) -> Double {
        switch x.dtype {
        case .float32: return sumOfSquares(x.pointer(Float.self), count)
        case .float64: return sumOfSquares(x.pointer(Double.self), count)
        default: fatalError("sumOfSquares: unsupported dtype \(x.dtype)")
        }
    }

    /// Per fixed chunk: blocks of 1024 elements squared into SIMD16<T> lanes, each block's lane sum added to
    /// a Double (short float runs keep the error of a 100M-element norm near Double's, not Float's).
    /// Chunk sums are then combined in index order, so the result does not depend on the thread count.
    private func sumOfSquares<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ count: Int) -> Double {
        if count == 0 { return 0 }
        let chunk = Parallel.defaultChunk
        let chunks = (count + chunk - 1) / chunk
        let partial = UnsafeMutablePointer<Double>.allocate(capacity: chunks)
        defer { partial.deallocate() }
        let px = SendablePointer(x), pr = SendablePointer(partial)
        let level = Int32(CPUKernels.level), float32 = T.self == Float.self
        Parallel.chunks(count, chunk: chunk) { r in
            pr.base[r.lowerBound / chunk] = float32 && level > 0
                ? UnsafeRawPointer(px.base + r.lowerBound).withMemoryRebound(to: Float.self, capacity: r.count) {
                    haste_sum_squares_f32(level, $0, r.count)                  // the same bits at AVX width
                } : blockedSquares(px.base + r.lowerBound, r.count)
        }
        var total = 0.0
        for i in 0..<chunks { total += partial[i] }
        return total
    }

    public func scale(_ x: Buffer, count: Int, by factor: Double) {
        switch x.dtype {
        case .float32: scale(x.pointer(Float.self), count, Float(factor))
        case .float64: scale(x.pointer(Double.self), count, factor)
        default: fatalError("scale: unsupported dtype \(x.dtype)")
        }
    }

    /// torch `g.mul_(clip_coef_clamped)`.
    private func scale<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ count: Int, _ factor: T) {
        let px = SendablePointer(x)
        Parallel.chunks(count) { r in
            let x = px.base
            for i in r { x[i] *= factor }
        }
    }
}

/// Σ p[i]² over n elements: SIMD16<T> lanes per 1024-element block, block sums accumulated in Double.
@inline(__always)
func blockedSquares<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> Double {
    let block = 1024
    let raw = UnsafeRawPointer(p)
    var total = 0.0
    var start = 0
    while start < n {
        let end = Swift.min(n, start + block)
        var acc = SIMD16<T>(repeating: 0)
        var i = start
        while i + 16 <= end {
            let s = raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.stride, as: SIMD16<T>.self)
            acc += s * s
            i += 16
        }
        var s = acc.sum()
        while i < end { s += p[i] * p[i]; i += 1 }
        total += Double(s)
        start = end
    }
    return total
}
