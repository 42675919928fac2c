import HasteModels
import HasteNN
import HasteTensor
import HasteTraining

/// The rows of `haste bench train`: SiT-S/2 and SiT-B/2 on 4×32×32 latents (256 tokens) at batch 4 and 16,
/// (a) denoising loss only, (b) "+align": HASTE's projection (coeff 0.5) and attention (coeff 0.5) alignment
/// against a randomly initialised DINOv2-B/14 teacher at 224 px, student blocks 4…7 ↔ teacher 8…11,
/// min(student, teacher) heads (the checks' tiny SiT: blocks 0…3 ↔ 8…11 of DINOv2-B at 112 px, 8² tokens as its
/// own), and (c) "+stopped": the same HASTE run after early-stop-point (no teacher pass:
/// skip-teacher-after-stop; alignment losses off; the projectors, still in the model, get no AdamW update); plus
/// the teacher's forward alone at batch 16. Everything else is the `TrainConfig` default (linear path, uniform t,
/// cfg-prob 0.1, AdamW lr 1e-4 without decay, clip 1.0) with `--mixed-precision`. Each step is the Trainer's
/// (`TrainingStep`, HasteTraining): zero-grad, teacher pass (preprocess included), draws, `Objective.loss` under
/// autocast, backward (fp16: scaled), unscale, `clipGradNorm`, `AdamW.step` (no EMA). Each row also reports its
/// analytic FLOPs per step (`flops`) as a FLOP rate, and its peak memory. Scripts/bench_torch_train.py has the
/// plain and +align rows; Scripts/bench_gpu_torch.py all three at the GPU sizes. With `--grad-checkpointing` every
/// training row runs with grad-checkpointing on and its name ends in " +ckpt".
enum TrainBenchmarks {
    static let models = ["SiT-S/2", "SiT-B/2"], batches = [4, 16]
    static let latent = [4, 32, 32], imageSide = 256, numClasses = 1000, teacherBatch = 16
    static let teacherRow = "DINOv2-B fwd bs\(teacherBatch)"

    /// The three steps a HASTE run takes: denoising only (no teacher), aligning, and after the early stop.
    enum Kind: String, CaseIterable {
        case plain = "", align = " +align", stopped = " +stopped"
        var usesTeacherConfig: Bool { self != .plain }
    }

    static func name(_ model: String, _ batch: Int, kind: Kind, checkpointing: Bool = false) -> String {
        "\(model) bs\(batch)" + kind.rawValue + (checkpointing ? " +ckpt" : "")
    }
    static func name(_ model: String, _ batch: Int, align: Bool, checkpointing: Bool = false) -> String {
        name(model, batch, kind: align ? .align : .plain, checkpointing: checkpointing)
    }

    static var names: [String] { names(models: models, batches: batches) }
    static func names(models: [String], batches: [Int], checkpointing: Bool = false) -> [String] {
        cases(seed: 0, models: models, batches: batches, checkpointing: checkpointing).map(\.op)
    }

    /// Models, teacher and inputs on `device` (`Benchmark.run` waits for the device before reading the clock).
    /// `models` and `batches` default to the CPU rows above (Scripts/gpu_check.sh asks for SiT-XL/2 at 64, 256).
    static func cases(seed: UInt64, device: Device = .cpu, models: [String] = models, batches: [Int] = batches,
                      checkpointing: Bool = false, mixedPrecision: String = "no") -> [BenchCase] {
        var rows: [BenchCase] = []
        for model in models {
            for batch in batches {
                for kind in Kind.allCases {
                    let shape = "x [\(batch), 4, 32, 32]" + (kind.usesTeacherConfig ? " + images [\(batch), 3, 256, 256]" : "")
                    rows.append(BenchCase(op: name(model, batch, kind: kind, checkpointing: checkpointing), shape: shape,
                                          work: .images(Double(batch)), stepFLOPs: try? flops(model: model, batch: batch, kind: kind, seed: seed)) {
                        try step(model: model, batch: batch, kind: kind, seed: seed, device: device, checkpointing: checkpointing,
                                 mixedPrecision: mixedPrecision)
                    })
                }
            }
        }
        let teacherFLOPs = try? config(model: "SiT-B/2", batch: teacherBatch, align: true, seed: seed).1.teacher?.forwardFLOPs(batch: teacherBatch)
        rows.append(BenchCase(op: teacherRow, shape: "images [\(teacherBatch), 3, 256, 256] → 224, logits of 8…11",
                              work: .images(Double(teacherBatch)), stepFLOPs: teacherFLOPs) {
            try teacherForward(seed: seed, device: device, mixedPrecision: mixedPrecision)
        })
        return rows
    }

    /// The resolved config of a row: `TrainConfig` defaults with the row's model, batch, teacher and precision.
    /// `haste bench train --recompute-mlp-activation`: every row's config key recompute-mlp-activation.
    nonisolated(unsafe) static var recomputeMLPActivation = false

    static func config(model: String, batch: Int, align: Bool, seed: UInt64, checkpointing: Bool = false,
                       mixedPrecision: String = "no") throws -> (TrainConfig, ResolvedModels) {
        var config = TrainConfig()
        config.gradCheckpointing = checkpointing
        config.recomputeMlpActivation = recomputeMLPActivation
        CostSweep.apply(model: model, to: &config)                  // the named SiT, or the sweep's tiny model
        config.batchSize = batch
        config.encType = align ? "dinov2-vit-b" : "none"
        if align && model == CostSweep.tinyModel {      // its 8² tokens and 6 blocks: a 112-px teacher, blocks 0…3
            (config.teacherGrid, config.attnStudentLayers) = (8, [0, 1, 2, 3])
        }
        config.seed = Int(seed)
        config.mixedPrecision = mixedPrecision
        return (config, try config.resolveModels(sampleShape: latent, numClasses: numClasses))
    }

    /// Analytic FLOPs of one step of a row (`TrainConfig.stepFLOPs`): the SiT's training FLOPs (its projectors while
    /// aligning), plus the teacher's forward when the row runs it (+align; +stopped only without skip-teacher-after-stop).
    static func flops(model: String, batch: Int, kind: Kind, seed: UInt64 = 0) throws -> Double {
        let (config, resolved) = try config(model: model, batch: batch, align: kind.usesTeacherConfig, seed: seed)
        return try config.stepFLOPs(models: resolved, batch: batch, align: kind == .align, runsTeacher: runsTeacher(kind, config))
    }

    /// Whether a row's step runs the teacher (`Trainer.teacherOutput`'s rule).
    static func runsTeacher(_ kind: Kind, _ config: TrainConfig) -> Bool {
        kind == .align || (kind == .stopped && !config.skipTeacherAfterStop)
    }

    /// A frozen teacher with its random initialisation (speed does not depend on the values), its weights packed
    /// for the CPU GEMM in float32 as the Trainer's are.
    static func teacher(_ resolved: ResolvedModels, seed: UInt64, device: Device = .cpu, precision: ComputePrecision = .float32) -> DINOv2? {
        resolved.teacher.map {
            let t = DINOv2($0, seed: seed &+ 1, frozen: true)
            t.store.setRequiresGrad(false)
            t.store.move(to: device)
            return precision == .float32 ? t.prepackedForInference() : t
        }
    }

    /// The row's `TrainingStep` on random data: latents, labels and (teacher rows) uint8 images, on `device`.
    static func trainingStep(model: String, batch: Int, kind: Kind, seed: UInt64, device: Device = .cpu, checkpointing: Bool = false,
                             mixedPrecision: String = "no") throws -> (TrainingStep, Batch) {
        let (config, resolved) = try config(model: model, batch: batch, align: kind.usesTeacherConfig, seed: seed,
                                            checkpointing: checkpointing, mixedPrecision: mixedPrecision)
        let student = try SiT(try resolved.student.sitConfig(for: "this benchmark"), seed: seed)
        student.store.move(to: device)                          // before the optimizer allocates its moments there
        let precision = ComputePrecision(flag: mixedPrecision, device: device) ?? .float32
        let teacher = runsTeacher(kind, config) ? teacher(resolved, seed: seed, device: device, precision: precision) : nil
        let optimizer = AdamW(store: student.store, lr: config.learningRate, betas: (config.adamBeta1, config.adamBeta2),
                              eps: config.adamEpsilon, weightDecay: config.adamWeightDecay)
        let data = Batch(images: kind.usesTeacherConfig ? randomImages(batch, seed: seed &+ 2) : nil,
                         x0: Tensor.randn([batch] + latent, seed: seed &+ 3), moments: false,
                         labels: Tensor((0..<batch).map { Int64($0 * 37 % numClasses) }, shape: [batch])).to(device)
        return (TrainingStep(config: config, models: resolved, student: student, teacher: teacher, optimizer: optimizer,
                             precision: precision, align: kind == .align), data)
    }

    static func step(model: String, batch: Int, kind: Kind, seed: UInt64, device: Device = .cpu,
                     checkpointing: Bool = false, mixedPrecision: String = "no") throws -> () -> Void {
        let (step, data) = try trainingStep(model: model, batch: batch, kind: kind, seed: seed, device: device,
                                            checkpointing: checkpointing, mixedPrecision: mixedPrecision)
        let generator = RandomGenerator(seed: seed &+ 4)
        return { step(data, generator: generator) }
    }

    /// `Objective.teacherPass`: preprocess (÷255, ImageNet mean/std, bicubic 256 → 224) and the no-grad forward
    /// returning the final-norm patch tokens and the logits of the four aligned blocks.
    static func teacherForward(seed: UInt64, device: Device = .cpu, mixedPrecision: String = "no") throws -> () -> Void {
        let (config, resolved) = try config(model: "SiT-B/2", batch: teacherBatch, align: true, seed: seed)
        let precision = ComputePrecision(flag: mixedPrecision, device: device) ?? .float32
        let teacher = teacher(resolved, seed: seed, device: device, precision: precision)!
        let objective = Objective(config: config, models: resolved)
        let images = randomImages(teacherBatch, seed: seed &+ 2).to(device)
        return { _ = Autocast.run(precision) { objective.teacherPass(teacher, images: images) } }
    }

    /// uint8 images [B, 3, 256, 256], uniform over 0…255.
    static func randomImages(_ batch: Int, seed: UInt64) -> Tensor {
        let shape = [batch, 3, imageSide, imageSide]
        let u = Tensor.rand(shape, seed: seed).scalars(as: Float.self)
        return Tensor(u.map { UInt8(Swift.min(255, $0 * 256)) }, shape: shape)
    }
}
