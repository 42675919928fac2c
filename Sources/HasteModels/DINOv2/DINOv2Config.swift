import HasteTensor

/// DINOv2 ViT hyper-parameters (spec/dinov2.md §1). Hub models: `named("dinov2-vit-b")`.
public struct DINOv2Config: Codable, Equatable, Sendable {
    public var patchSize: Int = 14
    public var embedDim: Int = 768
    public var depth: Int = 12
    public var numHeads: Int = 12
    public var mlpRatio: Double = 4
    public var swiGLU: Bool = false          // g/14: SwiGLU FFN (mlp.w12, mlp.w3)
    public var swiGLUHidden: Int = 4096
    public var inChannels: Int = 3
    /// Side of the position-embedding grid held by the model (after HASTE's load-time resample).
    public var grid: Int = 16
    /// Side of the grid stored in hub checkpoints (518 px / 14 = 37).
    public var checkpointGrid: Int = 37

    public init() {}

    public var imageSize: Int { grid * patchSize }
    public var tokens: Int { grid * grid }

    /// `--enc-type` values: dinov2-vit-{s,b,l,g}; register variants are rejected (spec README #21).
    public static func named(_ encType: String, resolution: Int = 256) throws -> DINOv2Config {
        let sizes: [String: (Int, Int, Int)] = ["s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "g": (1536, 40, 24)]
        if encType.hasSuffix("-reg") || encType.contains("reg4") {
            throw HasteError.config(key: "enc-type", detail: "'\(encType)': DINOv2 register variants are not supported (their register tokens would enter the attention maps); use dinov2-vit-b")
        }
        let parts = encType.split(separator: "-")
        guard parts.count == 3, parts[0] == "dinov2", parts[1] == "vit", let s = sizes[String(parts[2])] else {
            throw HasteError.config(key: "enc-type", detail: "unknown encoder '\(encType)'; expected dinov2-vit-{s,b,l,g} (HASTE supports DINOv2 only)")
        }
        var c = DINOv2Config()
        (c.embedDim, c.depth, c.numHeads) = s
        c.swiGLU = parts[2] == "g"
        c.grid = 16 * resolution / 256
        return c
    }
}

/// What the teacher returns (spec/dinov2.md §2.7).
public struct DINOv2Output {
    /// Final-LayerNorm patch tokens [B, Np, D] (class token removed).
    public let patchTokens: Tensor
    /// Final-LayerNorm class token [B, D].
    public let classToken: Tensor
    /// Pre-softmax scaled logits [B, H, Np, Np] with class row and column removed, for the requested blocks: float32,
    /// or under Autocast bf16 on CUDA without a gradient (the frozen teacher) the bf16 logits themselves, as torch's
    /// autocast leaves them (`softCrossEntropy` reads a bf16 target; `.to(.float32)` widens them exactly).
    public let attentionLogits: [Int: Tensor]
}
