/// Unary elementwise ops and activations, each mirroring a torch function (named per case).
public enum UnaryOp: Sendable, Equatable {
    case exp, log, sqrt, rsqrt, tanh, sin, cos, abs, sign, reciprocal, square
    case sigmoid           // torch.sigmoid
    case silu              // F.silu: x·σ(x)
    case geluTanh          // F.gelu(x, approximate="tanh")
    case gelu              // F.gelu(x): exact, x·Φ(x) with erf
    case relu              // F.relu
    case pow(Double)       // torch.pow(x, p), scalar exponent
    case clamp(Double, Double)                // torch.clamp(x, min, max); ±infinity for one-sided
    case affine(scale: Double, shift: Double) // x·scale + shift (scalar arithmetic)
}

extension UnaryOp {
    /// True where f' is computed from x alone (not from y = f(x)): the activations whose backward can run on a
    /// rounded copy of the input without the forward's float32 output (`unaryLow`, Autocast's bf16 MLP).
    public var derivativeReadsOnlyInput: Bool {
        switch self {
        case .geluTanh, .gelu, .silu, .relu: return true
        default: return false
        }
    }

    /// True where `unaryLow` / `unaryBackwardLow` may run the op on low-precision values: f' reads x alone
    /// (`derivativeReadsOnlyInput`) or nothing (affine: f' = scale; the aligned attention's q·scale under autocast).
    public var runsOnLowValues: Bool {
        if case .affine = self { return true }
        return derivativeReadsOnlyInput
    }
}

extension Tensor {
    /// Applies `op` elementwise; differentiable.
    public func unary(_ op: UnaryOp) -> Tensor {
        require(dtype.isComputeFloat, "\(op): needs float32 or float64, got \(dtype) \(shape)")
        let x = contiguous()
        let y = Tensor.empty(like: x)
        backend.unary(op, x: x.buffer, y: y.buffer, count: count)
        return y.recorded(UnaryBackward(op: op, x: x, y: y.detached()))
    }

    public func exp() -> Tensor { unary(.exp) }
    public func log() -> Tensor { unary(.log) }
    public func sqrt() -> Tensor { unary(.sqrt) }
    public func rsqrt() -> Tensor { unary(.rsqrt) }
    public func tanh() -> Tensor { unary(.tanh) }
    public func sin() -> Tensor { unary(.sin) }
    public func cos() -> Tensor { unary(.cos) }
    public func abs() -> Tensor { unary(.abs) }
    public func square() -> Tensor { unary(.square) }
    public func sigmoid() -> Tensor { unary(.sigmoid) }
    public func silu() -> Tensor { unary(.silu) }
    public func relu() -> Tensor { unary(.relu) }
    public func geluTanh() -> Tensor { unary(.geluTanh) }
    public func gelu() -> Tensor { unary(.gelu) }
    public func pow(_ p: Double) -> Tensor { unary(.pow(p)) }
    public func clamp(min lo: Double = -.infinity, max hi: Double = .infinity) -> Tensor {
        require(lo <= hi, "clamp: min \(lo) > max \(hi)")
        return unary(.clamp(lo, hi))
    }
}

/// Saves the input (contiguous) and the output; the derivative is recomputed in one kernel pass.
struct UnaryBackward: Backward {
    let op: UnaryOp
    let x: Tensor, y: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dx = Tensor.empty(like: x)
        x.backend.unaryBackward(op, x: x.buffer, y: y.buffer, dy: dy.contiguous().buffer, dx: dx.buffer, count: x.count)
        return [dx]
    }
}
