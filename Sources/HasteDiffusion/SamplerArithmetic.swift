import HasteTensor

/// The samplers' float64 state arithmetic on the host, one pass a step. The state lives on the CPU (float64 is a
/// CPU dtype) while the model runs on its device, so everything here sits between two model calls with the GPU
/// idle: as composed tensor ops (cat, cast, the score's five ops, CFG's three, the update's four, the noise drawn
/// one sample after another) 7.2 ms a CFG step at batch 64 on a 2-core EPYC (`haste bench ops --only 'sde sampler
/// host'`: 71.6 ms per 10 steps), beside 139 ms for a guided SiT-XL/2 bs64 bf16 step on the H200 (2026-12-05). Each
/// pass below computes every element with the composed ops' own roundings, in their
/// order: a scalar op is `Tensor`'s affine, x·s + 0 (x / s is x·(1/s) + 0), so the samples are the same bits
/// (SamplerArithmeticTests compare the passes with the composed ops). Rows are independent: chunks in parallel.
extension Samplers {
    /// [x] or, guided, [x, x] as float32 (the model's input: `cat` then `to(.float32)`), x float64 on the CPU.
    static func modelInput32(_ x: Tensor, guided: Bool) -> Tensor {
        require(x.dtype == .float64 && x.device == .cpu && x.isContiguous, "sampler state: \(x.dtype) on \(x.device), expected contiguous float64 on the CPU")
        let n = x.count
        let out = Tensor.empty([guided ? 2 * x.shape[0] : x.shape[0]] + Array(x.shape.dropFirst()), dtype: .float32)
        let xp = SendablePointer(x.buffer.pointer(Double.self)), op = SendablePointer(out.buffer.pointer(Float.self))
        Parallel.chunks(n) { r in
            for i in r {
                let f = Float(xp.base[i])
                op.base[i] = f
                if guided { op.base[n + i] = f }
            }
        }
        return out
    }

    /// The model's output as float64 values on the CPU, contiguous (float32 or float64 as it came).
    private static func hostVelocity(_ v: Tensor, rows: Int, like x: Tensor) -> Tensor {
        let v = v.to(.cpu).contiguous()
        require(v.shape == [rows] + Array(x.shape.dropFirst()), "sampler: the model returned \(v.shape) for input \([rows] + Array(x.shape.dropFirst()))")
        require(v.dtype == .float32 || v.dtype == .float64, "sampler: the model returned \(v.dtype), expected float32")
        return v
    }

    /// Reads element i of a float32 or float64 buffer as Double (the composed ops' `to(.float64)`).
    @inline(__always) private static func read(_ p: UnsafeMutablePointer<UInt8>, _ single: Bool, _ i: Int) -> Double {
        let raw = UnsafeRawPointer(p)
        return single ? Double(raw.assumingMemoryBound(to: Float.self)[i]) : raw.assumingMemoryBound(to: Double.self)[i]
    }

    /// Euler–Maruyama's step from x (float64 [N, …]) with the model's velocity v at t ([N, …], or guided [2N, …]:
    /// conditional rows, then unconditional): per half d = v − (score·t), score = (v·α/α' − x)/(σ² − α/α'·σ'·σ)
    /// (½·w(t) = t), CFG d = d_u + (d_c − d_u)·scale, then x + d·dt, then + n·noiseScale where n is given.
    /// `drift` and the update of eulerMaruyama as composed ops, element for element.
    static func sdeUpdate(_ x: Tensor, velocity v: Tensor, t: Double, dt: Double, path: PathType, scale: Double?,
                          noise: Tensor?, noiseScale: Double) -> Tensor {
        let guided = scale != nil, n = x.count
        let v = hostVelocity(v, rows: guided ? 2 * x.shape[0] : x.shape[0], like: x)
        let c = path.coefficients(t)
        let ratio = c.alpha / c.dAlpha
        let variance = c.sigma * c.sigma - ratio * c.dSigma * c.sigma
        let inverse = 1 / variance, cfg = scale ?? 1
        let noise = noise.map { $0.to(.float64).contiguous() }
        if let noise { require(noise.shape == x.shape, "SDE sampler: step noise \(noise.shape) for state \(x.shape)") }
        let out = Tensor.empty(like: x)
        let xp = SendablePointer(x.buffer.pointer(Double.self)), op = SendablePointer(out.buffer.pointer(Double.self))
        let vp = SendablePointer(v.buffer.rawPointer.assumingMemoryBound(to: UInt8.self)), single = v.dtype == .float32
        let np = noise.map { SendablePointer($0.buffer.pointer(Double.self)) }
        @inline(__always) func half(_ vv: Double, _ xx: Double) -> Double {
            let score = (vv * ratio + 0 - xx) * inverse + 0
            return vv - (score * t + 0)
        }
        Parallel.chunks(n) { r in
            for i in r {
                let xx = xp.base[i]
                var d = half(read(vp.base, single, i), xx)
                if guided {
                    let u = half(read(vp.base, single, n + i), xx)
                    d = u + ((d - u) * cfg + 0)
                }
                var y = xx + (d * dt + 0)
                if let np { y = y + (np.base[i] * noiseScale + 0) }
                op.base[i] = y
            }
        }
        return out
    }

    /// The ODE's velocity from the model's v: v itself (float64), or guided v_u + (v_c − v_u)·scale (`combine`).
    static func combinedVelocity(_ v: Tensor, like x: Tensor, scale: Double?) -> Tensor {
        let guided = scale != nil, n = x.count, cfg = scale ?? 1
        let v = hostVelocity(v, rows: guided ? 2 * x.shape[0] : x.shape[0], like: x)
        let out = Tensor.empty(like: x)
        let op = SendablePointer(out.buffer.pointer(Double.self))
        let vp = SendablePointer(v.buffer.rawPointer.assumingMemoryBound(to: UInt8.self)), single = v.dtype == .float32
        Parallel.chunks(n) { r in
            for i in r {
                let c = read(vp.base, single, i)
                if guided {
                    let u = read(vp.base, single, n + i)
                    op.base[i] = u + ((c - u) * cfg + 0)
                } else {
                    op.base[i] = c
                }
            }
        }
        return out
    }

    /// x + d·s (the composed `x + d * s`), all float64 [N, …] on the CPU.
    static func axpy(_ x: Tensor, _ d: Tensor, _ s: Double) -> Tensor {
        let out = Tensor.empty(like: x), n = x.count
        let xp = SendablePointer(x.buffer.pointer(Double.self)), dp = SendablePointer(d.buffer.pointer(Double.self))
        let op = SendablePointer(out.buffer.pointer(Double.self))
        Parallel.chunks(n) { r in for i in r { op.base[i] = xp.base[i] + (dp.base[i] * s + 0) } }
        return out
    }

    /// Heun's x + (d·½ + d₂·½)·s, float64 [N, …] on the CPU.
    static func heunUpdate(_ x: Tensor, _ d: Tensor, _ d2: Tensor, _ s: Double) -> Tensor {
        let out = Tensor.empty(like: x), n = x.count
        let xp = SendablePointer(x.buffer.pointer(Double.self)), dp = SendablePointer(d.buffer.pointer(Double.self))
        let ep = SendablePointer(d2.buffer.pointer(Double.self)), op = SendablePointer(out.buffer.pointer(Double.self))
        Parallel.chunks(n) { r in
            for i in r { op.base[i] = xp.base[i] + (((dp.base[i] * 0.5 + 0) + (ep.base[i] * 0.5 + 0)) * s + 0) }
        }
        return out
    }
}
