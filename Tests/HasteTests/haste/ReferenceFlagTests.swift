import Foundation
import Testing

/// Issue #18 items 4–5: every train.py/generate.py flag is accepted (applied or noted), negative numbers reach the
/// range checks, contradictions and unknown values are errors that say why.

/// Runs `haste` with `arguments`; returns the exit status, stdout and stderr.
private func haste(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try hasteExecutable())
    p.arguments = arguments
    let (out, err) = (Pipe(), Pipe())
    (p.standardOutput, p.standardError) = (out, err)
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// train.py's flags with its defaults (HASTE train.py).
let referenceTrainFlags = [
    "--output-dir=exps", "--exp-name=x", "--logging-dir=logs", "--report-to=wandb", "--sampling-steps=20000",
    "--resume-step=0", "--model=SiT-XL/2", "--num-classes=1000", "--encoder-depth=8", "--fused-attn", "--no-fused-attn",
    "--no-qk-norm", "--qk-norm", "--data-dir=../data/imagenet256", "--resolution=256", "--batch-size=256", "--allow-tf32",
    "--mixed-precision=fp16", "--epochs=1400", "--max-train-steps=400000", "--checkpointing-steps=50000",
    "--gradient-accumulation-steps=1", "--learning-rate=1e-4", "--adam-beta1=0.9", "--adam-beta2=0.999",
    "--adam-weight-decay=0.", "--adam-epsilon=1e-08", "--max-grad-norm=1.0", "--seed=0", "--num-workers=4",
    "--path-type=linear", "--prediction=v", "--cfg-prob=0.1", "--enc-type=dinov2-vit-b", "--proj-coeff=0.5",
    "--attn-coeff=0.5", "--early-stop-point=250000", "--weighting=uniform",
]

@Test func everyReferenceTrainFlagIsAcceptedAndAppliedOrNoted() throws {
    let r = try haste(["train", "--print-config"] + referenceTrainFlags)
    #expect(r.status == 0, "\(r.err)")
    #expect(r.out.contains("qk-norm: true") && r.out.contains("exp-name: x") && r.out.contains("mixed-precision: fp16"), "applied: \(r.out)")
    for note in ["--no-fused-attn has no effect", "--allow-tf32 has no effect", "--num-workers 4 has no effect",
                 "--report-to wandb is not supported", "--logging-dir logs has no effect"] {
        #expect(r.err.contains("haste: note: \(note)"), "missing note '\(note)' in \(r.err)")
    }
    let off = try haste(["train", "--print-config", "--qk-norm", "--no-qk-norm", "--no-skip-teacher-after-stop"])
    #expect(off.status == 0 && off.out.contains("qk-norm: false") && off.out.contains("skip-teacher-after-stop: false"), "\(off)")
    let help = try haste(["train", "--help"]).out
    for flag in referenceTrainFlags.map({ String($0.split(separator: "=")[0]) }) {
        #expect(help.contains(flag), "train --help lacks \(flag)")
    }
}

@Test func everyReferenceGenerateFlagIsAccepted() throws {
    let flags = ["--global-seed", "0", "--tf32", "--no-tf32", "--ckpt", "/nonexistent/0500000.pt", "--sample-dir", "samples",
                 "--model", "SiT-XL/2", "--num-classes", "1000", "--encoder-depth", "8", "--resolution", "256",
                 "--fused-attn", "--no-fused-attn", "--qk-norm", "--no-qk-norm", "--vae", "ema", "--vae", "mse",
                 "--per-proc-batch-size", "64", "--num-fid-samples", "50000", "--mode", "sde", "--cfg-scale", "1.65",
                 "--projector-embed-dims", "768", "--path-type", "linear", "--num-steps", "250", "--no-heun",
                 "--guidance-low", "0.0", "--guidance-high", "0.72", "--guidance_low", "0.0", "--guidance_high", "0.72"]
    let r = try haste(["generate"] + flags)
    #expect(r.status == 1 && r.err.contains("/nonexistent/0500000.pt: no such file"), "parsed up to the checkpoint: \(r.err)")
    #expect(r.err.contains("haste: note: --no-tf32 has no effect") && r.err.contains("haste: note: --no-fused-attn has no effect"), "\(r.err)")
    #expect(try haste(["generate", "--help"]).out.contains("--vae <ema|mse>"))
}

/// configs/demo.yaml of this checkout.
private let demoConfig = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs/demo.yaml").path

@Test func negativeNumbersParseAndAreValidated() throws {
    let cases: [([String], String)] = [
        (["generate", "--ckpt", "x", "--cfg-scale", "-2"], "--cfg-scale must be ≥ 1 (got -2)"),
        (["generate", "--ckpt", "x", "--cfg-scale", "nan"], "--cfg-scale must be a finite number ≥ 1 (got nan)"),
        (["generate", "--ckpt", "x", "--guidance-low", "-0.1"], "--guidance-low must be in [0, 1] (got -0.1)"),
        (["generate", "--ckpt", "x", "--num-steps", "-5"], "--num-steps must be ≥ 1 (got -5)"),
        (["generate", "--ckpt", "x", "--global-seed", "-3"], "--global-seed must be ≥ 0 (got -3)"),
        (["train", "--print-config", "--learning-rate", "-1e-4"], "config key 'learning-rate': must be ≥ 0 (got -0.0001)"),
        (["train", "--print-config", "--batch-size", "-8"], "config key 'batch-size': must be ≥ 1 (got -8)"),
        (["train", "--print-config", "--seed", "-1"], "--seed must be ≥ 0 (got -1)"),
        (["train", "--print-config", "--num-workers", "-1"], "--num-workers must be ≥ 0 (got -1)"),
        (["preprocess", "--dest", NSTemporaryDirectory() + "haste-unused", "--max-images", "-1"], "--max-images must be ≥ 1 (got -1)"),
        (["preprocess", "--dest", NSTemporaryDirectory() + "haste-unused", "--png-level", "-3"], "--png-level must be 0–9 (got -3)"),
        (["train-teacher", demoConfig, "--steps", "-1"], "config key 'steps': must be ≥ 1 (got -1)"),
    ]
    for (args, expected) in cases {
        let r = try haste(args)
        #expect(r.status != 0 && r.err.contains(expected) && !r.err.contains("Missing value"), "\(args): \(r.err)")
    }
    let latest = try haste(["train", "--print-config", "--resume-step", "-1"])
    #expect(latest.status == 0 && latest.out.contains("resume-step: -1"), "-1 = latest: \(latest.err)")
}

@Test func contradictionsAndUnknownValuesAreErrorsThatSayWhy() throws {
    let cases: [([String], String)] = [
        (["generate", "--ckpt", "x", "--heun", "--mode", "sde"], "--heun applies to --mode ode only"),
        (["generate", "--ckpt", "x", "--guidance-high", "1.5"], "--guidance-high must be in [0, 1] (got 1.5)"),
        (["generate", "--ckpt", "x", "--guidance-low", "0.8", "--guidance-high", "0.5"], "--guidance-low 0.8 is above --guidance-high 0.5"),
        (["generate", "--ckpt", "x", "--mode", "sde", "--num-steps", "1"], "--num-steps must be ≥ 2 (got 1)"),
        (["generate", "--ckpt", "x", "--global-seed", "1", "--seed", "2"], "--global-seed 1 and --seed 2 disagree"),
        (["generate", "--ckpt", "x", "--mode", "dpm"], "unknown value 'dpm' for --mode; allowed: ode, sde"),
        (["generate", "--ckpt", "x", "--vae", "xl"], "unknown value 'xl' for --vae; allowed: ema, mse"),
        (["generate", "--ckpt", "x", "--ckpt-select", "best"], "unknown value 'best' for --ckpt-select; allowed: ema, model"),
        (["train", "--print-config", "--mixed-precision", "bf17"], "unknown value 'bf17'; allowed: no, fp16, bf16, auto"),
        (["train", "--print-config", "--set", "fp16-init-scale=0"], "config key 'fp16-init-scale': must be in [1e-30, 1000000000000000.0] (got 0.0)"),
        (["generate", "--ckpt", "x", "--mixed-precision", "fp17"], "--mixed-precision 'fp17': expected no, fp16, bf16 or auto"),
        (["train", "--print-config", "--set", "dataset=imagenet1k"], "unknown value 'imagenet1k'; allowed: imagenet, images, fashion-mnist"),
        (["train", "--print-config", "--path-type", "cosin"], "'cosin' is not one of linear, cosine"),
    ]
    for (args, expected) in cases {
        let r = try haste(args)
        #expect(r.status != 0 && r.err.contains(expected), "\(args): \(r.err)")
    }
    let noGuidance = try haste(["generate", "--ckpt", "x", "--cfg-scale", "1", "--guidance-high", "0.7"])
    #expect(noGuidance.err.contains("haste: note: --guidance-low/--guidance-high have no effect with --cfg-scale 1"), "\(noGuidance.err)")
}

@Test func alignmentFlagsOnARunWithoutAlignmentAreNoted() throws {
    let none = try haste(["train", "--print-config", "--enc-type", "none", "--proj-coeff", "0.5", "--enc-weights", "t.pth"])
    #expect(none.status == 0 && none.err.contains("haste: note: --enc-weights, --proj-coeff have no effect: this run has no alignment and no teacher (enc-type none)"), "\(none.err)")
    let zero = try haste(["train", "--print-config", "--proj-coeff", "0", "--attn-coeff", "0", "--early-stop-point", "1000"])
    #expect(zero.err.contains("--early-stop-point has no effect: this run has no alignment and no teacher (proj-coeff and attn-coeff are 0)"), "\(zero.err)")
    let aligned = try haste(["train", "--print-config", "--enc-weights", "t.pth", "--early-stop-point", "1000"])
    #expect(aligned.status == 0 && aligned.err.isEmpty, "\(aligned.err)")
}

@Test func preprocessFlagsTheStageIgnoresAreNoted() throws {
    let dest = NSTemporaryDirectory() + "haste-test-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dest) }
    let r = try haste(["preprocess", "--stage", "convert", "--source", dest + "/missing", "--dest", dest, "--vae-weights", "vae.safetensors"])
    #expect(r.status != 0 && r.err.contains("haste: note: --vae-weights has no effect with --stage convert"), "\(r.err)")
}
