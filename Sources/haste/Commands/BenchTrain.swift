import ArgumentParser
import Foundation

/// `haste bench train`: one full training step per row (forward, HASTE loss, backward, clip, AdamW) and the
/// teacher's forward, in img/s. `Scripts/bench_compare.sh train` runs each row in its own process (`--only`),
/// next to the same row of Scripts/bench_torch_train.py, so that the peak RSS printed belongs to that row.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Time full training steps of SiT-S/2 and SiT-B/2 (± HASTE alignment) and the DINOv2-B forward.")

    @OptionGroup var runtime: RuntimeOptions
    @Flag(help: "Print JSON {threads, device, peak_rss_mb, rows: [{op, shape, ms_median, ms_min, rate, unit, reps}]}.")
    var json = false
    @Option(help: "Timed steps per row (the median is reported).") var reps = 3
    @Option(help: "Untimed warm-up steps per row.") var warmup = 1
    @Option(help: "Run only the row with exactly this name (see --list); one row per process attributes the peak RSS.")
    var only: String?
    @Flag(help: "Print the row names, one per line, and exit.") var list = false
    @Option(help: ArgumentHelp("Models of the training rows, comma-separated (GPU: SiT-B/2,SiT-XL/2).", valueName: "names"))
    var models = TrainBenchmarks.models.joined(separator: ",")
    @Option(help: ArgumentHelp("Batch sizes of the training rows, comma-separated (GPU: 16,64).", valueName: "sizes"))
    var batches = TrainBenchmarks.batches.map(String.init).joined(separator: ",")
    @Flag(name: .customLong("allow-tf32"), help: "float32 GEMMs on CUDA may use TF32 tensor cores (the reference's --allow-tf32).")
    var allowTF32 = false
    @Flag(help: "Train with grad-checkpointing (each block's activations recomputed in backward); rows are named \"… +ckpt\".")
    var gradCheckpointing = false

    var modelList: [String] { models.split(separator: ",").map(String.init) }
    var batchList: [Int] { batches.split(separator: ",").compactMap { Int($0) } }
    var names: [String] { TrainBenchmarks.names(models: modelList, batches: batchList, checkpointing: gradCheckpointing) }
    var mmditNames: [String] { MMDiTBenchmarks.names(checkpointing: gradCheckpointing) }

    func validate() throws {
        guard reps >= 1, warmup >= 0 else { throw ValidationError("--reps must be ≥ 1 and --warmup ≥ 0") }
        guard !modelList.isEmpty, batchList.count == batches.split(separator: ",").count, batchList.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--models and --batches expect comma-separated names and positive sizes, got '\(models)' and '\(batches)'")
        }
        if let only, !names.contains(only) && !mmditNames.contains(only) {
            throw ValidationError("--only '\(only)' is not a row; rows are: \((names + mmditNames).joined(separator: ", "))")
        }
    }

    func run() throws {
        if list {
            print(names.joined(separator: "\n"))
            return
        }
        let device = try runtime.openDevice(allowTF32: allowTF32)
        let mmdit = only.map(mmditNames.contains) == true   // run only when named (not in --list)
        let cases = (mmdit ? MMDiTBenchmarks.cases(seed: runtime.seed, device: device, checkpointing: gradCheckpointing)
                           : TrainBenchmarks.cases(seed: runtime.seed, device: device, models: modelList, batches: batchList,
                                                   checkpointing: gradCheckpointing))
            .filter { only == nil || $0.op == only }
        if !json {
            print("haste bench train: \(device), \(runtime.threads) threads, median of \(reps) steps after \(warmup) warm-up")
        }
        let results = try cases.map { try Benchmark.run($0, warmup: warmup, reps: reps, device: device) }
        let peak = Benchmark.peakRSSMB(), tensors = Benchmark.peakTensorMB(on: device)
        guard !json else {
            print(Benchmark.json(results, threads: runtime.threads, device: "\(device)", peakRSSMB: peak, peakTensorMB: tensors))
            return
        }
        print(Benchmark.table(results))
        let kind = device == .cpu ? "host" : "device"
        print(String(format: "peak RSS %.0f MiB, peak tensor storage %.0f MiB ", peak, tensors)
              + "(\(kind); whole process; use --only ROW for one row's peaks)")
    }
}
