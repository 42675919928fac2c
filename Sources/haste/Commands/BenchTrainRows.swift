import HasteModels
import HasteNN
import HasteTensor
import HasteTraining

/// The rows of `haste bench train`: SiT-S/2 and SiT-B/2 on 4×32×32 latents (256 tokens) at batch 4 and 16,
/// (a) denoising loss only and (b) "+align": HASTE's projection (coeff 0.5) and attention (coeff 0.5)
/// alignment against a randomly initialised DINOv2-B/14 teacher at 224 px, student blocks 4…7 ↔ teacher
/// 8…11, min(student, teacher) heads; plus the teacher's forward alone at batch 16. Everything else is the
/// `TrainConfig` default (linear path, uniform t, cfg-prob 0.1, AdamW lr 1e-4 without decay, clip 1.0).
/// Each step is the Trainer's: zero-grad, teacher pass (preprocess included), draws, `Objective.loss`,
/// backward, `clipGradNorm`, `AdamW.step` (no EMA). Scripts/bench_torch_train.py has the same rows.
/// With `--grad-checkpointing` every training row runs with grad-checkpointing on and its name ends in " +ckpt".
enum TrainBenchmarks {
    static let models = ["SiT-S/2", "SiT-B/2"], batches = [4, 16]
    static let latent = [4, 32, 32], imageSide = 256, numClasses = 1000, teacherBatch = 16
    static let teacherRow = "DINOv2-B fwd bs\(teacherBatch)"

    static func name(_ model: String, _ batch: Int, align: Bool, checkpointing: Bool = false) -> String {
        "\(model) bs\(batch)" + (align ? " +align" : "") + (checkpointing ? " +ckpt" : "")
    }

    static var names: [String] { names(models: models, batches: batches) }
    static func names(models: [String], batches: [Int], checkpointing: Bool = false) -> [String] {
        cases(seed: 0, models: models, batches: batches, checkpointing: checkpointing).map(\.op)
    }

    /// Models, teacher and inputs on `device` (`Benchmark.run` waits for the device before reading the clock).
    /// `models` and `batches` default to the CPU rows above (Scripts/gpu_check.sh asks for SiT-B/2, SiT-XL/2 at 16, 64).
    static func cases(seed: UInt64, device: Device = .cpu, models: [String] = models, batches: [Int] = batches,
                      checkpointing: Bool = false) -> [BenchCase] {
        var rows: [BenchCase] = []
        for model in models {
            for batch in batches {
                for align in [false, true] {
                    let shape = "x [\(batch), 4, 32, 32]" + (align ? " + images [\(batch), 3, 256, 256]" : "")
                    rows.append(BenchCase(op: name(model, batch, align: align, checkpointing: checkpointing), shape: shape,
                                          work: .images(Double(batch))) {
                        try step(model: model, batch: batch, align: align, seed: seed, device: device, checkpointing: checkpointing)
                    })
                }
            }
        }
        rows.append(BenchCase(op: teacherRow, shape: "images [\(teacherBatch), 3, 256, 256] → 224, logits of 8…11",
                              work: .images(Double(teacherBatch))) {
            try teacherForward(seed: seed, device: device)
        })
        return rows
    }

    /// The resolved config of a row: `TrainConfig` defaults with the row's model, batch and teacher.
    static func config(model: String, batch: Int, align: Bool, seed: UInt64,
                       checkpointing: Bool = false) throws -> (TrainConfig, ResolvedModels) {
        var config = TrainConfig()
        config.gradCheckpointing = checkpointing
        CostSweep.apply(model: model, to: &config)                  // the named SiT, or the sweep's tiny model
        config.batchSize = batch
        config.encType = align ? "dinov2-vit-b" : "none"
        config.seed = Int(seed)
        return (config, try config.resolveModels(sampleShape: latent, numClasses: numClasses))
    }

    /// A frozen teacher with its random initialisation (speed does not depend on the values).
    static func teacher(_ resolved: ResolvedModels, seed: UInt64, device: Device = .cpu) -> DINOv2? {
        resolved.teacher.map {
            let t = DINOv2($0, seed: seed &+ 1, frozen: true)
            t.store.setRequiresGrad(false)
            t.store.move(to: device)
            return t
        }
    }

    /// `inspect` (`--saved-bytes`) sees each step's loss before its backward.
    static func step(model: String, batch: Int, align: Bool, seed: UInt64, device: Device = .cpu,
                     checkpointing: Bool = false, inspect: ((Tensor) -> Void)? = nil) throws -> () -> Void {
        let (config, resolved) = try config(model: model, batch: batch, align: align, seed: seed, checkpointing: checkpointing)
        let student = try SiT(try resolved.student.sitConfig(for: "this benchmark"), seed: seed)
        student.store.move(to: device)                          // before the optimizer allocates its moments there
        let teacher = teacher(resolved, seed: seed, device: device)
        let optimizer = AdamW(store: student.store, lr: config.learningRate, betas: (config.adamBeta1, config.adamBeta2),
                              eps: config.adamEpsilon, weightDecay: config.adamWeightDecay)
        let objective = Objective(config: config, models: resolved)
        let data = Batch(images: align ? randomImages(batch, seed: seed &+ 2) : nil,
                         x0: Tensor.randn([batch] + latent, seed: seed &+ 3), moments: false,
                         labels: Tensor((0..<batch).map { Int64($0 * 37 % numClasses) }, shape: [batch])).to(device)
        let generator = RandomGenerator(seed: seed &+ 4)
        return {
            student.store.zeroGrad()
            let teacherOut = teacher.map { objective.teacherPass($0, images: data.images!) }
            let draws = objective.draw(data, generator: generator)
            let terms = objective.loss(student: student, batch: data, draws: draws, teacher: teacherOut, alignmentActive: align)
            inspect?(terms.total)
            terms.total.backward()
            clipGradNorm(student.store, maxNorm: config.maxGradNorm)
            optimizer.step()
        }
    }

    /// `Objective.teacherPass`: preprocess (÷255, ImageNet mean/std, bicubic 256 → 224) and the no-grad forward
    /// returning the final-norm patch tokens and the logits of the four aligned blocks.
    static func teacherForward(seed: UInt64, device: Device = .cpu) throws -> () -> Void {
        let (config, resolved) = try config(model: "SiT-B/2", batch: teacherBatch, align: true, seed: seed)
        let teacher = teacher(resolved, seed: seed, device: device)!
        let objective = Objective(config: config, models: resolved)
        let images = randomImages(teacherBatch, seed: seed &+ 2).to(device)
        return { _ = objective.teacherPass(teacher, images: images) }
    }

    /// uint8 images [B, 3, 256, 256], uniform over 0…255.
    static func randomImages(_ batch: Int, seed: UInt64) -> Tensor {
        let shape = [batch, 3, imageSide, imageSide]
        let u = Tensor.rand(shape, seed: seed).scalars(as: Float.self)
        return Tensor(u.map { UInt8(Swift.min(255, $0 * 256)) }, shape: shape)
    }
}
