import ArgumentParser
import Foundation
import HasteTensor

/// `haste bench …`: timings of release builds (STYLE §4.1); compare with Scripts/bench_compare.sh.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time kernels and models (build with -c release).",
        subcommands: [BenchOpsCommand.self, BenchTrainCommand.self, BenchSampleCommand.self, BenchDataCommand.self, BenchAllReduceCommand.self])
}

/// `haste bench ops`: per-op timings at SiT-B/2 shapes, with GFLOP/s or GB/s.
struct BenchOpsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ops", abstract: "Time single ops at SiT-B/2 shapes.")

    @OptionGroup var runtime: RuntimeOptions
    @Flag(help: "Print JSON {threads, device, rows: [{op, shape, ms_median, ms_min, rate, unit, reps}]}.")
    var json = false
    @Option(help: "Timed repetitions per row (the median is reported).") var reps = 10
    @Option(help: "Untimed warm-up runs per row.") var warmup = 2
    @Option(help: "Only rows whose name contains this text.") var filter: String?
    @Option(help: "Only the row with exactly this name (see --list).") var only: String?
    @Flag(help: "Print the row names, one per line, and exit.") var list = false

    func validate() throws {
        guard reps >= 1, warmup >= 0 else { throw ValidationError("--reps must be ≥ 1 and --warmup ≥ 0") }
        let names = OpBenchmarks.cases(seed: 0).map(\.op)
        if let only, !names.contains(only) {
            throw ValidationError("--only '\(only)' is not a row; rows are: \(names.joined(separator: ", "))")
        }
    }

    func run() throws {
        if list {
            print(OpBenchmarks.cases(seed: 0).map(\.op).joined(separator: "\n"))
            return
        }
        let device = try runtime.openDevice()
        let cases = OpBenchmarks.cases(seed: runtime.seed, device: device)
            .filter { (filter == nil || $0.op.contains(filter!)) && (only == nil || $0.op == only) }
        if !json {
            print("haste bench ops: \(device), \(runtime.threads) threads, median of \(reps) after \(warmup) warm-up")
        }
        let results = try cases.map { try Benchmark.run($0, warmup: warmup, reps: reps, device: device) }
        guard !json else {
            print(Benchmark.json(results, threads: runtime.threads, device: "\(device)"))
            return
        }
        print(Benchmark.table(results))
        if let gemm = results.first(where: { $0.op == "sgemm (cblas)" }), let linear = results.first(where: { $0.op == "linear fwd" }) {
            print(String(format: "linear fwd runs at %.0f%% of raw sgemm throughput", 100 * linear.rate / gemm.rate))
        }
    }
}
