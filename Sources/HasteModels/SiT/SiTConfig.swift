import HasteTensor

/// SiT hyper-parameters (spec/sit.md §1). `named("SiT-XL/2")` gives the reference sizes.
public struct SiTConfig: Codable, Equatable, Sendable {
    public var inputSize: Int = 32          // latent side: resolution / 8 (pixel models: the image side)
    public var patchSize: Int = 2
    public var inChannels: Int = 4
    public var hiddenSize: Int = 1152
    public var depth: Int = 28
    public var numHeads: Int = 16
    public var mlpRatio: Double = 4
    public var numClasses: Int = 1000       // the label table has numClasses + 1 rows (last = CFG null)
    public var encoderDepth: Int = 8        // 1-based block whose output feeds the projectors
    public var projectorDims: [Int] = [768] // one projector per teacher (z_dims)
    public var projectorHidden: Int = 2048
    public var qkNorm: Bool = false

    public init() {}

    public var tokens: Int { (inputSize / patchSize) * (inputSize / patchSize) }

    /// The reference factories: SiT-{S,B,L,XL}/{2,4,8}. Final-layer width = hidden size for every size
    /// (spec README #25: the reference's SiT-S final layer bug is not reproduced).
    public static func named(_ name: String) throws -> SiTConfig {
        let sizes: [String: (depth: Int, hidden: Int, heads: Int)] = [
            "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16),
        ]
        let parts = name.split(separator: "/")
        guard parts.count == 2, parts[0].hasPrefix("SiT-"), let size = sizes[String(parts[0].dropFirst(4))],
              let patch = Int(parts[1]), [2, 4, 8].contains(patch) else {
            throw HasteError.config(key: "model", detail: "unknown model '\(name)'; expected SiT-{S,B,L,XL}/{2,4,8}, e.g. SiT-XL/2")
        }
        var c = SiTConfig()
        (c.depth, c.hiddenSize, c.numHeads, c.patchSize) = (size.depth, size.hidden, size.heads, patch)
        return c
    }

    /// Start-up validation with messages naming the key and the fix.
    public func validate() throws {
        func bad(_ key: String, _ detail: String) -> HasteError { .config(key: key, detail: detail) }
        if inputSize % patchSize != 0 { throw bad("model.patchSize", "input size \(inputSize) is not a multiple of patch \(patchSize)") }
        if hiddenSize % numHeads != 0 { throw bad("model.numHeads", "hidden \(hiddenSize) is not divisible by \(numHeads) heads") }
        if hiddenSize % 4 != 0 { throw bad("model.hiddenSize", "must be divisible by 4 for the 2-D sin-cos table") }
        if encoderDepth < 1 || encoderDepth > depth {
            throw bad("encoder-depth", "\(encoderDepth) must be in 1...\(depth) (the block whose output feeds the projectors)")
        }
        if numClasses < 1 { throw bad("num-classes", "must be at least 1") }
    }
}

/// What a SiT forward returns (STYLE §5: a named struct, not a tuple whose arity callers probe).
public struct SiTOutput {
    /// Predicted velocity, shaped like the input.
    public let velocity: Tensor
    /// Pre-softmax scaled attention logits [N, H, T, T] of the requested blocks (0-based index → logits): float32, or
    /// bf16 under autocast bf16 on CUDA as torch's autocast leaves them (`.to(.float32)` widens them, differentiably).
    public let attentionLogits: [Int: Tensor]
    /// Projector outputs [N, T, z_k], one per projector; empty unless requested.
    public let projections: [Tensor]
}
