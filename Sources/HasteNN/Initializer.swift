import HasteTensor

/// How a parameter's initial values are made. Random kinds draw from the store's `RandomGenerator` in
/// registration order (deterministic per seed; our streams are not PyTorch's, so checkpoints, not seeds,
/// carry PyTorch values).
public enum Initializer: Sendable {
    case zeros
    case ones
    case constant(Double)
    /// torch `nn.init.normal_(w, mean=0, std=std)`.
    case normal(std: Double)
    /// torch `nn.init.xavier_uniform_` on the weight viewed as [out, prod(rest)] (DiT/SiT do exactly this for
    /// the patch-embedding conv): U(±√(6 / (fanIn + fanOut))), fanIn = prod(shape[1...]), fanOut = shape[0].
    case xavierUniform
    /// torch `nn.Linear`'s own init: `kaiming_uniform_(a=√5)` for the weight and U(±1/√fanIn) for the bias,
    /// both U(±1/√fanIn).
    case torchDefaultLinear(fanIn: Int)
    /// timm `trunc_normal_(w, mean=0, std=std, a=a, b=b)`: N(0, std²) with draws outside [a, b] redrawn.
    /// Like timm, `a` and `b` are absolute values (not multiples of std).
    case truncatedNormal(std: Double, a: Double = -2, b: Double = 2)
    /// These exact values (copied).
    case tensor(Tensor)

    /// Fresh contiguous CPU values of `shape` in `dtype`. `key` names the parameter in trap messages.
    func make(_ shape: [Int], dtype: DType, generator: RandomGenerator, key: String) -> Tensor {
        noGrad {
            switch self {
            case .zeros: return Tensor.zeros(shape, dtype: dtype)
            case .ones: return Tensor.ones(shape, dtype: dtype)
            case let .constant(c): return Tensor.full(shape, c, dtype: dtype)
            case let .normal(std):
                return (generator.normal(shape, dtype: .float64) * std).to(dtype)
            case .xavierUniform:
                require(shape.count >= 2, "xavierUniform: '\(key)' has shape \(shape); needs rank ≥ 2")
                let fanOut = shape[0], fanIn = shape.dropFirst().reduce(1, *)
                return Initializer.uniform(shape, bound: (6.0 / Double(fanIn + fanOut)).squareRoot(), dtype, generator)
            case let .torchDefaultLinear(fanIn):
                require(fanIn > 0, "torchDefaultLinear: '\(key)' with fanIn \(fanIn)")
                return Initializer.uniform(shape, bound: 1 / Double(fanIn).squareRoot(), dtype, generator)
            case let .truncatedNormal(std, a, b):
                require(a < b && std > 0 && a < 6 * std && b > -6 * std,
                             "truncatedNormal: '\(key)' with std \(std), bounds [\(a), \(b)] (no mass to sample)")
                return Initializer.truncatedNormal(shape, std: std, a: a, b: b, dtype, generator)
            case let .tensor(t):
                require(t.shape == shape, "Initializer.tensor: '\(key)' given \(t.shape), declared \(shape)")
                return t.to(.cpu).to(dtype).clone()
            }
        }
    }

    /// torch `uniform_(-bound, bound)` = −bound + 2·bound·u, u ~ U[0, 1).
    private static func uniform(_ shape: [Int], bound: Double, _ dtype: DType, _ g: RandomGenerator) -> Tensor {
        (g.uniform(shape, dtype: .float64) * (2 * bound) - bound).to(dtype)
    }

    /// Rejection sampling: whole batches of normals are drawn until every slot holds an in-range value.
    private static func truncatedNormal(_ shape: [Int], std: Double, a: Double, b: Double,
                                        _ dtype: DType, _ g: RandomGenerator) -> Tensor {
        let n = shape.reduce(1, *)
        var values: [Double] = []
        values.reserveCapacity(n)
        while values.count < n {
            let draws = g.normal([n - values.count], dtype: .float64).scalars(as: Double.self)
            for z in draws where z * std >= a && z * std <= b { values.append(z * std) }
        }
        return Tensor(values, shape: shape).to(dtype)
    }
}
