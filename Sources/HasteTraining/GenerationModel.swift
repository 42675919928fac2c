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

    /// Flags that describe the model: needed only where the file does not say (a plain state dict does not
    /// record its head count or encoder depth); where it does, they must agree with it (`GenerationCheckpoint`).
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
    /// metadata), a safetensors file with `ema.`/`model.` prefixes (a converted reference checkpoint), a
    /// reference HASTE/REPA `.pt`, or a plain SiT state dict. `select` picks `ema` (default, as generate.py) or
    /// `model` weights. Weights with NaN/Inf are refused, and the model's size is settled from the file and
    /// the flags before the model is built; it is loaded on the CPU and then moved to `device`.
    public static func load(_ path: String, select: String = "ema", flags: Flags = Flags(), device: Device = .cpu) throws -> GenerationModel {
        guard ["ema", "model"].contains(select) else {
            throw HasteError.config(key: "ckpt-select", detail: "'\(select)' is not ema or model")
        }
        let ckpt = try GenerationCheckpoint(path: path, select: select)
        try ckpt.requireFinite()
        let (c, name) = try ckpt.sitConfig(flags: flags)
        let sit = try SiT(c)
        do { try sit.store.load(ckpt.state, strict: true) } catch let e as HasteError {
            throw HasteError.fileFormat(path: path, detail: "does not fit \(name) as configured:\n\(e)\nhint: check --model, --encoder-depth and --projector-embed-dims")
        }
        sit.store.setRequiresGrad(false)
        sit.store.move(to: device)
        let config = ckpt.trainConfig
        return GenerationModel(sit: sit, pixelSpace: config?.isPixelSpace ?? false, latentScale: config?.latentScale ?? 0.18215, name: name)
    }

    /// The training config stored in a checkpoint's metadata.
    static func trainConfig(yaml: String, path: String) throws -> TrainConfig {
        let tmp = NSTemporaryDirectory() + "haste-ckpt-config-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).yaml"
        try yaml.write(toFile: tmp, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        do { return try TrainConfig.load(file: tmp, resolvePaths: false) } catch let e as HasteError {
            throw HasteError.fileFormat(path: path, detail: "its stored config does not load: \(e)")
        }
    }
}
