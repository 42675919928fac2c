import ArgumentParser
import Foundation
import HasteDiffusion
import HasteModels
import HasteTensor
import HasteTraining

/// `haste bench sample`: `haste generate`'s sampling of one batch (`SampleGenerator.samples` under the batch's
/// autocast with the weights narrowed once, as `generate` runs it: noise, labels, the sampler's host state and
/// arithmetic, every model call) for a few steps of a SiT with random weights, without the VAE and the PNGs.
/// Two rows per model and batch: every step guided (the model on 2N: CFG's conditional and null halves) and none
/// guided; from them the images/s of a whole run at `--num-steps` with CFG on t ≤ `--guidance-high` (HASTE's
/// evaluation: SDE, 250 steps, CFG 1.65 on t ≤ 0.72). Scripts/bench_gpu_generate.py times the reference sampler.
/// Under `HASTE_CUDA_HOST_ONLY=1` (a CUDA device that computes nothing) it counts a sampling step's launches,
/// GEMMs and tensor bytes without a GPU, which `generate` refuses to do (it would write meaningless images).
struct BenchSampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Time haste generate's sampler (no VAE, no PNGs) on a SiT with random weights: guided and unguided steps, and the images/s of a whole run.")

    @OptionGroup var runtime: RuntimeOptions
    @Flag(help: "Print JSON as `bench train --json` does (its per-step figures per timed call of --steps-per-call sampling steps), plus runs: [{model, batch, steps, guided_steps, images_per_s, ms_per_guided_step, ms_per_unguided_step}] (each model and batch with both rows timed).")
    var json = false
    @Option(help: "Timed calls per row (the median is reported).") var reps = 3
    @Option(help: "Untimed warm-up calls per row.") var warmup = 1
    @Option(help: ArgumentHelp("Models, comma-separated.", valueName: "names")) var models = "SiT-B/2"
    @Option(help: ArgumentHelp("Batch sizes (per-proc-batch-size), comma-separated.", valueName: "sizes")) var batches = "4"
    @Option(name: .customLong("steps-per-call"), help: "Sampler steps in one timed call (SDE: at least 2).") var stepsPerCall = 4
    @Option(help: ArgumentHelp("Sampler.", valueName: "ode|sde")) var mode = "sde"
    @Option(name: .customLong("num-steps"), help: "Steps of the whole run whose images/s is printed.") var numSteps = 250
    @Option(name: .customLong("cfg-scale")) var cfgScale = 1.65
    @Option(name: .customLong("guidance-high"), help: "CFG on guidance-low ≤ t ≤ guidance-high in the whole run.") var guidanceHigh = 0.72
    @Option(name: .customLong("guidance-low")) var guidanceLow = 0.0
    @Option(help: ArgumentHelp("As generate's flag; auto = bf16 on CUDA, no on the CPU.", valueName: "no|fp16|bf16|auto"))
    var mixedPrecision = "auto"
    @Flag(inversion: .prefixedNo, help: "TF32 for float32 GEMMs and attention on CUDA (generate's default: on).") var tf32 = true
    @Option(help: "Run only the row with exactly this name (see --list).") var only: String?
    @Flag(help: "Print the row names, one per line, and exit.") var list = false

    var modelList: [String] { models.split(separator: ",").map(String.init) }
    var batchList: [Int] { batches.split(separator: ",").compactMap { Int($0) } }
    var sampler: GenerateOptions.Mode? { GenerateOptions.Mode(rawValue: mode) }

    static func name(_ model: String, _ batch: Int, guided: Bool) -> String { "\(model) bs\(batch) \(guided ? "guided" : "unguided")" }
    var names: [String] { modelList.flatMap { m in batchList.flatMap { b in [true, false].map { Self.name(m, b, guided: $0) } } } }

    func validate() throws {
        guard reps >= 1, warmup >= 0 else { throw ValidationError("--reps must be ≥ 1 and --warmup ≥ 0") }
        guard let sampler else { throw ValidationError("--mode '\(mode)': expected ode or sde") }
        guard stepsPerCall >= (sampler == .sde ? 2 : 1) else {
            throw ValidationError("--steps-per-call \(stepsPerCall) is too few for \(mode) (sde: at least 2)")
        }
        guard numSteps >= (sampler == .sde ? 2 : 1) else { throw ValidationError("--num-steps \(numSteps) is too few for \(mode)") }
        guard cfgScale >= 1, 0 <= guidanceLow, guidanceLow <= guidanceHigh, guidanceHigh <= 1 else {
            throw ValidationError("--cfg-scale must be ≥ 1 and 0 ≤ --guidance-low ≤ --guidance-high ≤ 1")
        }
        guard ComputePrecision.flags.contains(mixedPrecision) else {
            throw ValidationError("--mixed-precision '\(mixedPrecision)': expected \(ComputePrecision.flags.joined(separator: ", "))")
        }
        guard !modelList.isEmpty, batchList.count == batches.split(separator: ",").count, batchList.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--models and --batches expect comma-separated names and positive sizes, got '\(models)' and '\(batches)'")
        }
        for m in modelList where (try? Self.sitConfig(m)) == nil {
            throw ValidationError("--models: unknown model '\(m)'; expected SiT-{S,B,L,XL}/{2,4,8} or \(CostSweep.tinyModel)")
        }
        if let only, !names.contains(only) { throw ValidationError("--only '\(only)' is not a row; rows are: \(names.joined(separator: ", "))") }
    }

    /// The named SiT as `train` builds it on 4×32×32 latents and 1000 classes, without projectors (`CostSweep.tinyModel`: the demo's small one).
    static func sitConfig(_ model: String) throws -> SiTConfig {
        var config = TrainConfig()
        CostSweep.apply(model: model, to: &config)
        return try config.studentConfig(sampleShape: [4, 32, 32], numClasses: 1000)
    }

    /// The whole run's steps with CFG on (the sampler's own grid and `Guidance.isActive`), of `numSteps`.
    var guidedSteps: Int {
        let grid = sampler == .sde ? Samplers.sdeGrid(steps: numSteps) : Samplers.odeGrid(steps: numSteps)
        let g = Guidance(scale: cfgScale, low: guidanceLow, high: guidanceHigh, nullClass: 0)
        return (0..<numSteps).filter { g.isActive(at: grid[$0]) }.count
    }

    func run() throws {
        if list { return print(names.joined(separator: "\n")) }
        let device = try runtime.openDevice(allowTF32: tf32, hostOnlyAllowed: true)
        let precision = ComputePrecision(flag: mixedPrecision, device: device)!
        let cases = try modelList.flatMap { m in try batchList.flatMap { b in
            try [true, false].map { try row(model: m, batch: b, guided: $0, device: device, precision: precision) }
        } }.filter { only == nil || $0.op == only }
        if !json {
            print("haste bench sample: \(device), mixed precision \(precision.flag), \(runtime.threads) threads, \(mode) sampler, "
                  + "\(stepsPerCall) steps a call, median of \(reps) after \(warmup) warm-up (rate: a call's images over its time; "
                  + "a whole run's below)")
        }
        let results = try cases.map { try Benchmark.run($0, warmup: warmup, reps: reps, device: device) }
        let runs = wholeRuns(results)
        guard !json else {
            return print(Benchmark.json(results, threads: runtime.threads, device: "\(device)", peakRSSMB: Benchmark.peakRSSMB(),
                                        peakTensorMB: Benchmark.peakTensorMB(on: device), mixedPrecision: precision.flag, runs: runs))
        }
        print(Benchmark.table(results, flopUnit: device == .cpu ? "GFLOP/s" : "TFLOP/s"))
        for r in results {   // the launch report's "step" is a timed call here: its sampling steps said
            if let report = r.launchReport { print("\(r.op): " + report.replacingOccurrences(of: "per step", with: "per call (\(stepsPerCall) sampling steps)")) }
        }
        for r in runs { print(r.text) }
        for line in Benchmark.tunerDecisions(device) { print(line) }
    }

    /// One row: `stepsPerCall` steps of `generate`'s sampling of one batch, every step guided (CFG on [0, 1]) or none.
    func row(model: String, batch: Int, guided: Bool, device: Device, precision: ComputePrecision) throws -> BenchCase {
        let config = try Self.sitConfig(model)
        let flops = 2 * Double(config.forwardMACs(batch: guided ? 2 * batch : batch)) * Double(stepsPerCall)
        return BenchCase(op: Self.name(model, batch, guided: guided),
                         shape: "x [\(batch), \(config.inChannels), \(config.inputSize), \(config.inputSize)] × \(stepsPerCall) steps",
                         work: .images(Double(batch)), stepFLOPs: flops) {
            let sit = try SiT(config, seed: runtime.seed)
            sit.store.setRequiresGrad(false)
            sit.store.move(to: device)
            var o = GenerateOptions()
            (o.numFidSamples, o.perProcBatchSize, o.numSteps, o.mode, o.precision) = (batch, batch, stepsPerCall, sampler!, precision)
            (o.cfgScale, o.guidanceLow, o.guidanceHigh, o.globalSeed) = (guided ? cfgScale : 1, 0, 1, runtime.seed)
            let generator = try SampleGenerator(options: o, model: GenerationModel(sit: sit, pixelSpace: false, name: model),
                                                vae: nil, checkpoint: "bench")
            let indices = Array(0..<batch)
            return { _ = Trainer.autocast(precision, narrowing: sit.store) { generator.samples(indices) } }
        }
    }

    /// Per model and batch with both rows timed: a whole run's images/s from the per-step medians (a call's time
    /// over its steps: the per-call work, such as the noise's first draw, shared among them).
    func wholeRuns(_ results: [BenchResult]) -> [SamplingRun] {
        let g = guidedSteps
        return modelList.flatMap { m in batchList.compactMap { b -> SamplingRun? in
            guard let on = results.first(where: { $0.op == Self.name(m, b, guided: true) }),
                  let off = results.first(where: { $0.op == Self.name(m, b, guided: false) }) else { return nil }
            let (guided, unguided) = (on.msMedian / Double(stepsPerCall), off.msMedian / Double(stepsPerCall))
            let seconds = (Double(g) * guided + Double(numSteps - g) * unguided) / 1e3
            return SamplingRun(model: m, batch: b, steps: numSteps, guidedSteps: g, imagesPerSecond: Double(b) / seconds,
                               msPerGuidedStep: guided, msPerUnguidedStep: unguided)
        } }
    }
}
