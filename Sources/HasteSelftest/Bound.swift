import HasteTensor

/// How far a device's result may be from the CPU reference, stated once for the whole suite.
///
/// Every error is **normwise relative**: max |device − cpu| over an output divided by max |cpu| over that output
/// (`maxRel` in the table). Per-element relative error is meaningless where a value is the cancellation of
/// large terms (a gradient of 1e-9 from terms of 1); the normwise ratio is the standard measure for kernels that
/// may sum in another order [Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1, §4.2].
public enum Bound: Sendable, Equatable {
    /// Bit-for-bit: copies, permutes, gathers, selects, comparisons, casts (round-to-nearest-even to f16/bf16,
    /// truncation toward zero to integers: both defined exactly), Philox uniforms (integer arithmetic, then one
    /// exact scaling by 2⁻²⁴), embedding forward, pools' max.
    case exact
    /// float32 arithmetic where the longest chain of roundings feeding one element is `k` (a sum of k terms,
    /// a pointwise formula of k operations, or both added up for a composite). Bound: 4·k·u, u = 2⁻²⁴ the unit
    /// roundoff. Why: a float32 sum of k terms in *any* order is within (k − 1)·u·Σ|terms| of the exact sum
    /// (Higham Thm 4.3); that worst case needs every rounding to err the same way, and the realised error grows
    /// like √k·u (Higham §4.2, the probabilistic bound). So 4·k·u is a margin of 4√k over the typical error of a
    /// correct kernel, and covers the deterministic worst case whenever Σ|terms| ≤ 4·max|result| (true for the
    /// suite's small odd sizes), while a wrong kernel (a dropped term, a wrong index or constant) is off by
    /// ≫ 1e-3. The CUDA math library's float functions are within 2 ulp (expf, tanhf, erff, sinf, cosf, rsqrtf;
    /// powf 4 ulp for positive inputs: CUDA C Programming Guide, "Mathematical Functions"), counted as 4
    /// operations each. GEMMs run in full float32 (the suite never enables TF32, whose 10-bit mantissa would
    /// need ~2⁻¹¹).
    case rounding(k: Int)
    /// Autocast bf16 (`Autocast.run(.bfloat16)`): results rounded to bf16 on both sides, where the device may also
    /// round intermediate operands the CPU keeps in float32 (the tensor-core flash kernels' P and dS). Bound:
    /// 4·k·u_b, u_b = 2⁻⁸ bf16's unit roundoff (8 significant bits), k the bf16 roundings on the longest chain
    /// weighted by how far the magnitude sums behind a result exceed max |result| (see each case).
    case bfloat16(k: Int)
    /// TF32 tensor cores on the device (`OpCase.tf32`) against float32 on the CPU: operands rounded to TF32's 11
    /// significant bits. Bound: 4·k·u_t, u_t = 2⁻¹¹, k the roundings on the longest chain weighted as `bfloat16`.
    case tf32(k: Int)

    /// The largest normwise relative error accepted.
    public var tolerance: Double {
        switch self {
        case .exact: return 0
        case let .rounding(k): return 4 * Double(Swift.max(k, 1)) * Bound.unitRoundoff
        case let .bfloat16(k): return 4 * Double(Swift.max(k, 1)) * 0x1p-8
        case let .tf32(k): return 4 * Double(Swift.max(k, 1)) * 0x1p-11
        }
    }

    /// float32 unit roundoff.
    public static let unitRoundoff = 1.0 / Double(1 << 24)

    public var label: String {
        switch self {
        case .exact: return "exact"
        case let .rounding(k): return "4·\(k)·u"
        case let .bfloat16(k): return "4·\(k)·u_bf16"
        case let .tf32(k): return "4·\(k)·u_tf32"
        }
    }

    /// Pointwise float32 formulas of a few operations (activations and their derivatives, AdamW, EMA).
    public static let pointwise = Bound.rounding(k: 8)
}

/// The comparison of one output: device result against the CPU's.
public struct OutputError: Sendable {
    public let name: String
    public let maxAbs: Double
    public let maxRel: Double   // normwise: maxAbs / max|cpu|; infinity when NaN/inf placement or shapes differ
    public let note: String?

    /// Compares two CPU-resident tensors of the same dtype (any dtype: read as Double on the CPU).
    public static func compare(_ name: String, device d: Tensor, cpu c: Tensor) -> OutputError {
        guard d.shape == c.shape, d.dtype == c.dtype else {
            return OutputError(name: name, maxAbs: .infinity, maxRel: .infinity,
                               note: "\(name): device gave \(d.dtype) \(d.shape), cpu \(c.dtype) \(c.shape)")
        }
        let a = d.to(.cpu).scalars(as: Double.self), b = c.scalars(as: Double.self)
        var maxAbs = 0.0, scale = 0.0, mismatch: String?
        for i in 0..<a.count {
            let x = a[i], y = b[i]
            if x.isNaN || y.isNaN || x.isInfinite || y.isInfinite {
                let same = (x.isNaN && y.isNaN) || x == y
                if !same && mismatch == nil { mismatch = "\(name)[\(i)]: device \(x), cpu \(y)" }
                continue
            }
            maxAbs = Swift.max(maxAbs, Swift.abs(x - y))
            scale = Swift.max(scale, Swift.abs(y))
        }
        if let mismatch { return OutputError(name: name, maxAbs: .infinity, maxRel: .infinity, note: mismatch) }
        let rel = maxAbs == 0 ? 0 : (scale == 0 ? Double.infinity : maxAbs / scale)
        return OutputError(name: name, maxAbs: maxAbs, maxRel: rel, note: nil)
    }
}
