import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// What `haste generate` samples from: a SiT with its weights, the sample shape it works in, and whether its
/// samples are pixels or SD-VAE latents (spec/sampling.md §5 step 2).
public struct GenerationModel {
    public let sit: SiT
    /// [C, S, S]: latents [4, res/8, res/8], or pixels (the Fashion-MNIST demo: [1, 32, 32]).
    public let sampleShape: [Int]
    public let pixelSpace: Bool
    /// latents = z · scale (HASTE: 0.18215, bias 0); unused in pixel space.
    public let latentScale: Double
    /// The model's name for the sample folder (`--model`, or the checkpoint config's `model`).
    public let name: String

    public init(sit: SiT, pixelSpace: Bool, latentScale: Double = 0.18215, name: String) {
        self.sit = sit
        sampleShape = [sit.config.inChannels, sit.config.inputSize, sit.config.inputSize]
        self.pixelSpace = pixelSpace
        self.latentScale = latentScale
        self.name = name
    }

    /// Flags that describe a checkpoint without a `config` (reference `.pt` files); ignored for haste
    /// checkpoints, whose resolved training config says what the model is.
    public struct Flags: Sendable {
        public var model: String?
        public var encoderDepth: Int?
        public var projectorEmbedDims: [Int]?
        public var resolution: Int?
        public var numClasses: Int?
        public var qkNorm: Bool?
        /// Heads of a custom-width model (named sizes imply theirs).
        public var numHeads: Int?
        public init() {}
    }

    /// Loads `path`: a haste training checkpoint (`model.`/`ema.`/`opt.` keys and a `config` entry in its
    /// metadata), a safetensors file with `ema.`/`model.` prefixes (a converted reference checkpoint), or a
    /// plain SiT state dict. `select` picks `ema` (default, as generate.py) or `model` weights.
    public static func load(_ path: String, select: String = "ema", flags: Flags = Flags()) throws -> GenerationModel {
        guard ["ema", "model"].contains(select) else {
            throw HasteError.config(key: "ckpt-select", detail: "'\(select)' is not ema or model")
        }
        if TorchCheckpoint.isTorchFile(path) {   // a reference HASTE/REPA .pt (latent space, sizes from its keys)
            let heads = try flags.numHeads ?? flags.model.map { try SiTConfig.named($0).numHeads }
            let sit = try ReferenceCheckpoint.loadSiT(path: path, select: select == "ema" ? .ema : .model, numHeads: heads)
            sit.store.setRequiresGrad(false)
            return GenerationModel(sit: sit, pixelSpace: false, latentScale: 0.18215, name: flags.model ?? "SiT")
        }
        let (tensors, metadata) = try stateDict(path)
        let prefixed = tensors.keys.contains { $0.hasPrefix("ema.") || $0.hasPrefix("model.") }
        var state = tensors
        if prefixed {
            state = [:]
            for (k, v) in tensors where k.hasPrefix(select + ".") { state[String(k.dropFirst(select.count + 1))] = v }
            if state.isEmpty { throw HasteError.fileFormat(path: path, detail: "holds no '\(select).' weights; try --ckpt-select model") }
        }
        let config = try metadata["config"].map { try trainConfig(yaml: $0, path: path) }
        var c = try sitConfig(state, config: config, flags: flags, path: path)
        c.projectorDims = projectorDims(state)
        if let hidden = state["projectors.0.0.weight"]?.shape.first { c.projectorHidden = hidden }
        let sit = try SiT(c)
        do { try sit.store.load(state, strict: true) } catch let e as HasteError {
            throw HasteError.fileFormat(path: path, detail: "does not fit \(config?.model ?? flags.model ?? "SiT-XL/2") as configured:\n\(e)\nhint: check --model, --encoder-depth and --projector-embed-dims")
        }
        sit.store.setRequiresGrad(false)
        let name = config?.model ?? flags.model ?? "SiT-XL/2"
        return GenerationModel(sit: sit, pixelSpace: config?.isPixelSpace ?? false, latentScale: config?.latentScale ?? 0.18215,
                               name: name)
    }

    /// Tensors and metadata of a safetensors checkpoint (PyTorch pickles go through `ReferenceCheckpoint`).
    static func stateDict(_ path: String) throws -> ([String: Tensor], [String: String]) {
        guard FileManager.default.fileExists(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "--ckpt must name a checkpoint: a haste run's checkpoints/<step>.safetensors, or a reference HASTE/REPA .pt.")
        }
        let file = try SafetensorsFile(path: path)
        return (try file.tensors(), file.metadata)
    }

    /// The training config stored in a checkpoint's metadata.
    static func trainConfig(yaml: String, path: String) throws -> TrainConfig {
        let tmp = NSTemporaryDirectory() + "haste-ckpt-config-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).yaml"
        try yaml.write(toFile: tmp, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        do { return try TrainConfig.load(file: tmp) } catch let e as HasteError {
            throw HasteError.fileFormat(path: path, detail: "its stored config does not load: \(e)")
        }
    }

    /// SiT sizes: from the checkpoint's config when present, else from the flags; input channels, input size
    /// and class count are read off the weights themselves (x_embedder, pos_embed, the label table).
    static func sitConfig(_ state: [String: Tensor], config: TrainConfig?, flags: Flags, path: String) throws -> SiTConfig {
        guard let patch = state["x_embedder.proj.weight"], patch.rank == 4, let pos = state["pos_embed"], pos.rank == 3,
              let table = state["y_embedder.embedding_table.weight"], table.rank == 2 else {
            throw HasteError.fileFormat(path: path, detail: "not a SiT state dict (x_embedder.proj.weight, pos_embed or y_embedder.embedding_table.weight missing)")
        }
        let grid = Int(Double(pos.shape[1]).squareRoot().rounded())
        let sampleShape = [patch.shape[1], grid * patch.shape[2], grid * patch.shape[2]]
        let classes = table.shape[0] - 1
        if let n = flags.numClasses, config == nil, n != classes {
            throw HasteError.config(key: "num-classes", detail: "\(n), but the checkpoint's label table has \(classes) classes + 1 null row")
        }
        if let r = flags.resolution, config == nil, r / 8 != sampleShape[1] {
            throw HasteError.config(key: "resolution", detail: "\(r) needs \(r / 8)-px latents; the checkpoint's model takes \(sampleShape[1])")
        }
        if let config { return try config.studentConfig(sampleShape: sampleShape, numClasses: classes) }
        var c = try SiTConfig.named(flags.model ?? "SiT-XL/2")
        (c.inChannels, c.inputSize, c.numClasses) = (sampleShape[0], sampleShape[1], classes)
        c.encoderDepth = flags.encoderDepth ?? 8
        c.qkNorm = flags.qkNorm ?? (state["blocks.0.attn.q_norm.weight"] != nil)
        if let dims = flags.projectorEmbedDims, dims != projectorDims(state) {
            throw HasteError.config(key: "projector-embed-dims", detail: "\(dims), but the checkpoint's projectors output \(projectorDims(state)) (HASTE checkpoints: 768)")
        }
        return c
    }

    /// Output widths of `projectors.{j}.4` in order (REPA z_dims), read off the weights.
    static func projectorDims(_ state: [String: Tensor]) -> [Int] {
        var dims: [Int] = []
        while let w = state["projectors.\(dims.count).4.weight"] { dims.append(w.shape[0]) }
        return dims
    }
}
