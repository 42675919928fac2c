import HasteTensor

/// torch: `nn.Linear(inFeatures, outFeatures, bias)` → `weight` [out, in] (decays: rank 2), `bias` [out].
/// The default init is SiT/DiT's (`_basic_init`: xavier-uniform weight, zero bias); pass
/// `.torchDefaultLinear(fanIn: inFeatures)` for both to get `nn.Linear`'s own.
public struct Linear {
    public let weight: Tensor
    public let bias: Tensor?
    /// `weight` packed in place for the CPU GEMM (`prepackedForInference`): forward passes without gradients only.
    public let packed: PackedLinearWeight?

    public init(_ p: ParameterScope, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true,
                weightInit: Initializer = .xavierUniform, biasInit: Initializer = .zeros) {
        require(inFeatures > 0 && outFeatures > 0, "Linear '\(p.prefix)': \(inFeatures) → \(outFeatures)")
        weight = p.parameter("weight", [outFeatures, inFeatures], weightInit)
        self.bias = bias ? p.parameter("bias", [outFeatures], biasInit) : nil
        packed = nil
    }

    private init(weight: Tensor, bias: Tensor?, packed: PackedLinearWeight?) {
        (self.weight, self.bias, self.packed) = (weight, bias, packed)
    }

    /// This layer with its weight packed in place for the CPU GEMM where it can be (`PackedLinearWeight`; else
    /// unchanged): for a frozen model that only runs forward passes. Its store's values are not W until `unpack`.
    public func prepackedForInference() -> Linear {
        if packed != nil { return self }
        return Linear(weight: weight, bias: bias, packed: PackedLinearWeight(weight))
    }

    /// x: (..., in) → (..., out) = x·Wᵀ + b.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if let packed { return x.linear(packed: packed, bias: bias) }
        return x.linear(weight, bias)
    }
}
