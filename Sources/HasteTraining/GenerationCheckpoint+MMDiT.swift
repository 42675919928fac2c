import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// Text-to-image checkpoints: the MMDiT a file holds (spec/mmdit.md §1–5), settled from its tensor shapes, its
/// stored training config or reference `args`, and the flags, before any model is built.
extension GenerationCheckpoint {
    /// Whether the weights are an MMDiT's (a text-conditioned model) rather than a SiT's.
    var isMMDiT: Bool { state["context_embedder.weight"] != nil }

    /// The MMDiT to build and its name for the sample folder. Read off the weights: depth (`joint_blocks.N`), width,
    /// channels and patch (`x_embedder`), context width (`context_embedder.weight`), the position table, MLP ratio
    /// and projectors. Heads: the stored training config's, else --num-heads, else the named sizes' rule (every
    /// reference MMDiT has width 32·depth and one head per block), else an error asking for --num-heads.
    func mmditConfig(flags: GenerationModel.Flags) throws -> (config: MMDiTConfig, name: String) {
        try requireModelFlagAgrees(flags)
        var c: MMDiTConfig
        do { c = try ReferenceCheckpoint.inferMMDiTConfig(state.mapValues(\.shape), args: args, numHeads: 1) } catch HasteError.stateDict(let why) {
            throw HasteError.fileFormat(path: path, detail: prefix.isEmpty ? why : "'\(prefix)' weights: \(why)")
        }
        let recordedName = recordedModel?.name
        let named = try (flags.model ?? recordedName).map { name in
            do { return try MMDiTConfig.named(name) } catch {
                throw HasteError.fileFormat(path: path, detail: "holds an MMDiT (text-to-image) model, but \(flags.model != nil ? "--model" : "its recorded model") is '\(name)': "
                    + "MMDiT sizes are MMDiT-XL/2 or MMDiT-D<depth>/<patch>\(flags.model != nil ? "; drop --model (the size is read off the weights)" : "")")
            }
        }
        if let t = trainConfig {
            var n = named ?? MMDiTConfig()
            if t.hiddenSize > 0 { n.hiddenSize = t.hiddenSize }
            if t.depth > 0 { n.depth = t.depth }
            if t.numHeads > 0 { n.numHeads = t.numHeads }
            guard (n.depth, n.hiddenSize) == (c.depth, c.hiddenSize) else {
                throw HasteError.fileFormat(path: path, detail: "its stored config describes depth \(n.depth), width \(n.hiddenSize), but its weights have depth \(c.depth), width \(c.hiddenSize)")
            }
            (c.numHeads, c.encoderDepth) = (n.numHeads, t.encoderDepth)
        } else {
            if let n = named, flags.model != nil, recordedName == nil, (n.depth, n.hiddenSize, n.patchSize) != (c.depth, c.hiddenSize, c.patchSize) {
                throw HasteError.fileFormat(path: path, detail: "its weights have depth \(c.depth), width \(c.hiddenSize), patch \(c.patchSize)\(Self.namedSize(c).map { " (\($0))" } ?? ""), but --model \(flags.model!) has depth \(n.depth), width \(n.hiddenSize), patch \(n.patchSize): drop --model (the size is read off the weights), or pass a \(flags.model!) checkpoint")
            }
            guard let heads = flags.numHeads ?? (c.hiddenSize == 32 * c.depth ? c.depth : nil) else {
                throw HasteError.fileFormat(path: path, detail: "holds an MMDiT of width \(c.hiddenSize) and depth \(c.depth), not a named size (width 32·depth, one head per block), and no tensor records the head count: pass --num-heads")
            }
            c.numHeads = heads
            if let d = flags.encoderDepth { c.encoderDepth = d }
            if let r = flags.resolution, args?["resolution"]?.intValue == nil { c.inputSize = r / 8 }
        }
        try check(flags, against: c)
        do { try c.validate() } catch let e as HasteError { throw HasteError.fileFormat(path: path, detail: "\(e)") }
        return (c, flags.model ?? recordedName ?? Self.namedSize(c) ?? "MMDiT")
    }

    /// Flags that restate what the file already says must say the same; class-conditional flags do not apply.
    private func check(_ flags: GenerationModel.Flags, against c: MMDiTConfig) throws {
        func bad(_ flag: String, _ given: Any, _ recorded: String) -> HasteError {
            .fileFormat(path: path, detail: "\(recorded), but --\(flag) says \(given): drop --\(flag) (the checkpoint says it already), or pass the checkpoint you meant")
        }
        if flags.numClasses != nil {
            throw HasteError.fileFormat(path: path, detail: "holds a text-to-image MMDiT, which has no classes: drop --num-classes")
        }
        if flags.qkNorm == true { throw bad("qk-norm", "yes", "its MMDiT has no q_norm/k_norm weights") }
        if let d = flags.encoderDepth, trainConfig != nil || args?["encoder_depth"]?.intValue != nil, d != c.encoderDepth {
            throw bad("encoder-depth", d, "was trained with encoder depth \(c.encoderDepth)")
        }
        if let h = flags.numHeads, trainConfig != nil, h != c.numHeads { throw bad("num-heads", h, "was trained with \(c.numHeads) heads") }
        let pixels = trainConfig?.isPixelSpace ?? false, side = pixels ? c.inputSize : c.inputSize * 8
        if let r = flags.resolution, r != side {
            throw bad("resolution", r, "its model makes \(side)-px images (\(pixels ? "in pixel space" : "from \(c.inputSize)-px latents"))")
        }
        if let dims = flags.projectorEmbedDims, dims != c.projectorDims {
            throw bad("projector-embed-dims", dims, "its projectors output \(c.projectorDims) (HASTE checkpoints: [768])")
        }
    }

    /// The reference name of an MMDiT with these sizes: MMDiT-XL/2 (the reference text-to-image model) or
    /// MMDiT-D<depth>/<patch>, when the width is 32·depth with one head per block.
    static func namedSize(_ c: MMDiTConfig) -> String? {
        guard c.hiddenSize == 32 * c.depth, c.numHeads == c.depth else { return nil }
        return c.depth == 24 && c.patchSize == 2 ? "MMDiT-XL/2" : "MMDiT-D\(c.depth)/\(c.patchSize)"
    }
}
