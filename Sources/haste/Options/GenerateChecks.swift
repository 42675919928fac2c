import ArgumentParser
import HasteDiffusion
import HasteTraining

/// `haste generate`'s flag checks (issue #18): out-of-range values, unknown choices and contradictions are errors
/// saying why; flags accepted only for generate.py's sake print a note (`notes`). The checkpoint-dependent checks
/// (`--model` against the checkpoint's config …) happen when the checkpoint is read.
extension Generate {
    func checkFlags() throws {
        try FlagCheck.choice("mode", mode, GenerateOptions.Mode.allCases.map(\.rawValue))
        try FlagCheck.choice("path-type", pathType, ["linear", "cosine"])
        try FlagCheck.choice("ckpt-select", ckptSelect, ["ema", "model"])
        try FlagCheck.choice("vae", vae, ["ema", "mse"], aliases: ["ft-ema", "ft-mse", "sd-vae-ft-ema", "sd-vae-ft-mse"])
        if heun && mode == "sde" {
            throw ValidationError("--heun applies to --mode ode only (the SDE sampler has no corrector step); drop --heun or use --mode ode")
        }
        try FlagCheck.range("cfg-scale", cfgScale, .atLeast(1, "1 = no guidance; the reference rejects smaller scales"))
        let interval = ConfigRange.closed(0, 1, "guidance applies for guidance-low ≤ t ≤ guidance-high, t in [0, 1] (1 = noise)")
        try FlagCheck.range("guidance-low", guidanceLow, interval)
        try FlagCheck.range("guidance-high", guidanceHigh, interval)
        if guidanceLow > guidanceHigh {
            throw ValidationError("--guidance-low \(guidanceLow) is above --guidance-high \(guidanceHigh): the guidance interval would be empty; swap them, or use --cfg-scale 1 for no guidance")
        }
        let minSteps = mode == "sde" ? 2 : 1
        try FlagCheck.range("num-steps", numSteps, .atLeast(Double(minSteps), mode == "sde" ? "the SDE grid needs a stochastic step and the final deterministic one" : ""))
        try FlagCheck.range("per-proc-batch-size", perProcBatchSize, .atLeast(1))
        if let n = numFidSamples { try FlagCheck.range("num-fid-samples", n, .atLeast(1)) }
        try FlagCheck.range("grid", grid, .atLeast(0, "0 = no grid"))
        if let d = encoderDepth { try FlagCheck.range("encoder-depth", d, TrainConfig.ranges["encoder-depth"]!) }
        if let r = resolution { try FlagCheck.range("resolution", r, .atLeast(8, "the image side in pixels")) }
        if let n = numClasses { try FlagCheck.range("num-classes", n, TrainConfig.ranges["num-classes"]!) }
        if let h = numHeads { try FlagCheck.range("num-heads", h, .atLeast(1)) }
        if let g = globalSeed {
            try FlagCheck.range("global-seed", g, TrainConfig.ranges["seed"]!)
            if let s = runtime.seedFlag, s != g {
                throw ValidationError("--global-seed \(g) and --seed \(s) disagree; they are the same seed here: give one of them")
            }
        }
    }

    /// One line per flag that is accepted but changes nothing here.
    var notes: [String] {
        var out: [String] = []
        let onCPU = DeviceName(runtime.device) == .cpu
        if let f = fusedAttn {
            out.append("--\(f ? "" : "no-")fused-attn has no effect: haste's attention is always one fused kernel (same numbers either way)")
        }
        if let t = tf32, onCPU {
            out.append("--\(t ? "" : "no-")tf32 has no effect on --device cpu: the CPU backend multiplies in float32 (TF32 applies to --device cuda)")
        }
        if cfgScale == 1 && (guidanceLow != 0 || guidanceHigh != 1) {
            out.append("--guidance-low/--guidance-high have no effect with --cfg-scale 1 (no guidance)")
        }
        return out
    }
}
