/// Binary elementwise ops with PyTorch broadcasting. torch: `a + b`, `a - b`, `a * b`, `a / b`,
/// `torch.maximum`, `torch.minimum`.
public enum BinaryOp: Sendable { case add, sub, mul, div, maximum, minimum }

/// Kernels of the elementwise families (this file and Unary.swift).
public protocol ElementwiseKernels: AnyObject {
    /// out[i] = a[i] ∘ b[i] over `shape`, reading a and b through element strides (0 on broadcast axes);
    /// out is contiguous. a, b and out share one float dtype.
    func binary(_ op: BinaryOp, _ a: Buffer, _ aStrides: [Int], _ b: Buffer, _ bStrides: [Int],
                _ out: Buffer, shape: [Int])
    /// y = f(x), contiguous, `count` elements.
    func unary(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int)
    /// dx = dy · f'(x); `y` = f(x) from the forward pass (used where cheaper).
    func unaryBackward(_ op: UnaryOp, x: Buffer, y: Buffer, dy: Buffer, dx: Buffer, count: Int)
    /// y += alpha · x.
    func axpy(alpha: Double, x: Buffer, y: Buffer, count: Int)
    /// y = low(f(x)) on tensors of a low dtype (bfloat16): each element widened, `unary`'s float32 formula, rounded
    /// once to nearest even. Only for ops whose derivative reads x alone or nothing (`UnaryOp.runsOnLowValues`).
    /// Returns false where the backend has no such kernel (the default); the caller then widens and rounds itself.
    func unaryLow(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int) -> Bool
    /// dx = low(dy · f'(x)) on low tensors, `unaryBackward`'s formula on the widened values rounded once; false as
    /// `unaryLow`.
    func unaryBackwardLow(_ op: UnaryOp, x: Buffer, dy: Buffer, dx: Buffer, count: Int) -> Bool
}

extension ElementwiseKernels {
    public func unaryLow(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int) -> Bool { false }
    public func unaryBackwardLow(_ op: UnaryOp, x: Buffer, dy: Buffer, dx: Buffer, count: Int) -> Bool { false }
}

/// The broadcast shape of two shapes (numpy rules), or nil when they do not broadcast.
public func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
    let rank = Swift.max(a.count, b.count)
    var out = [Int](repeating: 1, count: rank)
    for i in 0..<rank {
        let x = i < rank - a.count ? 1 : a[i - (rank - a.count)]
        let y = i < rank - b.count ? 1 : b[i - (rank - b.count)]
        guard x == y || x == 1 || y == 1 else { return nil }
        out[i] = x == 1 ? y : x
    }
    return out
}

extension Tensor {
    /// Strides reading this tensor as `shape` (0 on broadcast axes), keeping its own layout.
    func broadcastStrides(to target: [Int]) -> [Int] {
        let extra = target.count - rank
        return (0..<target.count).map { i in
            i < extra || shape[i - extra] == 1 ? 0 : strides[i - extra]
        }
    }

    public func binary(_ op: BinaryOp, _ other: Tensor, _ name: String) -> Tensor {
        require(dtype == other.dtype && dtype.isComputeFloat,
                     "\(name): dtypes \(dtype) and \(other.dtype) (need one float dtype; convert with to(_:))")
        require(device == other.device, "\(name): operands on \(device) and \(other.device)")
        guard let shape = broadcastShape(self.shape, other.shape) else {
            fatalError("\(name): shapes \(self.shape) and \(other.shape) do not broadcast")
        }
        let out = Tensor.empty(shape, dtype: dtype, device: device)
        let a = Buffer(storage: storage, offset: offset, dtype: dtype)
        let b = Buffer(storage: other.storage, offset: other.offset, dtype: dtype)
        backend.binary(op, a, broadcastStrides(to: shape), b, other.broadcastStrides(to: shape), out.buffer, shape: shape)
        return out.recorded(BinaryBackward(op: op, a: self, b: other, out: op == .div ? out.detached() : nil))
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { a.binary(.add, b, "add") }
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.binary(.sub, b, "sub") }
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.binary(.mul, b, "mul") }
    public static func / (a: Tensor, b: Tensor) -> Tensor { a.binary(.div, b, "div") }
    public func maximum(_ b: Tensor) -> Tensor { binary(.maximum, b, "maximum") }
    public func minimum(_ b: Tensor) -> Tensor { binary(.minimum, b, "minimum") }

    public static func + (a: Tensor, s: Double) -> Tensor { a.unary(.affine(scale: 1, shift: s)) }
    public static func + (s: Double, a: Tensor) -> Tensor { a.unary(.affine(scale: 1, shift: s)) }
    public static func - (a: Tensor, s: Double) -> Tensor { a.unary(.affine(scale: 1, shift: -s)) }
    public static func - (s: Double, a: Tensor) -> Tensor { a.unary(.affine(scale: -1, shift: s)) }
    public static func * (a: Tensor, s: Double) -> Tensor { a.unary(.affine(scale: s, shift: 0)) }
    public static func * (s: Double, a: Tensor) -> Tensor { a.unary(.affine(scale: s, shift: 0)) }
    public static func / (a: Tensor, s: Double) -> Tensor { a.unary(.affine(scale: 1 / s, shift: 0)) }
    public static func / (s: Double, a: Tensor) -> Tensor { a.unary(.reciprocal) * s }
    public static prefix func - (a: Tensor) -> Tensor { a.unary(.affine(scale: -1, shift: 0)) }
}

/// Saves both operands (views, no copy) and, for div, the output.
struct BinaryBackward: Backward {
    let op: BinaryOp
    /// `out` only for `.div` (its db reads a/b): the other ops' nodes do not keep their output alive.
    let a: Tensor, b: Tensor, out: Tensor?
    var inputs: [Tensor] { [a, b] }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let da: Tensor?, db: Tensor?
        switch op {
        case .add: da = dy; db = dy
        case .sub: da = dy; db = -dy
        case .mul:
            da = a.isTracked ? dy * b.detached() : nil
            db = b.isTracked ? dy * a.detached() : nil
        case .div:
            da = a.isTracked ? dy / b.detached() : nil
            db = b.isTracked ? -(dy * out! / b.detached()) : nil          // d(a/b)/db = -(a/b)/b
        case .maximum, .minimum:
            // torch: the gradient goes to the selected operand; ties split it half/half.
            let pickA = selectionMask(op == .maximum ? (a.detached(), b.detached()) : (b.detached(), a.detached()))
            da = a.isTracked ? dy * pickA : nil
            db = b.isTracked ? dy * (1.0 - pickA) : nil
        }
        return [a.isTracked ? da?.unbroadcast(to: a.shape) : nil, b.isTracked ? db?.unbroadcast(to: b.shape) : nil]
    }

    /// 1 where x > y, 0.5 where equal, 0 where less (broadcast shape).
    private func selectionMask(_ p: (Tensor, Tensor)) -> Tensor {
        let d = p.0 - p.1
        return (d.unary(.sign) + 1.0) * 0.5
    }
}
