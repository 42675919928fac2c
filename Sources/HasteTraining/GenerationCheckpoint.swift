import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// A checkpoint `haste generate` samples from, read and checked before any model is built: the selected
/// weights, what the file records about its model (a haste checkpoint's resolved training config in
/// `__metadata__`, a reference `.pt`'s `args`), and the SiT (or MMDiT: GenerationCheckpoint+MMDiT.swift) both
/// describe. Flags that describe the model must agree with the file; they are never silently overridden by it,
/// nor it by them.
struct GenerationCheckpoint {
    let path: String
    /// `ema.`, `model.` or "" (a plain state dict): prepended to keys in messages.
    let prefix: String
    let state: [String: Tensor]
    let trainConfig: TrainConfig?
    let args: PickleValue?

    init(path: String, select: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "--ckpt must name a checkpoint: a haste run's checkpoints/<step>.safetensors, or a reference HASTE/REPA .pt.")
        }
        self.path = path
        if TorchCheckpoint.isTorchFile(path) {   // a reference HASTE/REPA .pt, or a plain state dict
            let file = try TorchCheckpoint(path: path)
            let flat = file.defaultStateDictKey == ""
            (prefix, state, trainConfig, args) = (flat ? "" : select + ".", try file.stateDict(at: flat ? "" : select), nil, file.root["args"])
            return
        }
        let file = try SafetensorsFile(path: path)
        trainConfig = try file.metadata["config"].map { try GenerationModel.trainConfig(yaml: $0, path: path) }
        args = nil
        guard file.names.contains(where: { $0.hasPrefix("ema.") || $0.hasPrefix("model.") }) else {
            (prefix, state) = ("", try file.tensors())
            return
        }
        // Only the selected weights are read: a training checkpoint also holds the other copy and AdamW's moments.
        prefix = select + "."
        var selected: [String: Tensor] = [:]
        for name in file.names where name.hasPrefix(prefix) { selected[String(name.dropFirst(prefix.count))] = try file.tensor(name) }
        if selected.isEmpty { throw HasteError.fileFormat(path: path, detail: "holds no '\(prefix)' weights; try --ckpt-select model") }
        state = selected
    }

    /// The model name the file records: its training config's `model`, or the reference's `args.model`.
    var recordedModel: (name: String, source: String)? {
        if let trainConfig { return (trainConfig.model, "the config stored in it") }
        return args?["model"]?.stringValue.map { ($0, "its args.model") }
    }

    /// One pass over every floating-point tensor, in key order; the first NaN or ±Inf is an error naming the key.
    func requireFinite() throws {
        for key in state.keys.sorted() where state[key]!.dtype.isFloatingPoint {
            let values = state[key]!.scalars(as: Float.self)
            guard let i = values.firstIndex(where: { !$0.isFinite }) else { continue }
            let bad = values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
            throw HasteError.fileFormat(path: path, detail: "weight '\(prefix)\(key)' holds \(bad) non-finite value(s) (first: element \(i) = \(values[i])), so every sample would come out black. Training diverged before this checkpoint was saved: sample an earlier checkpoint\(prefix == "ema." ? ", or try --ckpt-select model" : "")")
        }
    }

    /// The SiT to build, and its name for the sample folder: from the stored training config when there is one,
    /// else read off the tensor shapes (depth from `blocks.N`, width and patch from `x_embedder.proj.weight`,
    /// classes from the label table, projectors; heads from --num-heads, --model or the named-size table).
    func sitConfig(flags: GenerationModel.Flags) throws -> (config: SiTConfig, name: String) {
        try requireModelFlagAgrees(flags)
        var c: SiTConfig
        do { c = try ReferenceCheckpoint.inferSiTShapes(state.mapValues(\.shape), args: args) } catch HasteError.stateDict(let why) {
            throw HasteError.fileFormat(path: path, detail: prefix.isEmpty ? why : "'\(prefix)' weights: \(why)")
        }
        let fromWeights = c
        if let trainConfig {
            c = try trainConfig.studentConfig(sampleShape: [c.inChannels, c.inputSize, c.inputSize], numClasses: c.numClasses)
            (c.projectorDims, c.projectorHidden) = (fromWeights.projectorDims, fromWeights.projectorHidden)
        } else {
            let asked = try flags.model.map { try SiTConfig.named($0) }
            if let asked, recordedModel == nil, (asked.depth, asked.hiddenSize, asked.patchSize) != (c.depth, c.hiddenSize, c.patchSize) {
                throw HasteError.fileFormat(path: path, detail: "its weights have depth \(c.depth), width \(c.hiddenSize), patch \(c.patchSize)\(Self.namedSize(c).map { " (\($0))" } ?? ""), but --model \(flags.model!) has depth \(asked.depth), width \(asked.hiddenSize), patch \(asked.patchSize): drop --model (the size is read off the weights), or pass a \(flags.model!) checkpoint")
            }
            guard let heads = flags.numHeads ?? asked?.numHeads ?? ReferenceCheckpoint.headsByHidden[c.hiddenSize]
                    ?? recordedModel.flatMap({ try? SiTConfig.named($0.name) }).flatMap({ $0.hiddenSize == c.hiddenSize ? $0.numHeads : nil }) else {
                throw HasteError.fileFormat(path: path, detail: "holds a \(c.hiddenSize)-wide SiT, which no named size has (widths \(ReferenceCheckpoint.headsByHidden.keys.sorted())), and no tensor records the head count: pass --num-heads")
            }
            c.numHeads = heads
            if let d = flags.encoderDepth { c.encoderDepth = d }
        }
        try check(flags, against: c, weights: fromWeights)
        try c.validate()
        return (c, flags.model ?? recordedModel?.name ?? Self.namedSize(c) ?? "SiT")
    }

    /// `--model` must name the model the file records, if it records one.
    func requireModelFlagAgrees(_ flags: GenerationModel.Flags) throws {
        if let asked = flags.model, let (recorded, source) = recordedModel, asked != recorded {
            throw HasteError.fileFormat(path: path, detail: "is a \(recorded) checkpoint (\(source)), but --model says \(asked): drop --model, or pass a \(asked) checkpoint")
        }
    }

    /// Flags that restate what the file already says must say the same.
    private func check(_ flags: GenerationModel.Flags, against c: SiTConfig, weights w: SiTConfig) throws {
        func bad(_ flag: String, _ given: Any, _ recorded: String) -> HasteError {
            .fileFormat(path: path, detail: "\(recorded), but --\(flag) says \(given): drop --\(flag) (the checkpoint says it already), or pass the checkpoint you meant")
        }
        let recorded = trainConfig != nil || args?["encoder_depth"]?.intValue != nil
        if let d = flags.encoderDepth, recorded, d != c.encoderDepth {
            throw bad("encoder-depth", d, "was trained with encoder depth \(c.encoderDepth)")
        }
        if let h = flags.numHeads, trainConfig != nil, h != c.numHeads {
            throw bad("num-heads", h, "was trained with \(c.numHeads) heads")
        }
        if let n = flags.numClasses, n != w.numClasses {
            throw bad("num-classes", n, "its label table has \(w.numClasses) classes + 1 null row")
        }
        let pixels = trainConfig?.isPixelSpace ?? false, side = pixels ? w.inputSize : w.inputSize * 8
        if let r = flags.resolution, r != side {
            throw bad("resolution", r, "its model makes \(side)-px images (\(pixels ? "in pixel space" : "from \(w.inputSize)-px latents"))")
        }
        if let dims = flags.projectorEmbedDims, dims != w.projectorDims {
            throw bad("projector-embed-dims", dims, "its projectors output \(w.projectorDims) (HASTE checkpoints: [768])")
        }
        if flags.qkNorm == true, !w.qkNorm {
            throw bad("qk-norm", "yes", "it has no q_norm/k_norm weights")
        }
    }

    /// The reference size (SiT-{S,B,L,XL}/{2,4,8}) with this depth, width and patch, if any.
    static func namedSize(_ c: SiTConfig) -> String? {
        for size in ["S", "B", "L", "XL"] {
            for patch in [2, 4, 8] {
                let name = "SiT-\(size)/\(patch)"
                if let n = try? SiTConfig.named(name), (n.depth, n.hiddenSize, n.patchSize) == (c.depth, c.hiddenSize, c.patchSize) { return name }
            }
        }
        return nil
    }
}
