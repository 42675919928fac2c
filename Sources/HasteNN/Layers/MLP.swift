import HasteTensor

/// Two linears around an activation. torch: timm `Mlp(in, hidden, out, act_layer)` (keys `fc1`, `fc2`), or
/// `nn.Sequential(Linear, act, Linear)` with `names: ("0", "2")` (SiT's `t_embedder.mlp`).
public struct MLP {
    public let fc1: Linear
    public let fc2: Linear
    public let activation: Activation

    public init(_ p: ParameterScope, inFeatures: Int, hidden: Int, outFeatures: Int, activation: Activation,
                names: (String, String) = ("fc1", "fc2"), weightInit: Initializer = .xavierUniform) {
        fc1 = Linear(p[names.0], inFeatures, hidden, weightInit: weightInit)
        fc2 = Linear(p[names.1], hidden, outFeatures, weightInit: weightInit)
        self.activation = activation
    }

    private init(fc1: Linear, fc2: Linear, activation: Activation) {
        (self.fc1, self.fc2, self.activation) = (fc1, fc2, activation)
    }

    /// Both weights packed in place for forward passes without gradients (`Linear.prepackedForInference`).
    public func prepackedForInference() -> MLP {
        MLP(fc1: fc1.prepackedForInference(), fc2: fc2.prepackedForInference(), activation: activation)
    }

    /// This MLP as a branch on bf16 operands (Autocast bf16 on CUDA: `Tensor.autocastBranch`,
    /// `Tensor.autocastAdaLNBranch`); nil for packed weights (CPU inference).
    public var bf16Branch: BF16Branch? {
        guard fc1.packed == nil, fc2.packed == nil else { return nil }
        return .mlp(w1: fc1.weight, b1: fc1.bias, activation: activation.unaryOp, w2: fc2.weight, b2: fc2.bias)
    }

    /// x: (..., in) → (..., hidden) → (..., out). With GELU(tanh) and a bias, fc1's bias and the activation run as
    /// one fused op after a bias-free GEMM (`biasGeluTanh`: the GEMM takes no epilogue); same values and gradients.
    /// Not under `Autocast`: there the bias belongs inside fc1's rounded output, as in torch. Under Autocast bf16 on
    /// CUDA the hidden activations stay bf16 tensors (`Tensor.autocastBranch`: the same values without the float32 carriers).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if activation == .geluTanh, let bias = fc1.bias, Autocast.precision == .float32 {
            // Sampling on CUDA with TF32 allowed: the GELU in fc1's GEMM epilogue (one pass over the hidden layer less).
            if fc1.packed == nil, let g = x.linearBiasGeluTanhUntracked(fc1.weight, bias) { return fc2(g) }
            return fc2((fc1.packed.map { x.linear(packed: $0) } ?? x.linear(fc1.weight)).biasGeluTanh(bias))
        }
        if let branch = bf16Branch, let y = Tensor.autocastBranch(x, branch) { return y }
        return fc2(activation(fc1(x)))
    }
}
