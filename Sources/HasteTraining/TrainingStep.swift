import HasteModels
import HasteNN
import HasteTensor

/// One optimizer update of `Trainer.train` on one micro-batch, without the run's bookkeeping (data loading,
/// EMA, metrics, checkpoints, data-parallel reduction, the bad-step counter): what `haste bench train` times.
/// The Trainer makes the same decisions through the same functions (`teacherOutput`, `frozenParameters`), so
/// with `align` false and no teacher this is its step after early-stop-point (skip-teacher-after-stop: the
/// teacher is gone; alignment losses off; the projectors get no AdamW update), bit for bit
/// (BenchTrainStoppedTests). Order: zero-grad, teacher pass under autocast, draws, loss under autocast,
/// backward (fp16: of the loss × the loss scale), unscale, clip, AdamW unless the gradients overflowed
/// (fp16), loss-scale update.
public final class TrainingStep {
    public let config: TrainConfig
    public let objective: Objective
    public let student: any DenoisingStudent
    public let teacher: DINOv2?
    public let optimizer: AdamW
    public let precision: ComputePrecision
    /// Whether alignment is on (the Trainer: global step < early-stop-point).
    public let align: Bool
    /// fp16's dynamic loss scaling, fresh (`fp16-init-scale`); nil in the other precisions.
    public private(set) var scaler: LossScaler?
    /// Sees each step's total loss before its backward (`haste bench train --saved-bytes`).
    public var inspectLoss: ((Tensor) -> Void)?

    public init(config: TrainConfig, models: ResolvedModels, student: any DenoisingStudent, teacher: DINOv2?,
                optimizer: AdamW, precision: ComputePrecision, align: Bool) {
        (self.config, self.student, self.teacher, self.optimizer, self.precision, self.align) =
            (config, student, teacher, optimizer, precision, align)
        objective = Objective(config: config, models: models)
        scaler = precision == .float16 ? LossScaler(scale: Float(config.fp16InitScale)) : nil
    }

    /// One update on `batch` with draws from `generator`; returns the total loss (as logged: `total_loss`) and
    /// the gradient norm before clipping. A non-finite loss (or, outside fp16, gradient norm) skips the update
    /// as the Trainer does.
    @discardableResult
    public func callAsFunction(_ batch: Batch, generator: RandomGenerator) -> (loss: Double, gradNorm: Double) {
        student.store.zeroGrad()
        var teacherOut = Trainer.teacherOutput(teacher, images: batch.images, align: align, config: config,
                                               objective: objective, precision: precision)
        let terms = Trainer.autocast(precision, narrowing: student.store) {
            // drawn once the weights' bf16 cast is queued: the device casts while the host draws
            let draws = objective.draw(batch, generator: generator)
            return objective.loss(student: student, batch: batch, draws: draws, teacher: teacherOut, alignmentActive: align)
        }
        // The loss has read the teacher's logits and features: they go now, not after the backward (Swift ends a
        // `let`'s lifetime where it likes; SiT-XL/2 bs256 +align peaks 2 GiB lower, host-only device).
        teacherOut = nil
        inspectLoss?(terms.total)
        (scaler.map { terms.total * Double($0.scale) } ?? terms.total).backward()
        let loss = terms.total.item()
        let (gradNorm, outcome) = Trainer.update(student.store, optimizer, scaler: &scaler, lossIsFinite: loss.isFinite,
                                                 align: align, config: config)
        if outcome == .bad { student.store.zeroGrad() }
        return (loss, gradNorm)
    }
}

extension Trainer {
    /// The teacher's part of a micro-batch: its features and logits while aligning; after the stop nothing, though
    /// a teacher still held (skip-teacher-after-stop false, as the reference) is run and its output discarded.
    public static func teacherOutput(_ teacher: DINOv2?, images: Tensor?, align: Bool, config: TrainConfig,
                                     objective: Objective, precision: ComputePrecision) -> DINOv2Output? {
        guard let teacher, align || !config.skipTeacherAfterStop, let images else { return nil }
        let out = autocast(precision, narrowing: teacher.store) { objective.teacherPass(teacher, images: images) }
        return align ? out : nil                                // reference: computed and discarded after the stop
    }

    /// `body` under `Autocast.run(precision)` with `store`'s values narrowed in one pass where they will be
    /// (`ParameterStore.lowPrecisionCopies`: bf16 on CUDA): the forward reads them and never writes them, and the
    /// copies, the same values the ops' own casts would make, go with the tapes that keep them.
    public static func autocast<R>(_ precision: ComputePrecision, narrowing store: ParameterStore, _ body: () -> R) -> R {
        let copies = precision.lowDType.flatMap { store.lowPrecisionCopies($0) }
        return LowPrecisionCopies.$current.withValue(copies) { Autocast.run(precision, body) }
    }

    /// What `update` did with a step's gradients.
    public enum UpdateOutcome: Equatable { case applied, overflowSkipped, bad }

    /// The update after backward, the Trainer's and `TrainingStep`'s: fp16's unscale, clip (the norm before clipping
    /// is returned), then `.bad` (non-finite loss, or gradient norm outside fp16: no update, the scaler backs off),
    /// `.overflowSkipped` (fp16 overflow: torch GradScaler skips AdamW, the step still counts) or `.applied`
    /// (AdamW, leaving `frozenParameters` alone); the loss scale is updated as GradScaler does.
    public static func update(_ store: ParameterStore, _ optimizer: AdamW, scaler: inout LossScaler?, lossIsFinite: Bool,
                              align: Bool, config: TrainConfig) -> (gradNorm: Double, outcome: UpdateOutcome) {
        scaler?.unscale(store)
        let gradNorm = clipGradNorm(store, maxNorm: config.maxGradNorm)
        guard lossIsFinite && (gradNorm.isFinite || scaler != nil) else {
            scaler?.update(foundInf: true)
            return (gradNorm, .bad)
        }
        if gradNorm.isFinite { optimizer.step(skipping: frozenParameters(store, align: align, config: config)) }
        scaler?.update(foundInf: !gradNorm.isFinite)
        return (gradNorm, gradNorm.isFinite ? .applied : .overflowSkipped)
    }

    /// Parameters AdamW leaves alone this step: the projectors once alignment is off (or without projection loss).
    public static func frozenParameters(_ store: ParameterStore, align: Bool, config: TrainConfig) -> Set<String> {
        align && config.projCoeff != 0 ? [] : Set(store.parameters.map(\.0).filter { $0.hasPrefix("projectors.") })
    }
}

extension TrainConfig {
    /// Analytic FLOPs of one `TrainingStep` over `batch` samples (`haste bench train`'s FLOP rate): the student's
    /// training FLOPs (`SiTConfig.trainingFLOPs`, its projectors too while aligning) plus the teacher's forward
    /// (`DINOv2Config.forwardFLOPs`) when the step runs it. Grad-checkpointing's recomputed forward is not counted:
    /// the rate is of the model's work, as MFU.
    public func stepFLOPs(models: ResolvedModels, batch: Int, align: Bool, runsTeacher: Bool) throws -> Double {
        let student = try models.student.sitConfig(for: "the FLOP count")
        let teacher = runsTeacher ? models.teacher?.forwardFLOPs(batch: batch) ?? 0 : 0
        return student.trainingFLOPs(batch: batch, projections: align && projCoeff != 0) + teacher
    }
}
