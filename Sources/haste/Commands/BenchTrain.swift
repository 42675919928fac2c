import ArgumentParser
import Foundation
import HasteModels
import HasteTensor
import HasteTraining

/// `haste bench train`: one full training step per row (forward, HASTE loss, backward, clip, AdamW) and the
/// teacher's forward, in img/s. `Scripts/bench_compare.sh train` runs each row in its own process (`--only`),
/// next to the same row of Scripts/bench_torch_train.py, so that the peak RSS printed belongs to that row.
/// `--sweep` (BenchTrainSweep.swift) runs SiT sizes × batch sizes instead, one process per row, with GFLOP/s and
/// the share of the CPU's FMA peak; `--sweep --only ROW` is one of its rows in this process.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Time full training steps of SiT-S/2 and SiT-B/2 (± HASTE alignment) and the DINOv2-B forward; --sweep: SiT sizes × batch sizes.")

    @OptionGroup var runtime: RuntimeOptions
    @Flag(help: "Print JSON {threads, device, mixed_precision, peak_rss_mb, peak_tensor_mb, peak_mapped_mb, rows: [{op, shape, ms_median, ms_min, rate, unit, reps, flop_per_step, tflop_per_s, peak_memory_mb, minor_faults_per_step, host_maps_per_step, tensor_gb_per_step, driver_allocations_per_step, held_mb, launches_per_step, gemms_per_step}]} (faults and maps on the CPU; tensor GB, driver allocations and held MiB on CUDA; launches and GEMMs with HASTE_CUDA_PROFILE=1 or HASTE_CUDA_HOST_ONLY=1).")
    var json = false
    @Option(help: "Timed steps per row (the median is reported).") var reps = 3
    @Option(help: "Untimed warm-up steps per row.") var warmup = 1
    @Option(help: "Run only the row with exactly this name (see --list); one row per process attributes the peak RSS.")
    var only: String?
    @Flag(help: "Print the row names, one per line, and exit.") var list = false
    @Flag(name: .customLong("saved-bytes"), help: "With --only (a SiT row): one step, printing the bytes its graph holds for backward per op type, then exit.")
    var savedBytes = false
    @Option(help: ArgumentHelp("Models of the training rows, comma-separated (GPU: SiT-B/2,SiT-XL/2).", valueName: "names"))
    var models = TrainBenchmarks.models.joined(separator: ",")
    @Option(help: ArgumentHelp("Batch sizes of the training rows, comma-separated (GPU: 16,64).", valueName: "sizes"))
    var batches = TrainBenchmarks.batches.map(String.init).joined(separator: ",")
    @Flag(name: .customLong("allow-tf32"), help: "float32 GEMMs on CUDA may use TF32 tensor cores (the reference's --allow-tf32).")
    var allowTF32 = false
    @Option(help: ArgumentHelp("Precision of the training steps, as train's flag: no = float32; bf16 / fp16 = autocast GEMMs, convolutions and attention (fp16 with dynamic loss scaling); auto (default) = bf16 on CUDA, no on the CPU.", valueName: "no|fp16|bf16|auto"))
    var mixedPrecision = "auto"
    @Flag(help: "Train with grad-checkpointing (each block's activations recomputed in backward); rows are named \"… +ckpt\".")
    var gradCheckpointing = false
    @Flag(name: .customLong("recompute-mlp-activation"), help: "bf16 on CUDA: recompute each MLP's activation output in backward (train's key recompute-mlp-activation); the rows keep their names.")
    var recomputeMlpActivation = false
    @Flag(help: ArgumentHelp("How cost grows: SiT sizes × batch sizes, denoising loss only, one process per row; step time, img/s, GFLOP per step and GFLOP/s, % of the CPU's measured FMA peak, peak tensor and RSS MiB. Rows predicted not to fit in 80% of MemAvailable are skipped (CPU only)."))
    var sweep = false
    @Option(name: .customLong("sweep-models"), help: ArgumentHelp("Models of --sweep, comma-separated (default \(CostSweep.models.joined(separator: ","))); \(CostSweep.tinyModel) is the demo's small SiT, for quick checks.", valueName: "names"))
    var sweepModels: String?
    @Option(name: .customLong("sweep-batches"), help: ArgumentHelp("Batch sizes of --sweep, comma-separated (default \(CostSweep.batches.map(String.init).joined(separator: ","))).", valueName: "sizes"))
    var sweepBatches: String?
    /// Tests: MemAvailable (MiB) the skip rule assumes instead of /proc/meminfo's.
    @Option(name: .customLong("sweep-mem-available"), help: .hidden) var sweepMemAvailable: Double?

    var modelList: [String] { models.split(separator: ",").map(String.init) }
    var batchList: [Int] { batches.split(separator: ",").compactMap { Int($0) } }
    var names: [String] { TrainBenchmarks.names(models: modelList, batches: batchList, checkpointing: gradCheckpointing) }
    var mmditNames: [String] { MMDiTBenchmarks.names(checkpointing: gradCheckpointing) }
    var sweepModelList: [String] { (sweepModels ?? CostSweep.models.joined(separator: ",")).split(separator: ",").map(String.init) }
    var sweepBatchText: String { sweepBatches ?? CostSweep.batches.map(String.init).joined(separator: ",") }
    var sweepBatchList: [Int] { Array(Set(sweepBatchText.split(separator: ",").compactMap { Int($0) })).sorted() }
    var sweepNames: [String] {
        sweepModelList.flatMap { m in sweepBatchList.map { TrainBenchmarks.name(m, $0, align: false, checkpointing: gradCheckpointing) } }
    }

    func validate() throws {
        guard reps >= 1, warmup >= 0 else { throw ValidationError("--reps must be ≥ 1 and --warmup ≥ 0") }
        guard ComputePrecision.flags.contains(mixedPrecision) else {
            throw ValidationError("--mixed-precision: unknown value '\(mixedPrecision)'; allowed: \(ComputePrecision.flags.joined(separator: ", ")) (auto = bf16 on CUDA, no on the CPU)")
        }
        guard !modelList.isEmpty, batchList.count == batches.split(separator: ",").count, batchList.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--models and --batches expect comma-separated names and positive sizes, got '\(models)' and '\(batches)'")
        }
        guard sweep else {
            if sweepModels != nil || sweepBatches != nil || sweepMemAvailable != nil {
                throw ValidationError("--sweep-models, --sweep-batches and --sweep-mem-available belong to --sweep")
            }
            return try validateOnly()
        }
        try validateSweep()
    }

    /// --sweep: CPU, known models, positive batches, and --only naming one of its rows.
    func validateSweep() throws {
        if savedBytes { throw ValidationError("--saved-bytes measures one training row: drop --sweep") }
        guard runtime.device == "cpu" else { throw ValidationError("--sweep measures the CPU (FMA peak, MemAvailable): drop --device \(runtime.device)") }
        for m in sweepModelList where m != CostSweep.tinyModel && (try? SiTConfig.named(m)) == nil {
            throw ValidationError("--sweep-models: unknown model '\(m)'; expected SiT-{S,B,L,XL}/{2,4,8} or \(CostSweep.tinyModel), comma-separated")
        }
        let given = sweepBatchText.split(separator: ",", omittingEmptySubsequences: false)
        guard !sweepModelList.isEmpty, given.allSatisfy({ (Int($0) ?? 0) >= 1 }) else {
            throw ValidationError("--sweep-models and --sweep-batches expect comma-separated names and positive sizes, got '\(sweepModels ?? "")' and '\(sweepBatches ?? "")'")
        }
        if let m = sweepMemAvailable, !(m > 0) { throw ValidationError("--sweep-mem-available must be a positive number of MiB, got \(m)") }
        if let only, !sweepNames.contains(only) {
            throw ValidationError("--only '\(only)' is not a --sweep row; rows are: \(sweepNames.joined(separator: ", "))")
        }
    }

    func validateOnly() throws {
        if savedBytes, only == nil || only == TrainBenchmarks.teacherRow || mmditNames.contains(only!) {
            throw ValidationError("--saved-bytes needs --only naming a SiT row; rows are: \(names.filter { $0 != TrainBenchmarks.teacherRow }.joined(separator: ", "))")
        }
        if let only, !names.contains(only) && !mmditNames.contains(only) {
            throw ValidationError("--only '\(only)' is not a row; rows are: \((names + mmditNames).joined(separator: ", "))")
        }
    }

    /// `--mixed-precision` resolved for `device` (auto: bf16 on CUDA, no on the CPU), in the flag's spelling.
    func precisionFlag(_ device: Device) -> String {
        (ComputePrecision(flag: mixedPrecision, device: device) ?? .float32).flag
    }

    func run() throws {
        if list {
            print((sweep ? sweepNames : names).joined(separator: "\n"))
            return
        }
        if sweep && only == nil {   // the sweep itself: this executable once per row (`--sweep --only ROW --json`)
            runtime.applyThreads()
            return try TrainSweep(command: self).run()
        }
        let device = try runtime.openDevice(allowTF32: allowTF32, hostOnlyAllowed: true)
        TrainBenchmarks.recomputeMLPActivation = recomputeMlpActivation
        if savedBytes { return try printSavedBytes(device: device) }
        let mmdit = only.map(mmditNames.contains) == true   // run only when named (not in --list)
        let cases = (mmdit ? MMDiTBenchmarks.cases(seed: runtime.seed, device: device, checkpointing: gradCheckpointing)
                           : TrainBenchmarks.cases(seed: runtime.seed, device: device, models: sweep ? sweepModelList : modelList,
                                                   batches: sweep ? sweepBatchList : batchList, checkpointing: gradCheckpointing,
                                                   mixedPrecision: precisionFlag(device)))
            .filter { only == nil || $0.op == only }
        if !json {
            print("haste bench train: \(device), mixed precision \(precisionFlag(device)), \(runtime.threads) threads, median of \(reps) steps after \(warmup) warm-up")
        }
        let results = try cases.map { try Benchmark.run($0, warmup: warmup, reps: reps, device: device) }
        let peak = Benchmark.peakRSSMB(), tensors = Benchmark.peakTensorMB(on: device)
        let mapped: Double? = device == .cpu ? Benchmark.peakMappedMB() : nil
        guard !json else {
            print(Benchmark.json(results, threads: runtime.threads, device: "\(device)", peakRSSMB: peak, peakTensorMB: tensors,
                                 peakMappedMB: mapped, mixedPrecision: precisionFlag(device)))
            return
        }
        print(Benchmark.table(results, flopUnit: device == .cpu ? "GFLOP/s" : "TFLOP/s"))
        for r in results { if let report = r.launchReport { print("\(r.op): \(report)") } }
        for line in Benchmark.tunerDecisions(device) { print(line) }
        let kind = device == .cpu ? "host" : "device"
        print(String(format: "peak RSS %.0f MiB, peak tensor storage %.0f MiB ", peak, tensors)
              + (mapped.map { String(format: "(large blocks mapped, live + cached: %.0f MiB) ", $0) } ?? "")
              + "(\(kind); whole process; use --only ROW for one row's peaks)")
    }

    /// `--saved-bytes`: one step of the --only row, the graph's saved bytes printed before its backward.
    func printSavedBytes(device: Device) throws {
        let row = only!, kind: TrainBenchmarks.Kind = row.contains("+align") ? .align : row.contains("+stopped") ? .stopped : .plain
        let model = String(row.split(separator: " ")[0]), batch = Int(row.split(separator: " ")[1].dropFirst(2))!
        let (step, data) = try TrainBenchmarks.trainingStep(model: model, batch: batch, kind: kind, seed: runtime.seed, device: device,
                                                            checkpointing: gradCheckpointing, mixedPrecision: precisionFlag(device))
        step.inspectLoss = { loss in
            print("\(row): bytes held for backward (Tensor.savedBytes; parameters excluded)")
            print(Tensor.savedBytes(from: [loss]).table)
        }
        step(data, generator: RandomGenerator(seed: runtime.seed &+ 4))
    }
}
