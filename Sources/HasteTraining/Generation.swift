import Foundation
import HasteDiffusion
import HasteIO
import HasteModels
import HasteTensor

/// `haste generate`'s settings: generate.py's flags and defaults (spec/sampling.md §5), plus sharding.
public struct GenerateOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable { case ode, sde }

    public var sampleDir = "samples"
    public var numFidSamples = 50_000
    public var perProcBatchSize = 32
    public var mode = Mode.ode
    public var numSteps = 50
    public var heun = false
    public var cfgScale = 1.5
    public var guidanceLow = 0.0
    public var guidanceHigh = 1.0
    public var pathType = PathType.linear
    public var globalSeed: UInt64 = 0
    public var vae = "ema"                  // ema | mse (ft-ema, ft-mse)
    public var vaeBatch = 4                 // images per VAE decode call (memory bound)
    /// The sampler's model and the VAE decoder run their GEMMs in this precision (HasteTensor Ops/Precision.swift).
    public var precision = ComputePrecision.float32
    /// This process does samples shard.index, shard.index + shard.count, …
    public var shard = (index: 0, count: 1)
    /// Text-to-image with COCO captions: `<prefix>-` before the folder name (generate_t2i.py `--prefix`).
    public var prefix = ""
    public init() {}

    public func validate() throws {
        func bad(_ key: String, _ detail: String) -> HasteError { .config(key: key, detail: detail) }
        if cfgScale < 1 { throw bad("cfg-scale", "\(cfgScale) < 1 (the reference rejects it; 1 = no guidance)") }
        if numFidSamples < 1 { throw bad("num-fid-samples", "must be at least 1") }
        if perProcBatchSize < 1 { throw bad("per-proc-batch-size", "must be at least 1") }
        if numSteps < (mode == .sde ? 2 : 1) { throw bad("num-steps", "\(numSteps) is too few for \(mode.rawValue)") }
        if shard.count < 1 || shard.index < 0 || shard.index >= shard.count {
            throw bad("shard", "\(shard.index)/\(shard.count): expected i/n with 0 ≤ i < n")
        }
        if vaeBatch < 1 { throw bad("vae-batch", "must be at least 1") }
    }
}

/// Progress of a generation run, for a progress bar.
public struct GenerationProgress: Sendable {
    public let done: Int, total: Int
    public let elapsed: Double
    public init(done: Int, total: Int, elapsed: Double) { (self.done, self.total, self.elapsed) = (done, total, elapsed) }
    /// Images per second so far (this run's), and the seconds left at that rate.
    public var rate: Double { elapsed > 0 ? Double(done) / elapsed : 0 }
    public var eta: Double { rate > 0 ? Double(total - done) / rate : .infinity }
}

/// Class-conditional sample generation (reference generate.py; spec/sampling.md §5). Every sample's noise,
/// label and SDE increments come from its own stream seeded by (global seed, index) (`SampleNoise`), so the
/// set of PNGs does not depend on batch size, sharding or interruptions: a rerun skips the PNGs that exist,
/// `shard i/n` takes indices i, i + n, …, and the `.npz` is packed once all PNGs are present.
///
/// A text-to-image MMDiT is conditioned on `text` instead: sample i's caption comes from `TextConditioning.captions`
/// (a function of i), guidance runs against the features of "", and `<folder>.captions.jsonl` records each
/// sample's caption (spec/sampling.md §7).
public final class SampleGenerator {
    public let options: GenerateOptions
    public let model: GenerationModel
    let vae: AutoencoderKL?
    /// Captions and their encoder (text-to-image models), nil for class-conditional ones.
    public let text: TextConditioning?
    /// `<sample-dir>/<model>-<ckpt>-size-<res>-vae-<vae>-cfg-<cfg>-seed-<seed>-<mode>-high-<high>`, or with COCO
    /// captions `<sample-dir>/[<prefix>-]coco-size-<res>-vae-<vae>-cfg-<cfg>-seed-<seed>-<mode>` (generate_t2i.py).
    public let folder: String
    public var npzPath: String { folder + ".npz" }
    /// Text-to-image: which caption each sample was made from (`CaptionPlan.table`).
    public var captionsPath: String { folder + ".captions.jsonl" }
    /// Wall-clock seconds spent in the sampler and in VAE decoding, and the images they produced (this run).
    public private(set) var timings = (sampler: 0.0, decode: 0.0, images: 0)

    /// `vae` decodes a latent model's samples (nil is fine for packing only); pixel models ignore it.
    /// `checkpoint` names the folder. `text` is required for an MMDiT and refused for a SiT.
    public init(options: GenerateOptions, model: GenerationModel, vae: AutoencoderKL?, checkpoint: String,
                text: TextConditioning? = nil) throws {
        try options.validate()
        switch (model.network, text) {
        case (.sit, .some):
            throw HasteError.config(key: "prompt", detail: "\(checkpoint) holds a class-conditional \(model.name), which takes no text: drop --prompt/--prompts-file/--coco-captions, or pass a text-to-image (MMDiT) checkpoint")
        case (.mmdit, nil):
            throw HasteError.config(key: "prompt", detail: "\(checkpoint) holds a text-to-image \(model.name): give --prompt TEXT (repeatable), --prompts-file FILE or --coco-captions ANNOTATIONS.json")
        case (.mmdit(let m), .some(let t)) where m.config.contextDim != t.width:
            throw HasteError.config(key: "text-encoder", detail: "\(t.width)-wide text features for an MMDiT whose context dim is \(m.config.contextDim)")
        default: break
        }
        self.options = options
        self.model = model
        self.vae = model.pixelSpace ? nil : vae
        self.text = text
        let side = model.pixelSpace ? model.sampleShape[1] : model.sampleShape[1] * (vae?.config.downsamplingFactor ?? 8)   // KL-f8
        let vaeName = model.pixelSpace ? "none" : try VAELoader.shortName(options.vae)
        if text?.captions.isCOCO == true {
            let name = "coco-size-\(side)-vae-\(vaeName)-cfg-\(Self.pythonFloat(options.cfgScale))-seed-\(options.globalSeed)-\(options.mode.rawValue)"
            folder = options.sampleDir + "/" + (options.prefix.isEmpty ? "" : options.prefix + "-") + name
        } else {
            folder = options.sampleDir + "/" + SampleGenerator.folderName(
                model: model.name, checkpoint: checkpoint, resolution: side, vae: vaeName,
                cfg: options.cfgScale, seed: options.globalSeed, mode: options.mode.rawValue, high: options.guidanceHigh)
        }
    }

    /// The reference's folder name, floats in Python's `str()` spelling (cfg-1.5, high-0.72).
    public static func folderName(model: String, checkpoint: String, resolution: Int, vae: String, cfg: Double, seed: UInt64,
                                  mode: String, high: Double) -> String {
        var ckpt = (checkpoint as NSString).lastPathComponent
        for ext in [".safetensors", ".pt", ".pth"] where ckpt.hasSuffix(ext) { ckpt = String(ckpt.dropLast(ext.count)) }
        let m = model.replacingOccurrences(of: "/", with: "-")
        return "\(m)-\(ckpt)-size-\(resolution)-vae-\(vae)-cfg-\(pythonFloat(cfg))-seed-\(seed)-\(mode)-high-\(pythonFloat(high))"
    }

    /// Python's repr of a float: shortest round-trip digits, always with a '.0' or an exponent.
    static func pythonFloat(_ v: Double) -> String {
        let s = "\(v)"
        return s.contains(".") || s.contains("e") || s.contains("n") ? s : s + ".0"
    }

    public func pngPath(_ index: Int) -> String { folder + "/" + String(format: "%06d.png", index) }

    /// The indices this shard owns (all of 0..<num-fid-samples when unsharded).
    public var shardIndices: [Int] { Array(stride(from: options.shard.index, to: options.numFidSamples, by: options.shard.count)) }

    /// Sampler output for `indices` (float32 [n, C, S, S]: latents, or pixels in [−1, 1]).
    public func samples(_ indices: [Int]) -> Tensor {
        let streams = SampleNoise(seed: options.globalSeed, indices: indices)
        let z = streams.normal(model.sampleShape)                        // noise first, then labels (reference order)
        let (low, high) = (options.guidanceLow, options.guidanceHigh)
        let y: Tensor, guidance: Guidance
        switch model.network {
        case .sit(let sit):
            y = streams.labels(numClasses: sit.config.numClasses)
            guidance = Guidance(scale: options.cfgScale, low: low, high: high, nullClass: sit.config.numClasses)
        case .mmdit:
            let text = text!
            y = text.contexts(indices)
            guidance = Guidance(scale: options.cfgScale, low: low, high: high, nullContext: text.nullContext)
        }
        let velocity = model.velocity                                    // state on the host
        switch options.mode {
        case .ode:
            return Samplers.euler(velocity, noise: z, labels: y, steps: options.numSteps, guidance: guidance, heun: options.heun)
        case .sde:
            return Samplers.eulerMaruyama(velocity, noise: z, labels: y, steps: options.numSteps, guidance: guidance,
                                          path: options.pathType, streams: streams)
        }
    }

    /// uint8 RGB images [n, H, W, 3] for `indices`: decoded (latents / scale through the VAE) or taken as
    /// pixels, then (x + 1)/2 → clamp(255·x, 0, 255) → uint8 by truncation (generate.py); grey replicated.
    public func images(_ indices: [Int]) -> Tensor {
        require(model.pixelSpace || vae != nil, "SampleGenerator.images: a latent model needs the VAE")
        let t0 = Date()
        // The weights narrowed once for the batch's every model evaluation (bf16 on CUDA; the same values).
        let x = Trainer.autocast(options.precision, narrowing: model.store) { samples(indices) }
        let t1 = Date()
        let pixels = vae.map { vae in
            Trainer.autocast(options.precision, narrowing: vae.store) {
                vae.decodeLatents(x.to(vae.store.device), scale: model.latentScale, batch: options.vaeBatch)
            }
        } ?? x
        let u8 = noGrad {
            var u8 = ((pixels + 1.0) / 2.0 * 255.0).clamp(min: 0, max: 255).to(.uint8)     // (N, C, H, W)
            if u8.shape[1] == 1 { u8 = Tensor.cat([u8, u8, u8], axis: 1) }
            return u8.permuted([0, 2, 3, 1]).contiguous().to(.cpu)                              // (N, H, W, 3); the copy waits for the device
        }
        timings.sampler += t1.timeIntervalSince(t0)
        timings.decode += Date().timeIntervalSince(t1)
        timings.images += indices.count
        return u8
    }

    /// Generates this shard's missing PNGs (batches of per-proc-batch-size), then, with `pack`, packs the `.npz`
    /// if every PNG of 0..<num-fid-samples exists. Returns the `.npz` path, or nil while other shards still work
    /// (or without `pack`: MPI ranks leave packing to rank 0, after all are done).
    public func run(pack: Bool = true, progress: (GenerationProgress) -> Void = { _ in }) throws -> String? {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try writeCaptionTable()
        let pending = shardIndices.filter { !FileManager.default.fileExists(atPath: pngPath($0)) }
        if !pending.isEmpty && !model.pixelSpace && vae == nil {
            throw HasteError.config(key: "vae", detail: "a latent model needs the SD-VAE decoder (--vae-weights)")
        }
        let start = Date()
        var done = 0
        progress(GenerationProgress(done: 0, total: pending.count, elapsed: 0))
        let writer = BatchImageWriter()          // a batch's PNGs are written while the next one samples
        defer { try? writer.finish() }           // (an error already on its way: no write outlives the run)
        for first in stride(from: 0, to: pending.count, by: options.perProcBatchSize) {
            let batch = Array(pending[first..<min(pending.count, first + options.perProcBatchSize)])
            let imgs = images(batch)
            try writer.submit(imgs.scalars(as: UInt8.self), height: imgs.shape[1], width: imgs.shape[2], paths: batch.map(pngPath))
            done += batch.count
            progress(GenerationProgress(done: done, total: pending.count, elapsed: Date().timeIntervalSince(start)))
        }
        try writer.finish()
        guard pack, missing().isEmpty else { return nil }
        try SamplePacker.pack(folder: folder, count: options.numFidSamples, to: npzPath)
        return npzPath
    }

    /// Indices in 0..<num-fid-samples without a PNG yet (other shards' included).
    public func missing() -> [Int] {
        (0..<options.numFidSamples).filter { !FileManager.default.fileExists(atPath: pngPath($0)) }
    }
}

/// Packs `000000.png` … into the ADM sample batch: `arr_0`, uint8 [N, H, W, 3], streamed in index order into a
/// ZIP64-capable `.npz` written atomically (spec/sampling.md §5 step 6, spec/evaluation.md §3). The PNGs are decoded
/// in parallel, a window of 4 per thread (`--threads`) at a time (~1.2 ms an image of 256² on one core: a minute
/// for 50K one after another); the first bad file in index order is the error, as it would be one at a time.
public enum SamplePacker {
    public static func pack(folder: String, count: Int, to path: String) throws {
        require(count >= 1, "SamplePacker.pack: count \(count) < 1")
        func name(_ i: Int) -> String { folder + "/" + String(format: "%06d.png", i) }
        let first = try PNGImage.read(name(0))
        let writer = try NpzWriter(path: path)
        try writer.beginArray("arr_0", dtype: .uint8, shape: [count, first.height, first.width, 3])
        let window = 4 * max(1, Parallel.threads)                 // --threads (the cores, divided among local ranks)
        for start in stride(from: 0, to: count, by: window) {
            let n = min(window, count - start)
            var decoded = [Result<DecodedImage, Error>?](repeating: nil, count: n)
            decoded.withUnsafeMutableBufferPointer { d in
                let d = d
                DispatchQueue.concurrentPerform(iterations: n) { k in
                    d[k] = start + k == 0 ? .success(first) : Result { try PNGImage.read(name(start + k)) }
                }
            }
            for (k, r) in decoded.enumerated() {
                let img = try r!.get()
                guard img.height == first.height && img.width == first.width && img.channels == 3 else {
                    throw HasteError.fileFormat(path: name(start + k), detail: "is \(img.height)×\(img.width)×\(img.channels), the batch is \(first.height)×\(first.width)×3 (RGB)")
                }
                try writer.append(bytes: img.pixels)
            }
        }
        try writer.finish()
    }

    /// Tiles the first `count` PNGs of `folder` into one grid PNG (ImageGrid: √count columns, 2-px gaps).
    public static func grid(folder: String, count: Int, to path: String) throws {
        var images: [Tensor] = []
        for i in 0..<count {
            let img = try PNGImage.read(folder + "/" + String(format: "%06d.png", i))
            images.append(Tensor(img.pixels, shape: [1, img.height, img.width, 3]))
        }
        let x = Tensor.cat(images, axis: 0).permuted([0, 3, 1, 2]).to(.float32) / 127.5 - 1.0    // (N, 3, H, W) in [−1, 1]
        try ImageGrid.write(x, to: path)
    }
}
