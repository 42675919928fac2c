import Foundation
import HasteDiffusion
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

/// What `haste generate` samples from: a class-conditional SiT or a text-conditioned MMDiT with its weights, the
/// sample shape it works in, and whether its samples are pixels or SD-VAE latents (spec/sampling.md §5 step 2, §7).
public struct GenerationModel {
    /// The network and what it is conditioned on.
    public enum Network {
        /// Class labels (N), null class = numClasses.
        case sit(SiT)
        /// Text contexts (N, L, contextDim), null = the features of "".
        case mmdit(MMDiT)
    }
    public let network: Network
    /// [C, S, S]: latents [4, res/8, res/8], or pixels (the Fashion-MNIST demo: [1, 32, 32]).
    public let sampleShape: [Int]
    public let pixelSpace: Bool
    /// latents = z · scale (HASTE: 0.18215, bias 0); unused in pixel space.
    public let latentScale: Double
    /// The model's name for the sample folder (`--model`, or the checkpoint config's `model`).
    public let name: String

    public init(sit: SiT, pixelSpace: Bool, latentScale: Double = 0.18215, name: String) {
        self.init(.sit(sit), pixelSpace: pixelSpace, latentScale: latentScale, name: name)
    }

    public init(mmdit: MMDiT, pixelSpace: Bool, latentScale: Double = 0.18215, name: String) {
        self.init(.mmdit(mmdit), pixelSpace: pixelSpace, latentScale: latentScale, name: name)
    }

    init(_ network: Network, pixelSpace: Bool, latentScale: Double, name: String) {
        self.network = network
        switch network {
        case .sit(let m): sampleShape = [m.config.inChannels, m.config.inputSize, m.config.inputSize]
        case .mmdit(let m): sampleShape = [m.config.inChannels, m.config.inputSize, m.config.inputSize]
        }
        self.pixelSpace = pixelSpace
        self.latentScale = latentScale
        self.name = name
    }

    /// The class-conditional SiT, or nil for a text-to-image model.
    public var sit: SiT? { if case .sit(let m) = network { m } else { nil } }
    /// The text-to-image MMDiT, or nil for a class-conditional model.
    public var mmdit: MMDiT? { if case .mmdit(let m) = network { m } else { nil } }
    public var store: ParameterStore {
        switch network {
        case .sit(let m): m.store
        case .mmdit(let m): m.store
        }
    }

    /// The network as the samplers call it (state on the host, the model on its device): y are labels for SiT,
    /// contexts for MMDiT.
    public var velocity: VelocityModel {
        switch network {
        case .sit(let m): Samplers.onDevice(m.store.device) { x, t, y in m(x, t: t, y: y).velocity }
        case .mmdit(let m): Samplers.onDevice(m.store.device) { x, t, y in m(x, t: t, context: y).velocity }
        }
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
    /// reference HASTE/REPA `.pt` (train.py or train_t2i.py), or a plain SiT or MMDiT state dict — an MMDiT when
    /// it has `context_embedder.weight`. `select` picks `ema` (default, as generate.py) or `model` weights.
    /// Weights with NaN/Inf are refused, and the model's size is settled from the file and the flags before the
    /// model is built; it is loaded on the CPU and then moved to `device`.
    public static func load(_ path: String, select: String = "ema", flags: Flags = Flags(), device: Device = .cpu) throws -> GenerationModel {
        guard ["ema", "model"].contains(select) else {
            throw HasteError.config(key: "ckpt-select", detail: "'\(select)' is not ema or model")
        }
        let ckpt = try GenerationCheckpoint(path: path, select: select)
        try ckpt.requireFinite()
        let network: Network, name: String
        if ckpt.isMMDiT {
            let (c, n) = try ckpt.mmditConfig(flags: flags)
            (network, name) = (.mmdit(try MMDiT(c)), n)
        } else {
            let (c, n) = try ckpt.sitConfig(flags: flags)
            (network, name) = (.sit(try SiT(c)), n)
        }
        let model = GenerationModel(network, pixelSpace: ckpt.trainConfig?.isPixelSpace ?? false,
                                    latentScale: ckpt.trainConfig?.latentScale ?? 0.18215, name: name)
        do { try model.store.load(ckpt.state, strict: true) } catch let e as HasteError {
            throw HasteError.fileFormat(path: path, detail: "does not fit \(name) as configured:\n\(e)\nhint: check --model, --encoder-depth and --projector-embed-dims")
        }
        model.store.setRequiresGrad(false)
        model.store.move(to: device)
        return model
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
