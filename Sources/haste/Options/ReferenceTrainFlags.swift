import ArgumentParser

/// train.py flags that configure the reference's PyTorch/accelerate runtime rather than the run (issue #18).
/// Each is accepted with the reference's spelling; `--qk-norm` and `--report-to` are applied, the others print one
/// line saying why they have no effect here (`notes`), so a researcher's command line runs unchanged and nothing
/// is silent.
struct ReferenceTrainFlags: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "QK LayerNorm in the student's attention (reference default off).")
    var qkNorm: Bool?
    @Flag(inversion: .prefixedNo, help: "Accepted; no effect: haste's attention is always one fused kernel (reference default on).")
    var fusedAttn: Bool?
    @Flag(inversion: .prefixedNo, help: "Let float32 matmuls on --device cuda use TF32 tensor cores (reference default off; also the attention of passes without a gradient, as the teacher's); no effect on the CPU.")
    var allowTf32: Bool?
    @Option(parsing: .unconditional, help: "Accepted; no effect: haste reads one batch ahead on one thread (reference default 4).")
    var numWorkers: Int?
    @Option(help: ArgumentHelp("Metrics to <run>/metrics.jsonl (jsonl), TensorBoard event files (tensorboard), both (all, the default) or neither (none); wandb is not supported and writes both (reference default wandb).",
                               valueName: "all|tensorboard|jsonl|none|wandb"))
    var reportTo: String?
    @Option(help: "Accepted; no effect: log.txt and metrics.jsonl go into <output-dir>/<exp-name> (reference default logs).")
    var loggingDir: String?
    @Flag(inversion: .prefixedNo, help: "Skip the teacher once alignment stops (default on; off = the reference, which runs it).")
    var skipTeacherAfterStop: Bool?

    func validate() throws {
        if let n = numWorkers { try FlagCheck.range("num-workers", n, .atLeast(0, "a DataLoader worker count")) }
    }

    /// Config keys these flags set.
    var configPairs: [(String, String?)] {
        [("qk-norm", qkNorm.map { "\($0)" }), ("skip-teacher-after-stop", skipTeacherAfterStop.map { "\($0)" }),
         ("report-to", reportTo.map { $0 == "wandb" ? "all" : $0 })]
    }

    /// One line per accepted flag that has no effect here (`device`: the `--device` value).
    func notes(device: String) -> [String] {
        var out: [String] = []
        if let f = fusedAttn {
            out.append("--\(f ? "" : "no-")fused-attn has no effect: haste's attention is always one fused kernel (same numbers either way, as in the reference)")
        }
        if let t = allowTf32, t, device == "cpu" {
            out.append("--allow-tf32 has no effect on --device cpu: the CPU backend multiplies in float32 (TF32 applies to --device cuda)")
        }
        if let n = numWorkers {
            out.append("--num-workers \(n) has no effect: haste reads the next batch on one background thread while a step computes")
        }
        if reportTo == "wandb" {
            out.append("--report-to wandb is not supported (haste starts no tracker and sends nothing off the machine): writing <run>/metrics.jsonl and TensorBoard event files instead (--report-to all); watch them with `tensorboard --logdir <output-dir>`")
        }
        if let l = loggingDir {
            out.append("--logging-dir \(l) has no effect: log.txt and metrics.jsonl are written into <output-dir>/<exp-name>/")
        }
        return out
    }
}
