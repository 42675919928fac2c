import Testing
@testable import HasteDiffusion
@testable import HasteTensor

/// The samplers' one-pass state arithmetic (SamplerArithmetic.swift) against the composed tensor ops it replaced,
/// bit for bit: the same samples, only sooner.
private enum Composed {
    static func input(_ x: Tensor, _ y: Tensor, _ g: Guidance, _ active: Bool) -> (Tensor, Tensor) {
        guard active else { return (x, y) }
        return (Tensor.cat([x, x], axis: 0), Tensor.cat([y, g.null(count: y.shape[0], like: y)], axis: 0))
    }
    static func combine(_ out: Tensor, _ g: Guidance, _ active: Bool) -> Tensor {
        guard active else { return out }
        let h = out.chunk(2, axis: 0)
        return h[1] + (h[0] - h[1]) * g.scale
    }
    static func velocity(_ m: VelocityModel, _ x: Tensor, _ t: Double, _ y: Tensor, _ g: Guidance, _ active: Bool) -> Tensor {
        let (xx, yy) = input(x, y, g, active)
        return combine(m(xx.to(.float32), Tensor.full([xx.shape[0]], t), yy).to(.float64), g, active)
    }
    static func drift(_ m: VelocityModel, _ x: Tensor, _ t: Double, _ y: Tensor, _ g: Guidance, _ active: Bool, _ path: PathType) -> Tensor {
        let (xx, yy) = input(x, y, g, active)
        let v = m(xx.to(.float32), Tensor.full([xx.shape[0]], t), yy).to(.float64)
        let c = path.coefficients(t)
        let ratio = c.alpha / c.dAlpha
        let variance = c.sigma * c.sigma - ratio * c.dSigma * c.sigma
        let score = (v * ratio - xx) / variance
        return combine(v - score * t, g, active)
    }
    static func sde(_ m: VelocityModel, _ z: Tensor, _ y: Tensor, _ steps: Int, _ g: Guidance, _ path: PathType,
                    _ noise: (Int) -> Tensor) -> Tensor {
        let grid = Samplers.sdeGrid(steps: steps)
        var x = z.to(.float64)
        for j in 0..<steps {
            let tCur = grid[j], dt = grid[j + 1] - tCur
            let n = j == steps - 1 ? nil : noise(j).to(.float64)
            x = x + drift(m, x, tCur, y, g, g.isActive(at: tCur), path) * dt
            if let n { x = x + n * ((2 * tCur).squareRoot() * Swift.abs(dt).squareRoot()) }
        }
        return x.to(.float32)
    }
    static func ode(_ m: VelocityModel, _ z: Tensor, _ y: Tensor, _ steps: Int, _ g: Guidance, heun: Bool) -> Tensor {
        let grid = Samplers.odeGrid(steps: steps)
        var x = z.to(.float64)
        for j in 0..<steps {
            let tCur = grid[j], tNext = grid[j + 1], active = g.isActive(at: tCur)
            let d = velocity(m, x, tCur, y, g, active)
            let xEuler = x + d * (tNext - tCur)
            if heun && j < steps - 1 {
                let d2 = velocity(m, xEuler, tNext, y, g, active)
                x = x + (d * 0.5 + d2 * 0.5) * (tNext - tCur)
            } else {
                x = xEuler
            }
        }
        return x.to(.float32)
    }
}

/// A row-wise model whose velocity has both signs, zeros (−0 among them) and magnitudes far from 1, so that a
/// changed rounding (x / s for x·(1/s), a dropped + 0, another order) shows in some element.
private func awkwardModel(_ x: Tensor, _ t: Tensor, _ y: Tensor) -> Tensor {
    let n = x.shape[0], tt = t.reshaped([n, 1, 1, 1])
    let w = (y.to(.float32).reshaped([n, 1, 1, 1]) + 1.0) * 0.37
    let v = x * w * (tt * 3.0 + 0.1) - x.sin() * 1e3 + (tt * 7.0).cos() * 1e-3
    return v * ((x.abs() - 0.05) * 1e30).clamp(min: 0, max: 1)      // zeros where |x| ≤ 0.05 (−0 where v < 0)
}

/// Elements whose bits differ (float64 views: float32 widens exactly).
private func differingBits(_ a: Tensor, _ b: Tensor) -> Int {
    precondition(a.shape == b.shape, "shapes \(a.shape) and \(b.shape)")
    let x = a.to(.float64).scalars(as: Double.self), y = b.to(.float64).scalars(as: Double.self)
    return zip(x, y).filter { $0.bitPattern != $1.bitPattern }.count
}

@Test func samplerPassesMatchTheComposedOpsBitForBit() {
    let s = SampleNoise(seed: 11, indices: Array(0..<5))
    let z = s.normal([3, 7, 5]), y = s.labels(numClasses: 6)
    for (g, path) in [(Guidance(scale: 1.65, low: 0, high: 0.72, nullClass: 6), PathType.linear),
                      (Guidance(scale: 3, low: 0, high: 1, nullClass: 6), .cosine),
                      (Guidance(scale: 1, nullClass: 6), .linear)] {
        let noise = (0..<9).map { _ in s.normal([3, 7, 5], dtype: .float64) }
        let fused = Samplers.eulerMaruyama(awkwardModel, noise: z, labels: y, steps: 9, guidance: g, path: path) { noise[$0] }
        let composed = Composed.sde(awkwardModel, z, y, 9, g, path) { noise[$0] }
        #expect(differingBits(fused, composed) == 0, "SDE, cfg \(g.scale), \(path): elements that differ")
        for heun in [false, true] {
            let fusedODE = Samplers.euler(awkwardModel, noise: z, labels: y, steps: 7, guidance: g, heun: heun)
            #expect(differingBits(fusedODE, Composed.ode(awkwardModel, z, y, 7, g, heun: heun)) == 0, "ODE, heun \(heun), cfg \(g.scale)")
        }
    }
}

/// One step's float64 result, where float32 outputs would hide a last-bit difference.
@Test func sdeUpdateIsTheComposedStepInFloat64() {
    let x = Tensor.randn([4, 2, 33], dtype: .float64, seed: 3) * 2.5
    let v = Tensor.randn([8, 2, 33], seed: 4) * 40.0, n = Tensor.randn([4, 2, 33], dtype: .float64, seed: 5)
    let g = Guidance(scale: 1.65, nullClass: 1)
    for path in [PathType.linear, .cosine] {
        let t = 0.6131, dt = -0.0038, c = (2 * t).squareRoot() * dt.magnitude.squareRoot()
        let fused = Samplers.sdeUpdate(x, velocity: v, t: t, dt: dt, path: path, scale: g.scale, noise: n, noiseScale: c)
        let co = path.coefficients(t), ratio = co.alpha / co.dAlpha
        let variance = co.sigma * co.sigma - ratio * co.dSigma * co.sigma
        let vv = v.to(.float64), xx = Tensor.cat([x, x], axis: 0)
        let score = (vv * ratio - xx) / variance
        let composed = x + Composed.combine(vv - score * t, g, true) * dt + n * c
        #expect(differingBits(fused, composed) == 0, "\(path): elements that differ")
    }
}

/// The ODE's passes and the unguided, noiseless SDE step in float64 bits too (the samplers' float32 outputs would
/// hide a last-bit change: a dropped + 0, a fused multiply-add, another order).
@Test func odePassesAndThePlainSDEStepAreTheComposedOpsInFloat64() {
    let x = Tensor.randn([3, 2, 17], dtype: .float64, seed: 6) * 1.7
    let v = Tensor.randn([6, 2, 17], seed: 7) * 25.0, d2 = Tensor.randn([3, 2, 17], dtype: .float64, seed: 8)
    let g = Guidance(scale: 2.5, nullClass: 1), s = -0.0417
    let guided = Samplers.combinedVelocity(v, like: x, scale: g.scale)
    #expect(differingBits(guided, Composed.combine(v.to(.float64), g, true)) == 0, "CFG combine")
    let plain = Samplers.combinedVelocity(v.narrowed(0, start: 0, length: 3), like: x, scale: nil)
    #expect(differingBits(plain, v.narrowed(0, start: 0, length: 3).to(.float64)) == 0, "unguided velocity")
    #expect(differingBits(Samplers.axpy(x, guided, s), x + guided * s) == 0, "Euler update")
    #expect(differingBits(Samplers.heunUpdate(x, guided, d2, s), x + (guided * 0.5 + d2 * 0.5) * s) == 0, "Heun update")
    let t = 0.377, c = PathType.linear.coefficients(t), ratio = c.alpha / c.dAlpha
    let variance = c.sigma * c.sigma - ratio * c.dSigma * c.sigma, vv = plain
    let composed = x + (vv - (vv * ratio - x) / variance * t) * s
    #expect(differingBits(Samplers.sdeUpdate(x, velocity: v.narrowed(0, start: 0, length: 3), t: t, dt: s, path: .linear,
                                             scale: nil, noise: nil, noiseScale: 0), composed) == 0, "unguided SDE step")
}

/// The parallel draw is each stream's own `normal([1] + shape)`, rows in order, and leaves each stream where that
/// would (a second draw matches too); 7·3 = 21 elements a row: not whole Philox blocks.
@Test func sampleNoiseRowsAreEachStreamsDraw() {
    let indices = [0, 5, 9, 2, 31, 7, 8, 100, 3]
    let s = SampleNoise(seed: 42, indices: indices)
    let generators = indices.map { RandomGenerator(seed: SampleNoise.streamSeed(42, index: $0)) }
    for dtype in [DType.float32, .float64] {
        let drawn = s.normal([7, 3], dtype: dtype)
        let oneByOne = Tensor.cat(generators.map { $0.normal([1, 7, 3], dtype: dtype) }, axis: 0)
        #expect(drawn.shape == [9, 7, 3])
        #expect(differingBits(drawn, oneByOne) == 0, "\(dtype): elements that differ")
    }
}
