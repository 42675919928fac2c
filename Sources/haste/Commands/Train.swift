import ArgumentParser
import Foundation
import HasteDistributed
import HasteTensor
import HasteTraining

/// `haste train`: the reference train.py flags, a config file, and `--set key=value` for every other key.
/// Precedence: defaults < config file < --set < named flags.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train SiT (class labels) or MMDiT (captions) with the HASTE objective (attention + projection alignment, early stop).",
        discussion: """
        Keys are the reference train.py flag names; `haste train --print-config` lists them all with their values.
        Example (the paper's run; --enc-weights takes the torch-hub .pth as it is, or a safetensors copy):
          haste train --model SiT-XL/2 --enc-type dinov2-vit-b --enc-weights dinov2_vitb14_pretrain.pth \\
            --data-dir data/imagenet256 --proj-coeff 0.5 --attn-coeff 0.5 --early-stop-point 250000 \\
            --max-train-steps 2500000 --exp-name sit-xl-2-haste
        Text-to-image: an MMDiT model on caption data (dataset coco: `haste preprocess --coco` features; or the
        offline demo's fashion-mnist-captions), e.g. haste train configs/mmdit-xl-2-haste.yaml, haste train configs/demo-t2i.yaml.
        """)

    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var distributed: DistributedOptions
    @OptionGroup(title: "Reference runtime flags") var reference: ReferenceTrainFlags
    @Argument(help: "A config file (YAML or JSON), e.g. configs/demo.yaml.") var config: String?
    @Option(name: .customLong("config"), help: "Same as the positional config file.") var configFlag: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override any config key.", valueName: "key=value"))
    var overrides: [String] = []
    @Flag(help: "Print the resolved config and exit.") var printConfig = false

    @Option var model: String?
    @Option var encType: String?
    @Option var encWeights: String?
    @Option(parsing: .unconditional) var projCoeff: String?
    @Option(parsing: .unconditional) var attnCoeff: String?
    @Option(parsing: .unconditional) var encoderDepth: String?
    @Option(parsing: .unconditional) var earlyStopPoint: String?
    @Option(parsing: .unconditional) var batchSize: String?
    @Option(parsing: .unconditional) var maxTrainSteps: String?
    @Option(parsing: .unconditional) var epochs: String?
    @Option(parsing: .unconditional) var checkpointingSteps: String?
    @Option(parsing: .unconditional) var samplingSteps: String?
    @Option(parsing: .unconditional) var learningRate: String?
    @Option(parsing: .unconditional) var adamBeta1: String?
    @Option(parsing: .unconditional) var adamBeta2: String?
    @Option(parsing: .unconditional) var adamWeightDecay: String?
    @Option(parsing: .unconditional) var adamEpsilon: String?
    @Option(parsing: .unconditional) var maxGradNorm: String?
    @Option(help: ArgumentHelp(valueName: "linear|cosine")) var pathType: String?
    @Option(help: ArgumentHelp(valueName: "v")) var prediction: String?
    @Option(help: ArgumentHelp(valueName: "uniform|lognormal")) var weighting: String?
    @Option(parsing: .unconditional) var cfgProb: String?
    @Option var outputDir: String?
    @Option var expName: String?
    @Option var dataDir: String?
    @Option(parsing: .unconditional, help: "A step number, or `latest` (-1).") var resumeStep: String?
    @Option(parsing: .unconditional, help: "Same as --resume-step (e.g. --resume latest).") var resume: String?
    @Option(parsing: .unconditional) var gradientAccumulationSteps: String?
    @Option(parsing: .unconditional) var resolution: String?
    @Option(parsing: .unconditional) var numClasses: String?
    @Option(help: ArgumentHelp("no = float32; bf16 / fp16 = GEMMs, convolutions and attention in bf16 / fp16 with float32 accumulation, fp16 with dynamic loss scaling (torch GradScaler; initial scale: --set fp16-init-scale=N); auto (default) = bf16 on CUDA, no on the CPU.", valueName: "no|fp16|bf16|auto")) var mixedPrecision: String?
    @Option(help: "SD-VAE ft-MSE decoding preview grids of latent models.") var vaeWeights: String?
    @Flag(inversion: .prefixedNo, help: "Recompute each transformer block's activations in backward instead of keeping them: less memory, each block runs forward twice (key grad-checkpointing, default off).")
    var gradCheckpointing: Bool?
    @Flag(inversion: .prefixedNo, help: "bf16 on CUDA: recompute each MLP's activation output in backward instead of keeping it (one [tokens, 4·hidden] bf16 tensor less per block until its backward, one more elementwise pass; key recompute-mlp-activation, default off).")
    var recomputeMlpActivation: Bool?

    var namedFlags: [(String, String?)] {
        [("model", model), ("enc-type", encType), ("enc-weights", encWeights), ("proj-coeff", projCoeff),
         ("attn-coeff", attnCoeff), ("encoder-depth", encoderDepth), ("early-stop-point", earlyStopPoint),
         ("batch-size", batchSize), ("max-train-steps", maxTrainSteps), ("epochs", epochs),
         ("checkpointing-steps", checkpointingSteps), ("sampling-steps", samplingSteps), ("learning-rate", learningRate),
         ("adam-beta1", adamBeta1), ("adam-beta2", adamBeta2), ("adam-weight-decay", adamWeightDecay),
         ("adam-epsilon", adamEpsilon), ("max-grad-norm", maxGradNorm), ("path-type", pathType), ("prediction", prediction),
         ("weighting", weighting), ("cfg-prob", cfgProb), ("output-dir", outputDir), ("exp-name", expName),
         ("data-dir", dataDir), ("resume-step", (resumeStep ?? resume).map { $0 == "latest" ? "-1" : $0 }),
         ("gradient-accumulation-steps", gradientAccumulationSteps), ("resolution", resolution),
         ("num-classes", numClasses), ("mixed-precision", mixedPrecision), ("vae-weights", vaeWeights),
         ("grad-checkpointing", gradCheckpointing.map { "\($0)" }),
         ("recompute-mlp-activation", recomputeMlpActivation.map { "\($0)" }), ("seed", runtime.seedFlag.map { "\($0)" })]
        + reference.configPairs
    }

    func validate() throws {
        if let bad = overrides.first(where: { !$0.contains("=") }) {
            throw ValidationError("--set expects key=value, got '\(bad)'")
        }
        if config != nil && configFlag != nil { throw ValidationError("give the config file once (positional or --config)") }
        if resumeStep != nil && resume != nil { throw ValidationError("give --resume-step or --resume, not both") }
    }

    func run() throws {
        let (comm, device) = try runtime.openJob(allowTF32: reference.allowTf32 == true)
        if comm.isWriter { reference.notes(device: runtime.device).forEach(FlagCheck.note) }
        try Job.run(comm) { job in try train(comm, device, distributed.collectives(comm, device, job)) }
    }

    private func train(_ comm: Communicator, _ device: Device, _ collectives: DeviceCollectives?) throws {
        let pairs = overrides.map { o -> (key: String, value: String) in
            let i = o.firstIndex(of: "=")!
            return (String(o[..<i]), String(o[o.index(after: i)...]))
        } + namedFlags.compactMap { k, v in v.map { (key: k, value: $0) } }
        let resolved = try TrainConfig.load(file: config ?? configFlag, overrides: pairs)
        if comm.isWriter { idleAlignmentNote(resolved).map(FlagCheck.note) }
        if printConfig { if comm.isWriter { print(try resolved.yaml(), terminator: "") }; return }
        let console = ConsoleObserver()
        let trainer = try Trainer(config: resolved, observer: console, comm: comm, device: device, collectives: collectives)
        if (comm.size > 1 || collectives != nil) && comm.isWriter {
            let sums = collectives.map { "gradients summed on the GPUs with \($0.summary)" }
                ?? (device == .cpu ? "gradients summed with MPI" : "gradients summed through host memory with MPI")
            console.message("data-parallel over \(comm.size) ranks (\(comm.localSize) on this node), \(runtime.threads) threads each; "
                            + "global batch \(resolved.batchSize); \(sums)")
        }
        try trainer.train()
        console.finish()
        if comm.isWriter { print("\(trainer.run.root)") }
    }
}

/// Prints progress on one rewritten line (a terminal) or every 10 s (a log), lasting messages on their own lines.
final class ConsoleObserver: TrainingObserver {
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private var last = Date.distantPast
    private var pending = false

    func progress(_ line: String) {
        let now = Date()
        if isTerminal {
            guard now.timeIntervalSince(last) > 0.1 else { return }
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            pending = true
        } else {
            guard now.timeIntervalSince(last) > 10 else { return }
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
        last = now
    }

    func message(_ line: String) {
        if pending { FileHandle.standardError.write(Data("\n".utf8)); pending = false }
        FileHandle.standardError.write(Data("\(line)\n".utf8))
    }

    func finish() { if pending { FileHandle.standardError.write(Data("\n".utf8)); pending = false } }
}
