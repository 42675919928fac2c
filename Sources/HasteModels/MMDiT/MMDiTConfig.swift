import HasteTensor

/// MMDiT hyper-parameters (spec/mmdit.md §1). The defaults are the reference text-to-image model,
/// `MMDiT(input_size=32, z_dims=[768], encoder_depth=8)` with every other argument at its default.
public struct MMDiTConfig: Codable, Equatable, Sendable {
    public var inputSize: Int = 32          // latent side (256 px / 8)
    public var patchSize: Int = 2
    public var inChannels: Int = 4          // = out channels (no learned sigma)
    public var depth: Int = 24              // joint blocks; the last one's context stream is pre-only
    public var hiddenSize: Int = 768        // reference: 32 · depth
    public var numHeads: Int = 24           // reference: depth
    public var mlpRatio: Double = 4
    public var contextTokens: Int = 77      // text tokens per sample (CLIP: 77)
    public var contextDim: Int = 768        // context embedder in-features (reference: hard-coded 768)
    /// Side of the stored sin-cos table (`pos_embed_max_size`); the centred grid × grid window is used.
    /// nil: the grid itself (input / patch). The reference forces 16.
    public var posEmbedMaxSize: Int? = 16
    public var encoderDepth: Int = 8        // 1-based block whose image-stream output feeds the projectors
    public var projectorDims: [Int] = [768] // one projector per teacher (z_dims)
    public var projectorHidden: Int = 2048
    /// false: PyTorch default init everywhere, as the reference (spec §4). true: adaLN-Zero as SiT
    /// (every adaLN Linear and the final Linear start at 0; the output is exactly 0 at step 0).
    public var adaLNZeroInit: Bool = false

    public init() {}

    /// Image tokens T = (input / patch)².
    public var tokens: Int { grid * grid }
    public var grid: Int { inputSize / patchSize }
    public var posTableSide: Int { posEmbedMaxSize ?? grid }

    /// "MMDiT-D<depth>/<patch>": the reference constructor's sizes for a depth (hidden 32·depth, heads = depth,
    /// head dim 32). "MMDiT-XL/2" (also "MMDiT") is the reference text-to-image model, MMDiT-D24/2.
    /// Input size, context, projectors and encoder depth keep the reference defaults (set them after).
    public static func named(_ name: String) throws -> MMDiTConfig {
        let bad = HasteError.config(key: "model", detail: "unknown model '\(name)'; expected MMDiT-XL/2 (the reference, = MMDiT-D24/2) or MMDiT-D<depth>/<patch>, e.g. MMDiT-D4/2")
        if name == "MMDiT" || name == "MMDiT-XL/2" { return MMDiTConfig() }
        let parts = name.split(separator: "/")
        guard parts.count == 2, parts[0].hasPrefix("MMDiT-D"), let depth = Int(parts[0].dropFirst(7)), depth >= 1,
              let patch = Int(parts[1]), patch >= 1 else { throw bad }
        var c = MMDiTConfig()
        (c.depth, c.hiddenSize, c.numHeads, c.patchSize) = (depth, 32 * depth, depth, patch)
        c.encoderDepth = Swift.min(c.encoderDepth, depth)
        c.posEmbedMaxSize = nil
        return c
    }

    /// Start-up validation with messages naming the key and the fix (spec README #20: fail early).
    public func validate() throws {
        func bad(_ key: String, _ detail: String) -> HasteError { .config(key: key, detail: detail) }
        if depth < 1 { throw bad("model.depth", "must be at least 1") }
        if patchSize < 1 || inputSize % patchSize != 0 { throw bad("model.patchSize", "input size \(inputSize) is not a multiple of patch \(patchSize)") }
        if numHeads < 1 || hiddenSize % numHeads != 0 { throw bad("model.numHeads", "hidden \(hiddenSize) is not divisible by \(numHeads) heads") }
        if hiddenSize % 4 != 0 { throw bad("model.hiddenSize", "must be divisible by 4 for the 2-D sin-cos table") }
        if contextTokens < 1 || contextDim < 1 { throw bad("model.contextTokens", "context of \(contextTokens) tokens × \(contextDim) features") }
        if let m = posEmbedMaxSize, m < grid {
            throw bad("model.posEmbedMaxSize", "the position table is \(m)×\(m) but the latent grid is \(grid)×\(grid) (input \(inputSize) / patch \(patchSize)); the reference MMDiT only supports 256 px (grid 16)")
        }
        if encoderDepth < 1 || encoderDepth > depth {
            throw bad("encoder-depth", "\(encoderDepth) must be in 1...\(depth) (the block whose output feeds the projectors)")
        }
        if projectorDims.contains(where: { $0 < 1 }) || projectorHidden < 1 { throw bad("projector-embed-dims", "\(projectorDims), hidden \(projectorHidden)") }
    }
}
