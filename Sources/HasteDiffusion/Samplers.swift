import HasteTensor

/// Classifier-free guidance with a guidance interval (spec/sampling.md §1).
public struct Guidance: Sendable {
    public var scale: Double = 1
    public var low: Double = 0
    public var high: Double = 1
    public var nullClass: Int
    public init(scale: Double = 1, low: Double = 0, high: Double = 1, nullClass: Int) {
        (self.scale, self.low, self.high, self.nullClass) = (scale, low, high, nullClass)
    }
    /// Active at t iff scale > 1 and low ≤ t ≤ high.
    public func isActive(at t: Double) -> Bool { scale > 1 && low <= t && t <= high }
}

/// The model as a sampler sees it: velocity for float32 x (N, …), times t (N) and labels y (N).
public typealias VelocityModel = (_ x: Tensor, _ t: Tensor, _ y: Tensor) -> Tensor

/// ODE/SDE samplers integrating from t = 1 (noise) to t = 0 (data); state kept in float64 between steps.
public enum Samplers {
    /// Guided velocity at (x, t) as float64; one doubled batch when guidance is active, else a single pass.
    static func velocity(_ model: VelocityModel, _ x: Tensor, t: Double, y: Tensor, guidance: Guidance, active: Bool) -> Tensor {
        let n = x.shape[0]
        let xf = x.to(.float32)
        if !active {
            return model(xf, Tensor.full([n], t), y).to(.float64)
        }
        let nullY = Tensor.full([n], Double(guidance.nullClass), dtype: y.dtype)
        let out = model(Tensor.cat([xf, xf], axis: 0), Tensor.full([2 * n], t), Tensor.cat([y, nullY], axis: 0)).to(.float64)
        let halves = out.chunk(2, axis: 0)
        return halves[1] + (halves[0] - halves[1]) * guidance.scale
    }

    /// Euler (or Heun) ODE on t_j = linspace(1, 0, steps + 1) (spec/sampling.md §2). x: initial noise.
    public static func euler(_ model: VelocityModel, noise: Tensor, labels: Tensor, steps: Int, guidance: Guidance,
                             heun: Bool = false) -> Tensor {
        require(steps >= 1, "euler sampler: steps \(steps) < 1")
        var x = noise.to(.float64)
        noGrad {
            for j in 0..<steps {
                let tCur = 1 - Double(j) / Double(steps), tNext = 1 - Double(j + 1) / Double(steps)
                let active = guidance.isActive(at: tCur)
                let d = velocity(model, x, t: tCur, y: labels, guidance: guidance, active: active)
                let xEuler = x + d * (tNext - tCur)
                if heun && j < steps - 1 {
                    let d2 = velocity(model, xEuler, t: tNext, y: labels, guidance: guidance, active: active)
                    x = x + (d + d2) * ((tNext - tCur) / 2)
                } else {
                    x = xEuler
                }
            }
        }
        return x.to(.float32)
    }

    /// Euler–Maruyama SDE on linspace(1, 0.04, steps) then 0 (spec/sampling.md §3); w(t) = 2t,
    /// drift = v − ½·w·score, score from the velocity through the path coefficients.
    public static func eulerMaruyama(_ model: VelocityModel, noise: Tensor, labels: Tensor, steps: Int, guidance: Guidance,
                                     path: PathType, generator: RandomGenerator) -> Tensor {
        require(steps >= 2, "SDE sampler: steps \(steps) < 2")
        var grid = (0..<steps).map { 1.0 + (0.04 - 1.0) * Double($0) / Double(steps - 1) }
        grid.append(0)
        var x = noise.to(.float64)
        noGrad {
            for j in 0..<steps {
                let tCur = grid[j], tNext = grid[j + 1], dt = tNext - tCur
                let last = j == steps - 1
                let eps = last ? nil : generator.normal(x.shape, dtype: .float64)       // drawn before the model call
                let active = guidance.isActive(at: tCur)
                let d = drift(model, x, t: tCur, y: labels, guidance: guidance, active: active, path: path)
                x = x + d * dt
                if let eps { x = x + eps * ((2 * tCur).squareRoot() * Swift.abs(dt).squareRoot()) }
            }
        }
        return x.to(.float32)
    }

    /// v − ½·w(t)·score per half, then CFG-combined (spec/sampling.md §3).
    static func drift(_ model: VelocityModel, _ x: Tensor, t: Double, y: Tensor, guidance: Guidance, active: Bool,
                      path: PathType) -> Tensor {
        let n = x.shape[0]
        let xx = active ? Tensor.cat([x, x], axis: 0) : x
        let yy = active ? Tensor.cat([y, Tensor.full([n], Double(guidance.nullClass), dtype: y.dtype)], axis: 0) : y
        let v = model(xx.to(.float32), Tensor.full([xx.shape[0]], t), yy).to(.float64)
        let c = path.coefficients(t)
        let ratio = c.alpha / c.dAlpha
        let variance = c.sigma * c.sigma - ratio * c.dSigma * c.sigma
        let score = (v * ratio - xx) / variance
        let d = v - score * t                                                             // ½·w(t) = t
        if !active { return d }
        let h = d.chunk(2, axis: 0)
        return h[1] + (h[0] - h[1]) * guidance.scale
    }
}
