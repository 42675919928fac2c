import Foundation
import HasteTensor

/// The interpolant x_t = α(t)·x0 + σ(t)·ε with t = 0 data and t = 1 noise (REPA/HASTE `loss.py`
/// convention; spec/method.md §2). Every function here takes t in that convention.
public enum PathType: String, Codable, Sendable, CaseIterable {
    case linear, cosine

    /// (α, σ, α', σ') at t, elementwise on a tensor of times.
    public func coefficients(_ t: Tensor) -> (alpha: Tensor, sigma: Tensor, dAlpha: Tensor, dSigma: Tensor) {
        switch self {
        case .linear:
            return (1.0 - t, t, Tensor.full(t.shape, -1, dtype: t.dtype, device: t.device), Tensor.ones(like: t))
        case .cosine:
            let a = t * (Double.pi / 2)
            return (a.cos(), a.sin(), a.sin() * (-Double.pi / 2), a.cos() * (Double.pi / 2))
        }
    }

    /// Scalar form for samplers.
    public func coefficients(_ t: Double) -> (alpha: Double, sigma: Double, dAlpha: Double, dSigma: Double) {
        switch self {
        case .linear: return (1 - t, t, -1, 1)
        case .cosine:
            let a = t * Double.pi / 2
            return (Foundation.cos(a), Foundation.sin(a), -Double.pi / 2 * Foundation.sin(a), Double.pi / 2 * Foundation.cos(a))
        }
    }
}

/// How training times are drawn (spec/method.md §3).
public enum TimeWeighting: String, Codable, Sendable, CaseIterable {
    case uniform, lognormal

    /// t of shape [B]: uniform U[0,1), or lognormal s = exp(n), t = s/(1+s) (linear) / (2/π)·atan(s) (cosine).
    public func sample(_ batch: Int, path: PathType, generator: RandomGenerator) -> Tensor {
        switch self {
        case .uniform: return generator.uniform([batch])
        case .lognormal:
            let s = generator.normal([batch]).scalars(as: Float.self).map { Foundation.exp($0) }
            let t = s.map { path == .linear ? $0 / (1 + $0) : 2 / Float.pi * Foundation.atan($0) }
            return Tensor(t, shape: [batch])
        }
    }
}
