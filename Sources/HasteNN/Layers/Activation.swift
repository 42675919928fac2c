import HasteTensor

/// The activations layers choose between (STYLE §5: the GELU flavour is part of a model's definition).
public enum Activation: Sendable, Equatable {
    /// torch `F.gelu(x, approximate="tanh")` (SiT's MLP).
    case geluTanh
    /// torch `F.gelu(x)`, exact erf (DINOv2's MLP).
    case gelu
    /// torch `F.silu` (timestep embedder, projectors).
    case silu

    /// The elementwise op this activation is.
    public var unaryOp: UnaryOp {
        switch self {
        case .geluTanh: return .geluTanh
        case .gelu: return .gelu
        case .silu: return .silu
        }
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        switch self {
        case .geluTanh: return x.geluTanh()
        case .gelu: return x.gelu()
        case .silu: return x.silu()
        }
    }
}
