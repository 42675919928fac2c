/// Counter-based random numbers (Philox4x32-10). Element i of a draw depends only on (seed, offset + i),
/// so streams are identical whatever the thread count, and a generator's state is two integers.
/// Our streams are not PyTorch's: fixtures carry noise as inputs (STYLE §2.9).
public protocol RandomKernels: AnyObject {
    /// dst[i] = U[0,1) from counter block (offset + i) / 4, lane i % 4.
    func fillUniform(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64)
    /// dst[i] = N(0,1) by Box–Muller over the same blocks (lanes 0,1 → two normals; 2,3 → two more).
    func fillNormal(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64)
}

/// A seeded stream. Each draw consumes a whole number of 4-element blocks.
public final class RandomGenerator: @unchecked Sendable {
    public let seed: UInt64
    /// Elements consumed so far (a multiple of 4). Set back only by a checkpoint replaying its draws.
    public internal(set) var offset: UInt64

    public init(seed: UInt64, offset: UInt64 = 0) {
        self.seed = seed
        self.offset = offset
    }

    func advance(_ count: Int) -> UInt64 {
        let start = offset
        offset += UInt64((count + 3) / 4 * 4)
        return start
    }

    /// Reserves `count` elements (rounded up to whole blocks) for draws made from them elsewhere, e.g. by
    /// per-sample generators at offsets inside the reservation; returns its first offset.
    public func reserve(_ count: Int) -> UInt64 { advance(count) }

    /// U[0,1) (torch.rand semantics).
    public func uniform(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        let t = Tensor.empty(shape, dtype: dtype, device: device)
        t.backend.fillUniform(t.buffer, count: t.count, seed: seed, offset: advance(t.count))
        return t
    }

    /// N(0, 1) (torch.randn semantics).
    public func normal(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        let t = Tensor.empty(shape, dtype: dtype, device: device)
        t.backend.fillNormal(t.buffer, count: t.count, seed: seed, offset: advance(t.count))
        return t
    }

    /// Integers uniform in [low, high) as int64 (torch.randint).
    public func randint(_ low: Int, _ high: Int, _ shape: [Int]) -> Tensor {
        require(high > low, "randint: empty range [\(low), \(high))")
        let u = uniform(shape, dtype: .float64).scalars(as: Double.self)
        let span = Double(high - low)
        return Tensor(u.map { Int64(low) + Int64(min(span - 1, ($0 * span).rounded(.down))) }, shape: shape)
    }

    /// A random permutation of 0..<n (torch.randperm), Fisher–Yates over this stream.
    public func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n < 2 { return p }
        let u = uniform([n - 1], dtype: .float64).scalars(as: Double.self)
        for i in stride(from: n - 1, to: 0, by: -1) {
            let j = min(i, Int(u[n - 1 - i] * Double(i + 1)))
            p.swapAt(i, j)
        }
        return p
    }
}

extension Tensor {
    /// N(0,1) with a one-off generator: for tests and initial values.
    public static func randn(_ shape: [Int], dtype: DType = .float32, seed: UInt64, device: Device = .cpu) -> Tensor {
        RandomGenerator(seed: seed).normal(shape, dtype: dtype, device: device)
    }

    /// U[0,1) with a one-off generator.
    public static func rand(_ shape: [Int], dtype: DType = .float32, seed: UInt64, device: Device = .cpu) -> Tensor {
        RandomGenerator(seed: seed).uniform(shape, dtype: dtype, device: device)
    }

    public static func randn(like t: Tensor, seed: UInt64) -> Tensor { randn(t.shape, dtype: t.dtype, seed: seed, device: t.device) }
}
