import Foundation
import HasteDiffusion
import HasteDistributed
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

/// Receives what a researcher watches; the CLI prints it (libraries never print: STYLE §6).
public protocol TrainingObserver: AnyObject {
    /// A transient status line (step, speed, losses, ETA), many times a second at most.
    func progress(_ line: String)
    /// A lasting message (also appended to log.txt by the trainer).
    func message(_ line: String)
}

/// The training loop of spec/method.md §11 with HASTE's early stop, checkpoints, resume, previews and metrics.
/// Data-parallel over the ranks of `comm` (Trainer+DataParallel.swift): rank 0 is the one writer.
public final class Trainer {
    public let config: TrainConfig
    public let models: ResolvedModels
    public let dataset: TrainingDataset
    public let student: any DenoisingStudent
    /// Set to nil at the early stop when skip-teacher-after-stop is on (Trainer+EarlyStop.swift).
    public internal(set) var teacher: DINOv2?
    public let optimizer: AdamW
    public let ema: EMA
    public let run: RunDirectory
    let objective: Objective
    let order: EpochOrder
    public let comm: Communicator
    /// Where the student, teacher, optimizer state and each batch live (data is read on the host).
    public let device: Device
    /// Reads (this rank's share of) batch k+1 while step k computes.
    lazy var prefetcher = BatchPrefetcher(dataset: dataset, order: order, share: comm.share(of: config.batchSize))
    lazy var reducer = GradientReducer(store: student.store, comm: comm, collectives: collectives)
    /// Sums the gradients on the device (NCCL) instead of through host memory, when given.
    public let collectives: DeviceCollectives?
    public private(set) var state = TrainingState()
    weak var observer: TrainingObserver?
    /// The backend's tuning decisions already in log.txt (`sayNewTuningDecisions`).
    var toldDecisions = 0

    public convenience init(config: TrainConfig, observer: TrainingObserver? = nil, comm: Communicator = SingleProcess(),
                            device: Device = .cpu, collectives: DeviceCollectives? = nil) throws {
        try self.init(config: config, dataset: try config.openDataset(), observer: observer, comm: comm, device: device,
                      collectives: collectives)
    }

    public init(config: TrainConfig, dataset: TrainingDataset, observer: TrainingObserver? = nil,
                comm: Communicator = SingleProcess(), device: Device = .cpu, collectives: DeviceCollectives? = nil) throws {
        try config.validate()                                   // configs built in code skip `load`
        self.config = config
        self.observer = comm.isWriter ? observer : nil
        self.comm = comm
        self.device = device
        self.collectives = collectives
        self.dataset = dataset
        models = try config.resolveModels(sampleShape: dataset.sampleShape, numClasses: dataset.numClasses, contextShape: dataset.contextShape)
        if config.usesTeacher && !dataset.hasImages {
            throw HasteError.config(key: "enc-type", detail: "the dataset has no raw images for the teacher; use enc-type none")
        }
        guard config.batchSize <= dataset.count else {                 // ≥ 1 and the other ranges: validate()
            throw HasteError.config(key: "batch-size", detail: "\(config.batchSize) must be in 1...\(dataset.count) (the dataset size)")
        }
        try Trainer.checkShares(batchSize: config.batchSize, ranks: comm.size)
        student = try models.student.make(seed: UInt64(config.seed))
        student.store.move(to: device)                          // before the optimizer and EMA allocate there
        teacher = try models.teacher.map { try loadTeacher($0, weights: config.encWeights) }
        teacher?.store.move(to: device)
        optimizer = AdamW(store: student.store, lr: config.learningRate, betas: (config.adamBeta1, config.adamBeta2),
                          eps: config.adamEpsilon, weightDecay: config.adamWeightDecay)
        ema = EMA(from: student.store)
        run = try RunDirectory(root: "\(config.outputDir)/\(config.expName)", writer: comm.isWriter)
        objective = Objective(config: config, models: models)
        order = EpochOrder(count: dataset.count, batchSize: config.batchSize, seed: UInt64(config.seed))
        for path in run.removedTemporaries { say("removed \(path), left by a write that was interrupted") }
        // float32 on the CPU: the teacher's weights packed once for the GEMM instead of on every step (same bits)
        if precision == .float32 { teacher = teacher?.prepackedForInference() }
        if precision == .float16 { state.scaler = LossScaler(scale: Float(config.fp16InitScale)) }
        try resumeIfAsked()
        if comm.isWriter { try run.writeConfig(config) }
        if comm.isWriter, let model = (dataset as? CaptionedDataset)?.textEncoderToSave {
            try TextEncoderSetup.save(model, runRoot: run.root)
            say("random frozen text encoder (\(model.config.numLayers) layers, width \(model.config.hiddenSize)) saved to \(TextEncoderSetup.path(runRoot: run.root))")
        }
    }

    func resumeIfAsked() throws {
        guard config.resumeStep != 0 else { return }
        var found: (step: Int, path: String)?
        if config.resumeStep < 0 { found = Checkpoint.latest(in: run.root) } else {
            found = Checkpoint.find(in: run.root, step: config.resumeStep).map { (config.resumeStep, $0) }
        }
        found = agreeOnCheckpoint(found)
        guard let found else {
            throw HasteError.config(key: "resume-step", detail: "no checkpoint \(config.resumeStep < 0 ? "at all" : "for step \(config.resumeStep)") in \(run.root)/checkpoints")
        }
        let fresh = state.scaler
        state = try Checkpoint.load(from: found.path, model: student.store, ema: ema, optimizer: optimizer)
        // fp16: the saved loss scale, or a fresh scaler for a checkpoint without one; other precisions: none.
        state.scaler = fresh == nil ? nil : state.scaler ?? fresh
        say("resumed from \(found.path) at step \(state.step)" + (state.scaler.map { ", fp16 loss scale \(Double($0.scale))" } ?? ""))
    }

    /// The backend's new choices by timing (CUDA's flash and row kernels at a shape's first call: the first step, and
    /// the first after the early stop), once each, in log.txt.
    func sayNewTuningDecisions() {
        let decisions = Backends.registered(device)?.tuningDecisions ?? []
        for line in decisions.dropFirst(toldDecisions) { say("\(device): \(line)") }
        toldDecisions = decisions.count
    }

    func say(_ line: String) {
        guard comm.isWriter else { return }
        run.log(line)
        observer?.message(line)
    }

    /// Trains until max-train-steps (or epochs) and returns the final state.
    @discardableResult
    public func train() throws -> TrainingState {
        let generator = RandomGenerator(seed: UInt64(config.seed) &+ 1, offset: state.rngOffset)
        let preview = comm.isWriter ? try Preview(config: config, models: models, sampleShape: dataset.sampleShape,
                                                  pixelSpace: !dataset.hasLatents, vae: try previewVAE(), device: device,
                                                  prompts: try PreviewPrompts(dataset: dataset, count: config.sampleCount)) : nil
        let fid = comm.isWriter ? try TrainingFID(config: config, models: models, sampleShape: dataset.sampleShape,
                                                  pixelSpace: !dataset.hasLatents, run: run, device: device) : nil
        say("training \(config.model) (\(student.store.trainableCount) trainable parameters) on \(dataset.count) items; \(teacher == nil ? "no teacher (denoising only)" : "teacher \(config.encType), alignment until step \(config.earlyStopPoint)")")
        var meter = Throughput(batch: config.batchSize * config.gradientAccumulationSteps)
        while state.step < config.maxTrainSteps && state.epoch < config.epochs {
            try stopIfWritesFailed()
            if state.batchInEpoch >= order.batchesPerEpoch { state.epoch += 1; state.batchInEpoch = 0; continue }
            let align = state.step < config.earlyStopPoint
            let terms = try accumulateGradients(generator: generator, align: align)
            state.rngOffset = generator.offset
            let lossScale = state.scaler?.scale                 // the scale this step's loss was multiplied by
            let (gradNorm, outcome) = Trainer.update(student.store, optimizer, scaler: &state.scaler,
                                                     lossIsFinite: terms.total.isFinite, align: align, config: config)
            if outcome == .bad {
                try handleBadStep(terms: terms, gradNorm: gradNorm)
                continue
            }
            state.badSteps = 0
            if outcome == .overflowSkipped {    // fp16 overflow: torch GradScaler skips the update; the step still counts
                say("step \(state.step + 1): fp16 gradients overflowed at loss scale \(Double(lossScale!)): AdamW update skipped, loss scale halved")
            }
            ema.update(decay: config.emaDecay)          // train.py updates the EMA after every step, skipped or not
            state.step += 1
            stopAlignmentIfDue()
            let rate = meter.tick()
            var values = ["loss": terms.denoise, "proj_loss": terms.projection, "attn_loss": terms.attention,
                          "total_loss": terms.total, "grad_norm": gradNorm, "lr": optimizer.lr, "img_per_s": rate.imagesPerSecond]
            if let lossScale { values["loss_scale"] = Double(lossScale) }      // the scale this step's loss was multiplied by
            if let v = try fid?.measure(step: state.step, ema: ema, run: run) {
                values["fid"] = v
                say(String(format: "step %d | FID %.3f (%d EMA samples vs %@)", state.step, v, config.fidSamples, config.fidRef))
            }
            if comm.isWriter {
                run.metric(step: state.step, values: values)
                report(terms, gradNorm: gradNorm, rate: rate)
                sayNewTuningDecisions()
            }
            if state.step % config.checkpointingSteps == 0 || state.step == config.maxTrainSteps { try saveCheckpoint() }
            if let preview, state.step == 1 || state.step % config.samplingSteps == 0 || state.step == config.maxTrainSteps {
                do {                                             // PNG writes: a full disk stops like a failed append
                    try preview.render(ema: ema, step: state.step, run: run, say: say)
                    try run.plotLosses()
                } catch { try stop(afterWriteFailure: error) }
            }
        }
        prefetcher.drain()
        say("done at step \(state.step)")
        try stopIfWritesFailed()
        return state
    }

    /// The SD-VAE decoding latent previews: `vae-weights` when set (must load), else ft-MSE from the default
    /// locations when present, else none (previews skipped with a note).
    func previewVAE() throws -> AutoencoderKL? {
        guard dataset.hasLatents else { return nil }
        if !config.vaeWeights.isEmpty { return try VAELoader.load("mse", weights: config.vaeWeights) }
        return try VAELoader.installedFile("mse").map { try VAELoader.load("mse", weights: $0) }
    }

    /// `mixed-precision` as the ops' precision on this trainer's device (validated values; `auto`: bf16 on CUDA, no on
    /// the CPU). fp16 adds dynamic loss scaling (`state.scaler`).
    var precision: ComputePrecision { ComputePrecision(flag: config.mixedPrecision, device: device) ?? .float32 }

    /// Micro-batches of one update; losses are divided by the accumulation count (accelerate's backward). Each
    /// rank weighs its mean by its share of the global batch, and the gradient sum over ranks is the gradient
    /// of the global batch's mean (Trainer+DataParallel.swift).
    func accumulateGradients(generator: RandomGenerator, align: Bool) throws -> (total: Double, denoise: Double, projection: Double, attention: Double) {
        student.store.zeroGrad()
        var sums = (0.0, 0.0, 0.0, 0.0)
        let k = Double(config.gradientAccumulationSteps), share = comm.share(of: config.batchSize)
        let weight = Double(share.count) / Double(config.batchSize)
        for micro in 0..<config.gradientAccumulationSteps {
            let batch = try prefetcher.batch(epoch: state.epoch, batch: state.batchInEpoch).to(device)
            state.batchInEpoch += 1
            var teacherOut = Trainer.teacherOutput(teacher, images: batch.images, align: align, config: config,
                                                   objective: objective, precision: precision)
            let terms = Trainer.autocast(precision, narrowing: student.store) {   // the losses inside are float32 ops: autocast rounds only GEMMs
                // drawn once the weights' bf16 cast is queued (TrainingStep: the same): the device casts while the host draws
                let draws = objective.draw(batch, generator: generator, globalBatch: config.batchSize, first: share.lowerBound)
                return objective.loss(student: student, batch: batch, draws: draws, teacher: teacherOut, alignmentActive: align)
            }
            teacherOut = nil                    // its logits and features go before the backward (TrainingStep: the same)
            let last = micro == config.gradientAccumulationSteps - 1
            let loss = terms.total * weight / k
            // fp16: torch GradScaler's `scale(loss).backward()`; the power-of-two scale is exact.
            (state.scaler.map { loss * Double($0.scale) } ?? loss).backward(observer: sumsGradients && last ? reducer : nil)
            sums.0 += terms.total.item() * weight / k; sums.1 += terms.denoise * weight / k
            sums.2 += terms.projection * weight / k; sums.3 += terms.attention * weight / k
            if state.batchInEpoch >= order.batchesPerEpoch { state.epoch += 1; state.batchInEpoch = 0 }
        }
        return try sumAcrossRanks(sums)
    }

    func handleBadStep(terms: (total: Double, denoise: Double, projection: Double, attention: Double), gradNorm: Double) throws {
        state.badSteps += 1
        student.store.zeroGrad()
        say("step \(state.step + 1): non-finite loss \(terms.total) / grad norm \(gradNorm): update skipped (\(state.badSteps) in a row)")
        if state.badSteps >= config.maxBadSteps {
            try saveCheckpoint()
            throw HasteError.unsupported("training diverged: \(state.badSteps) consecutive non-finite steps at step \(state.step). The last good weights are in \(Checkpoint.path(run.root, step: state.step)); lower learning-rate or max-grad-norm and resume with --resume-step \(state.step).")
        }
    }

    /// A failed append to log.txt or metrics.jsonl (a full disk: issue #14) stops the run cleanly after one
    /// checkpoint attempt, saying what was saved.
    func stopIfWritesFailed() throws {
        if let failure = run.writeFailure { try stop(afterWriteFailure: failure) }
    }

    func stop(afterWriteFailure failure: Error) throws -> Never {
        var saved: String
        do {
            try saveCheckpoint()
            saved = "Saved \(Checkpoint.path(run.root, step: state.step)); free disk space and "
                + (state.step > 0 ? "resume with --resume-step \(state.step)." : "start again (no step was trained yet).")
        } catch {
            saved = "The checkpoint of step \(state.step) could not be written either (\(error))."
            saved += Checkpoint.latest(in: run.root).map { " The last checkpoint is \($0.path); free disk space and resume with --resume-step \($0.step)." }
                ?? " No checkpoint is on disk; free disk space and start again."
        }
        throw HasteError.unsupported("training stopped at step \(state.step): \(failure) (is the disk full?). \(saved)")
    }

    func saveCheckpoint() throws {
        guard comm.isWriter else { return }
        let path = Checkpoint.path(run.root, step: state.step)
        try Checkpoint.save(to: path, model: student.store, ema: ema, optimizer: optimizer, state: state, config: config)
        say("saved \(path)")
    }

    func report(_ t: (total: Double, denoise: Double, projection: Double, attention: Double), gradNorm: Double, rate: Throughput.Rate) {
        let remaining = Double(config.maxTrainSteps - state.step) / max(rate.stepsPerSecond, 1e-9)
        let line = String(format: "step %d | loss %.4f (proj %.3f, attn %.3f) | grad %.3f | %.2f it/s %.1f img/s | ETA %@",
                          state.step, t.denoise, t.projection, t.attention, gradNorm, rate.stepsPerSecond, rate.imagesPerSecond,
                          Throughput.format(seconds: remaining))
        observer?.progress(line)
        if state.step % config.logEvery == 0 || state.step == 1 { run.log(line) }
    }
}
