import HasteTensor

/// torch: `nn.Linear(inFeatures, outFeatures, bias)` → `weight` [out, in] (decays: rank 2), `bias` [out].
/// The default init is SiT/DiT's (`_basic_init`: xavier-uniform weight, zero bias); pass
/// `.torchDefaultLinear(fanIn: inFeatures)` for both to get `nn.Linear`'s own.
public struct Linear {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ p: ParameterScope, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true,
                weightInit: Initializer = .xavierUniform, biasInit: Initializer = .zeros) {
        require(inFeatures > 0 && outFeatures > 0, "Linear '\(p.prefix)': \(inFeatures) → \(outFeatures)")
        weight = p.parameter("weight", [outFeatures, inFeatures], weightInit)
        self.bias = bias ? p.parameter("bias", [outFeatures], biasInit) : nil
    }

    /// x: (..., in) → (..., out) = x·Wᵀ + b.
    public func callAsFunction(_ x: Tensor) -> Tensor { x.linear(weight, bias) }
}
