import HasteTensor

extension TrainConfig {
    /// The allowed range of every numeric key, by YAML name (issue #14). `validate()` traps if a numeric key
    /// has no entry, so a new knob cannot skip this table.
    package static let ranges: [String: ConfigRange] = [
        // Data and models (0 = "from model" / "from enc-type" where the property comment says so)
        "resolution": .atLeast(16, "the teacher grid is 16·resolution/256 patches per side"),
        "hidden-size": .atLeast(0), "depth": .atLeast(0), "num-heads": .atLeast(0),
        "num-classes": .atLeast(1),
        "encoder-depth": .atLeast(1, "the 1-based block whose output feeds the projectors"),
        "projector-dim": .atLeast(1),
        "text-encoder-width": .atLeast(64, "a multiple of 64 (CLIP heads of 64)"), "text-encoder-layers": .atLeast(1),
        "teacher-patch-size": .atLeast(0), "teacher-grid": .atLeast(0), "teacher-embed-dim": .atLeast(0),
        "teacher-depth": .atLeast(0), "teacher-heads": .atLeast(0),
        // Objective
        "proj-coeff": .atLeast(0), "attn-coeff": .atLeast(0),
        "attn-student-layers": .atLeast(0, "0-based block indices"),
        "attn-teacher-layers": .atLeast(0, "0-based block indices"),
        "attn-heads": .atLeast(0), "early-stop-point": .atLeast(0),
        "cfg-prob": .closed(0, 1, "a label-dropout probability"),
        // Optimisation
        "batch-size": .atLeast(1), "epochs": .atLeast(1), "max-train-steps": .atLeast(1),
        "gradient-accumulation-steps": .atLeast(1),
        "learning-rate": .atLeast(0), "adam-beta1": .halfOpen(0, 1), "adam-beta2": .halfOpen(0, 1),
        "adam-weight-decay": .atLeast(0), "adam-epsilon": .above(0), "max-grad-norm": .above(0),
        "ema-decay": .closed(0, 1, "the weight of the old EMA per step (ref 0.9999)"),
        "seed": .atLeast(0), "latent-scale": .above(0),
        "fp16-init-scale": .closed(1e-30, 1e15, "a power of two keeps the scaling exact (torch: 65536)"),
        // Bookkeeping: every interval divides the step count
        "checkpointing-steps": .atLeast(1), "sampling-steps": .atLeast(1), "sample-count": .atLeast(1),
        "sample-cfg": .atLeast(1, "1 = no guidance, as haste generate --cfg-scale"), "sample-num-steps": .atLeast(1), "log-every": .atLeast(1),
        "resume-step": .atLeast(-1, "0 = fresh, -1 = the latest checkpoint"), "max-bad-steps": .atLeast(1),
        "fid-every": .atLeast(0, "0 = off"), "fid-samples": .atLeast(2, "a covariance needs two samples"),
    ]

    /// Checks every numeric key against `ranges` (sorted by key, first failure thrown) and the constraints
    /// between keys that need no model or data. `load` calls it; so does `Trainer.init` for configs built in code.
    public func validate() throws {
        let values = TrainConfig.typedDefaults(of: self)
        for key in values.keys.sorted() where ConfigRange.isNumeric(values[key]!) {
            let range = TrainConfig.ranges[key]
            require(range != nil, "TrainConfig.ranges: the numeric key '\(key)' has no range; add one")
            try range!.check(key, values[key]!)
        }
        try validateChoices()
        if textEncoderWidth % 64 != 0 {
            throw HasteError.config(key: "text-encoder-width", detail: "\(textEncoderWidth) is not a multiple of 64 (the random encoder has heads of 64, as CLIPTextModel.load infers them)")
        }
        if usesTeacher && teacherGrid == 0 && (16 * resolution) % 256 != 0 {
            throw HasteError.config(key: "resolution", detail: "\(resolution) gives a fractional teacher grid 16·\(resolution)/256; use a multiple of 16 or set teacher-grid")
        }
    }
}
