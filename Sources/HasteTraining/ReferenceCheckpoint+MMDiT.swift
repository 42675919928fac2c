import Foundation
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

extension ReferenceCheckpoint {
    /// The MMDiT a state dict was saved from (spec/mmdit.md §5), from its keys and shapes: hidden width, channels
    /// and patch from `x_embedder.proj.weight`, the position-table side from `pos_embed`, context width from
    /// `context_embedder.weight`, depth from the `joint_blocks.N` keys, MLP ratio from fc1, projectors from
    /// `projectors.{j}.{0,4}.weight`. Not in the weights: heads (`numHeads`, else the reference rule heads = depth),
    /// the input size (`args.resolution` / 8, else the table side × patch), the encoder depth (`args.encoder_depth`,
    /// else 8, clamped to the depth) and the context token count (77).
    public static func inferMMDiTConfig(_ shapes: [String: [Int]], args: PickleValue? = nil, numHeads: Int? = nil) throws -> MMDiTConfig {
        func shape(_ key: String, rank: Int) throws -> [Int] {
            guard let s = shapes[key] else {
                throw HasteError.stateDict("not an MMDiT state dict: no '\(key)' (keys: \(shapes.keys.sorted().prefix(8).joined(separator: ", "))…)")
            }
            guard s.count == rank else { throw HasteError.stateDict("'\(key)' has shape \(s), expected \(rank) dimensions") }
            return s
        }
        let pos = try shape("pos_embed", rank: 3), patch = try shape("x_embedder.proj.weight", rank: 4)
        let ctx = try shape("context_embedder.weight", rank: 2)
        var c = MMDiTConfig()
        (c.hiddenSize, c.inChannels, c.patchSize, c.contextDim) = (patch[0], patch[1], patch[2], ctx[1])
        let side = Int(Double(pos[1]).squareRoot().rounded())
        guard side * side == pos[1], patch[2] == patch[3], pos[2] == c.hiddenSize, ctx[0] == c.hiddenSize else {
            throw HasteError.stateDict("pos_embed \(pos), x_embedder.proj.weight \(patch) and context_embedder.weight \(ctx) do not describe one square MMDiT")
        }
        c.posEmbedMaxSize = side
        c.inputSize = args?["resolution"]?.intValue.map { $0 / 8 } ?? side * c.patchSize
        var depth = 0
        while shapes["joint_blocks.\(depth).x_block.attn.qkv.weight"] != nil { depth += 1 }
        guard depth > 0, let fc1 = shapes["joint_blocks.0.x_block.mlp.fc1.weight"] else {
            throw HasteError.stateDict("no joint_blocks.0.x_block.mlp.fc1.weight: not an MMDiT state dict")
        }
        c.depth = depth
        c.numHeads = numHeads ?? depth
        c.mlpRatio = Double(fc1[0]) / Double(c.hiddenSize)
        var projectors = 0
        while shapes["projectors.\(projectors).4.weight"] != nil { projectors += 1 }
        c.projectorDims = try (0..<projectors).map { try shape("projectors.\($0).4.weight", rank: 2)[0] }
        if projectors > 0 { c.projectorHidden = try shape("projectors.0.0.weight", rank: 2)[0] }
        c.encoderDepth = min(args?["encoder_depth"]?.intValue ?? 8, depth)
        try c.validate()
        return c
    }

    /// An MMDiT built from a checkpoint and loaded strictly: a reference train_t2i.py checkpoint (`select` picks
    /// `ema` or `model`), a plain state dict (.pt/.pth or .safetensors), or a safetensors training checkpoint
    /// with `ema.`/`model.` prefixes. Size and projectors come from the keys (`inferMMDiTConfig`).
    public static func loadMMDiT(path: String, select: CheckpointSelection = .ema, numHeads: Int? = nil) throws -> MMDiT {
        let (state, args) = try weights(path: path, select: select)
        do {
            let model = try MMDiT(try inferMMDiTConfig(state.mapValues(\.shape), args: args, numHeads: numHeads))
            try model.store.load(state, strict: true)
            return model
        } catch let error as HasteError {
            throw HasteError.fileFormat(path: path, detail: "'\(select.rawValue)' weights: \(error)")
        }
    }
}
