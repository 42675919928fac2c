import ArgumentParser
import Foundation
import HasteDiffusion
import HasteCUDA
import HasteDistributed
import HasteIO
import HasteModels
import HasteTensor
import HasteTraining

/// `haste generate`: generate.py's flags (spec/sampling.md §5): PNGs plus the ADM `.npz` (`arr_0`, uint8 NHWC),
/// whose path is the last line printed. Sharding (`--shard i/n`) and resuming need no coordination: each
/// sample depends only on (seed, index), existing PNGs are skipped, and the shard that completes the set packs.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sample a trained SiT (classes) or MMDiT (prompts) into PNGs and an ADM .npz batch (ODE/SDE, CFG with a guidance interval).",
        discussion: """
        HASTE's evaluation setting (SDE, 250 steps, CFG 1.65 on t ≤ 0.72):
          haste generate --ckpt runs/exp/checkpoints/2500000.safetensors --vae-weights sd-vae-ft-ema.safetensors \\
            --mode sde --num-steps 250 --cfg-scale 1.65 --guidance-high 0.72 --per-proc-batch-size 64
        Split the work: run `--shard 0/2` and `--shard 1/2` (any machines sharing --sample-dir), or start ranks with
        `mpirun -np 2 haste generate …` (rank r is shard r/2; rank 0 writes the .npz); rerun a killed run with the
        same flags to resume.
        Text-to-image (an MMDiT checkpoint): give --prompt TEXT (repeatable), --prompts-file FILE or --coco-captions
        ANNOTATIONS.json, and the CLIP text encoder (--text-encoder; a run's own text_encoder.safetensors is found):
          haste generate --ckpt runs/t2i/checkpoints/0002000.safetensors --prompt "a photo of a sneaker" --prompt "a bag"
          haste generate --ckpt exps/t2i/checkpoints/0150000.pt --coco-captions annotations/captions_val2014.json \\
            --text-encoder clip-vit-large-patch14/ --vae-weights sd-vae-ft-ema/ --mode sde --num-steps 250 --cfg-scale 2.25
        """)

    @OptionGroup var runtime: RuntimeOptions
    @Option(help: "Checkpoint: a haste run's checkpoints/<step>.safetensors, or a converted reference checkpoint.")
    var ckpt: String?
    @Option(name: .customLong("ckpt-select"), help: ArgumentHelp("Which weights of a training checkpoint.", valueName: "ema|model"))
    var ckptSelect = "ema"
    @Option(help: "Model size, e.g. SiT-XL/2. Optional: read off the checkpoint, which it must match.") var model: String?
    @Option var sampleDir = "samples"
    @Option(parsing: .unconditional, help: """
        Samples to make (default 50000; with --coco-captions 30000, one per image in ascending id order; with prompts \
        4 per prompt). With --prompt/--prompts-file sample i gets prompt i mod P: the samples cycle through the prompts.
        """) var numFidSamples: Int?
    @Option(parsing: .unconditional) var perProcBatchSize = 32
    @Option(help: ArgumentHelp("Sampler.", valueName: "ode|sde")) var mode = "ode"
    @Option(parsing: .unconditional) var numSteps = 50
    @Flag(inversion: .prefixedNo, help: "Heun's corrector (ODE only: an error with --mode sde).") var heun = false
    @Option(parsing: .unconditional, help: "Classifier-free guidance scale, ≥ 1 (1 = no guidance).") var cfgScale = 1.5
    @Option(name: [.customLong("guidance-low"), .customLong("guidance_low")], parsing: .unconditional,
            help: "CFG applies for guidance-low ≤ t ≤ guidance-high, within [0, 1] (t = 1 is noise).") var guidanceLow = 0.0
    @Option(name: [.customLong("guidance-high"), .customLong("guidance_high")], parsing: .unconditional) var guidanceHigh = 1.0
    @Option(help: ArgumentHelp(valueName: "linear|cosine")) var pathType = "linear"
    @Option(parsing: .unconditional) var encoderDepth: Int?
    @Option(name: .customLong("projector-embed-dims"), help: "Comma-separated; default: read off the checkpoint.")
    var projectorEmbedDims: String?
    @Option(parsing: .unconditional, help: "Image side (checkpoints without a config; 256 or 512).") var resolution: Int?
    @Option(parsing: .unconditional) var numClasses: Int?
    @Flag(inversion: .prefixedNo, help: "QK LayerNorm; optional: read off the checkpoint, which it must match.") var qkNorm: Bool?
    @Option(name: .customLong("num-heads"), parsing: .unconditional, help: "Heads of a custom-width reference checkpoint (named sizes imply theirs).")
    var numHeads: Int?
    @Flag(inversion: .prefixedNo, help: "Accepted for generate.py compatibility; no effect: attention is always fused.")
    var fusedAttn: Bool?
    @Flag(inversion: .prefixedNo, help: "TF32 tensor cores for float32 GEMMs and attention products on CUDA (generate.py's default: on; its attention is two TF32 matmuls); no effect on the CPU.")
    var tf32: Bool?
    @Option(parsing: .unconditional, help: "Seed of every sample's noise (default 0; same as --seed).") var globalSeed: Int64?
    @Option(help: ArgumentHelp("SD-VAE decoder for latent models: stabilityai/sd-vae-ft-ema or -mse.", valueName: "ema|mse")) var vae = "ema"
    @Option(name: .customLong("vae-weights"), help: "The VAE's diffusion_pytorch_model.safetensors (file or folder).")
    var vaeWeights: String?
    @Option(help: ArgumentHelp("Do samples i, i+n, … of this run.", valueName: "i/n")) var shard = "0/1"
    @Flag(name: .customLong("pack-only"), help: "Only pack the existing PNGs into the .npz.") var packOnly = false
    @Option(parsing: .unconditional, help: "Also tile the first N samples into <folder>.grid.png (0 = no grid).") var grid = 0
    @Option(parsing: .upToNextOption, help: .hidden) var npzSelftest: [String] = []
    @Option(help: ArgumentHelp("Matrix products of the model and the VAE in bf16/fp16 with float32 accumulation; auto = bf16 on CUDA, no on the CPU.",
                               valueName: "no|fp16|bf16|auto")) var mixedPrecision = "no"
    @OptionGroup var text: TextPromptOptions

    func validate() throws {
        if npzSelftest.isEmpty && ckpt == nil { throw ValidationError("--ckpt is required") }
        guard ComputePrecision.flags.contains(mixedPrecision) else {
            throw ValidationError("--mixed-precision '\(mixedPrecision)': expected no, fp16, bf16 or auto")
        }
        try checkFlags()
        try text.validate()
        guard parsedShard != nil else { throw ValidationError("--shard expects i/n with 0 ≤ i < n, got '\(shard)'") }
        if !npzSelftest.isEmpty && (npzSelftest.count != 2 || Int(npzSelftest[0]) == nil) {
            throw ValidationError("--npz-selftest expects COUNT PATH")
        }
    }

    var parsedShard: (Int, Int)? {
        let parts = shard.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else { return nil }
        return (i, n)
    }

    func run() throws {
        let (comm, device) = try runtime.openJob(allowTF32: tf32 ?? true)   // generate.py: tf32 on unless --no-tf32
        if comm.isWriter { notes.forEach(FlagCheck.note) }
        try Job.run(comm) { try generate(comm, device) }
    }

    private func generate(_ comm: Communicator, _ device: Device) throws {
        if !npzSelftest.isEmpty { return try NpzSelftest.run(count: Int(npzSelftest[0])!, path: npzSelftest[1]) }
        if comm.size > 1 && shard != "0/1" {
            throw ValidationError("--shard \(shard) under mpirun/srun: the \(comm.size) ranks already split the samples; drop --shard")
        }
        let captions = try text.captionPlan(seed: globalSeed.map { UInt64($0) } ?? runtime.seed)
        var o = GenerateOptions()
        (o.sampleDir, o.numFidSamples, o.perProcBatchSize, o.numSteps) = (sampleDir, sampleCount(captions), perProcBatchSize, numSteps)
        o.prefix = text.prefix ?? ""
        (o.mode, o.heun, o.cfgScale, o.guidanceLow, o.guidanceHigh) = (GenerateOptions.Mode(rawValue: mode)!, heun, cfgScale, guidanceLow, guidanceHigh)
        (o.pathType, o.vae, o.shard) = (PathType(rawValue: pathType)!, vae, comm.size > 1 ? (comm.rank, comm.size) : parsedShard!)
        o.globalSeed = globalSeed.map { UInt64($0) } ?? runtime.seed
        o.precision = ComputePrecision(flag: mixedPrecision, device: device)!
        var flags = GenerationModel.Flags()
        (flags.model, flags.encoderDepth, flags.resolution, flags.numClasses) = (model, encoderDepth, resolution, numClasses)
        flags.qkNorm = qkNorm
        flags.numHeads = numHeads
        flags.projectorEmbedDims = try projectorEmbedDims.map { s in
            try s.split(separator: ",").map { guard let d = Int($0.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--projector-embed-dims expects integers like 768,1024") }; return d }
        }
        let loaded = try GenerationModel.load(ckpt!, select: ckptSelect, flags: flags, device: device)
        let conditioning = try text.conditioning(captions, model: loaded, checkpoint: ckpt!, count: o.numFidSamples,
                                                 device: device, verbose: comm.isWriter)
        let decoder = loaded.pixelSpace || packOnly ? nil : try VAELoader.load(vae, weights: vaeWeights, device: device)
        let generator = try SampleGenerator(options: o, model: loaded, vae: decoder, checkpoint: ckpt!, text: conditioning)
        try finish(generator, comm)
        // HASTE_CUDA_PROFILE=1: the GPU time per kernel and GEMM of the whole run (sampling and decoding).
        if let stats = (Backends.registered(device) as? CUDABackend)?.driver as? LaunchStatistics, stats.isCounting {
            FileHandle.standardError.write(Data("HASTE_CUDA_PROFILE, the whole run: \(stats.report(steps: 1))\n".utf8))
        }
    }

    /// Alone: generate (and pack when the set is complete). Ranks: each generates its shard silently but rank 0,
    /// then rank 0 packs once every rank is done.
    private func finish(_ generator: SampleGenerator, _ comm: Communicator) throws {
        guard comm.size > 1 else { return try finish(generator) }
        if !packOnly {
            let bar = comm.isWriter ? ProgressBar(label: "generate \(comm.size) ranks") : nil
            _ = try generator.run(pack: false) { bar?.update(done: $0.done, total: $0.total) }
            bar?.finish()
        }
        comm.barrier()
        guard comm.isWriter else { return }
        let missing = generator.missing()
        guard missing.isEmpty else {
            throw ValidationError("\(missing.count) of \(generator.options.numFidSamples) PNGs are missing in \(generator.folder) after all ranks finished "
                                  + "(first: \(String(format: "%06d.png", missing[0]))); do the ranks share --sample-dir?")
        }
        try SamplePacker.pack(folder: generator.folder, count: generator.options.numFidSamples, to: generator.npzPath)
        if let path = try generator.writePromptGrid(limit: grid > 0 ? grid : nil) {
            FileHandle.standardError.write(Data("grid with the prompts: \(path)\n".utf8))
        }
        print(generator.npzPath)
    }

    private func finish(_ generator: SampleGenerator) throws {
        let err = FileHandle.standardError
        if packOnly {
            let missing = generator.missing()
            guard missing.isEmpty else {
                throw ValidationError("\(missing.count) of \(generator.options.numFidSamples) PNGs are missing in \(generator.folder) (first: \(String(format: "%06d.png", missing[0]))); run the remaining shards first")
            }
            try SamplePacker.pack(folder: generator.folder, count: generator.options.numFidSamples, to: generator.npzPath)
            print(generator.npzPath)
            return
        }
        err.write(Data("sampling \(generator.model.name) (\(generator.model.pixelSpace ? "pixels" : "latents") \(generator.model.sampleShape)) into \(generator.folder)\n".utf8))
        let bar = ProgressBar(label: "generate")
        let npz = try generator.run { bar.update(done: $0.done, total: $0.total) }
        bar.finish()
        let t = generator.timings
        if t.images > 0 {
            let decode = generator.model.pixelSpace ? "no decode (pixel-space model)"
                : String(format: "decode %.2f s (%.3f img/s)", t.decode, Double(t.images) / t.decode)
            err.write(Data(String(format: "timing: %d images; sampler %.2f s (%.3f img/s); %@\n", t.images, t.sampler,
                                  Double(t.images) / t.sampler, decode).utf8))
        }
        let total = generator.options.numFidSamples
        if generator.text?.captions.isCOCO == false {
            if let path = try generator.writePromptGrid(limit: grid > 0 ? grid : nil) { err.write(Data("grid with the prompts: \(path)\n".utf8)) }
        } else if grid > 0, generator.missing().allSatisfy({ $0 >= grid }) {
            let path = generator.folder + ".grid.png"
            try SamplePacker.grid(folder: generator.folder, count: min(grid, total), to: path)
            err.write(Data("grid of \(min(grid, total)) samples: \(path)\n".utf8))
        }
        guard let npz else {
            let missing = generator.missing().count
            print("shard \(shard) done; \(missing) of \(total) samples still missing (other shards); the last shard to finish writes the .npz, or run again with --pack-only")
            return
        }
        print(npz)
    }
}

/// `--npz-selftest COUNT PATH`: streams COUNT 256×256×3 uint8 images through NpzWriter (no model), for
/// Scripts/check_big_npz.sh: pixel (i, y, x, c) = (i·131 + y·3 + x·5 + c·7) mod 256.
enum NpzSelftest {
    static func run(count: Int, path: String) throws {
        let side = 256, n = side * side * 3
        let writer = try NpzWriter(path: path)
        try writer.beginArray("arr_0", dtype: .uint8, shape: [count, side, side, 3])
        var image = [UInt8](repeating: 0, count: n)
        let bar = ProgressBar(label: "npz")
        for i in 0..<count {
            image.withUnsafeMutableBufferPointer { p in
                for y in 0..<side { for x in 0..<side { for c in 0..<3 {
                    p[(y * side + x) * 3 + c] = UInt8(truncatingIfNeeded: i &* 131 &+ y &* 3 &+ x &* 5 &+ c &* 7)
                } } }
            }
            try writer.append(bytes: image)
            if i % 500 == 499 || i == count - 1 {
                bar.update(done: i + 1, total: count)
            }
        }
        try writer.finish()
        bar.finish()
        print(path)
    }
}
