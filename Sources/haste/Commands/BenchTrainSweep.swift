import Foundation
import HasteModels
import HasteTensor
import HasteTraining

/// `haste bench train --sweep` (issue #15 item 4): how a training step's cost grows over SiT sizes × batch sizes,
/// with the denoising step of the train rows (`TrainBenchmarks.step` without alignment). As in
/// Scripts/bench_compare.sh, every row runs in a process of its own (this executable, `--sweep --only ROW
/// --json`), so the peak RSS is that row's. Per model the batches run in increasing order, each first predicted
/// from the smaller ones (`CostSweep.peakModel`, from their peak RSS): a row predicted above 80% of MemAvailable
/// is skipped with the reason, never attempted; a row that fails skips the model's larger ones.
struct TrainSweep {
    let command: BenchTrainCommand

    /// One row of the table and of `--json`: measured, or skipped with the reason.
    struct Row: Encodable {
        let op: String, model: String, batch: Int
        /// Analytic: `SiTConfig.trainingFLOPs` (3 × the forward's matmul MACs × 2).
        let gflopPerStep: Double
        var msMedian: Double?, msMin: Double?, imagesPerSecond: Double?, gflops: Double?, peakPercent: Double?
        var peakTensorMB: Double?, peakMappedMB: Double?, peakRSSMB: Double?, reps: Int?
        var skipped: String?

        private enum CodingKeys: String, CodingKey {
            case op, model, batch, gflopPerStep = "gflop_per_step", msMedian = "ms_median", msMin = "ms_min",
                 imagesPerSecond = "img_per_s", gflops, peakPercent = "fma_peak_pct", peakTensorMB = "peak_tensor_mb",
                 peakMappedMB = "peak_mapped_mb", peakRSSMB = "peak_rss_mb", reps, skipped
        }
    }

    struct Report: Encodable {
        let threads: Int, device: String, cpu: String, cpuFlags: [String: Bool]
        let fmaPeakGflops: Double, fmaPeakTheoreticalGflops: Double?, memAvailableMB: Double?
        let rows: [Row]

        private enum CodingKeys: String, CodingKey {
            case threads, device, cpu, cpuFlags = "cpu_flags", fmaPeakGflops = "fma_peak_gflops",
                 fmaPeakTheoreticalGflops = "fma_peak_theoretical_gflops", memAvailableMB = "mem_available_mb", rows
        }
    }

    /// What a row's process prints (`Benchmark.json`), read back.
    struct RowReport: Decodable {
        struct Timing: Decodable { let op: String, msMedian: Double, msMin: Double, rate: Double, reps: Int }
        let rows: [Timing]
        let peakRssMb: Double?, peakTensorMb: Double?, peakMappedMb: Double?
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    static let columns = ["row", "step ms", "img/s", "GFLOP/step", "GFLOP/s", "% FMA peak", "tensor MiB", "mapped MiB", "RSS MiB"]
    static let widths = [20, 10, 9, 11, 9, 11, 11, 11, 9]

    func run() throws {
        let threads = command.runtime.threads, info = CPUInfo.current()
        let theoretical = CPUPeak.theoretical(), peak = CPUPeak.measure(threads: threads)
        let available = command.sweepMemAvailable ?? CostSweep.memAvailableMiB()
        let cpu = info.model ?? "unknown CPU"
        if !command.json {
            let flags = info.simdFlags.map { "\($0.name) \($0.present ? "yes" : "no")" }.joined(separator: ", ")
            print("haste bench train --sweep: \(cpu) (\(flags)), \(threads) threads, median of \(command.reps) steps after \(command.warmup) warm-up, one process per row")
            print(String(format: "float32 FMA peak: measured %.0f GFLOP/s (\(peak.kernel) %d³)", peak.gflops, peak.size)
                  + (theoretical.map { String(format: ", on paper %.0f GFLOP/s (haste doctor shows how)", $0.gflops) } ?? ""))
            print(available.map { String(format: "MemAvailable %.0f MiB: rows predicted above %.0f%% of it are skipped", $0, 100 * CostSweep.memoryShare) }
                  ?? "MemAvailable unknown (no /proc/meminfo): no row is skipped")
            print(Self.format(Self.columns))
        }
        var rows: [Row] = []
        for model in command.sweepModelList {
            let config = try TrainBenchmarks.config(model: model, batch: 1, align: false, seed: command.runtime.seed).1.student
                .sitConfig(for: "--sweep")
            let fixed = try CostSweep.fixedMiB(config)
            var measured: [CostSweep.Point] = [], stop: String?
            for batch in command.sweepBatchList {
                var row = Row(op: TrainBenchmarks.name(model, batch, align: false), model: model, batch: batch,
                              gflopPerStep: config.trainingFLOPs(batch: batch) / 1e9)
                let fit = CostSweep.peakModel(measured: measured, fixedMiB: fixed)
                if let stop {
                    row.skipped = stop
                } else if let available, let why = CostSweep.skipReason(batch: batch, model: fit, memAvailableMiB: available) {
                    row.skipped = why
                } else {
                    do {
                        let (timing, report) = try runRow(row.op, model: model, batch: batch)
                        (row.msMedian, row.msMin, row.imagesPerSecond, row.reps) = (timing.msMedian, timing.msMin, timing.rate, timing.reps)
                        let gflops = row.gflopPerStep / (timing.msMedian * 1e-3)
                        (row.gflops, row.peakPercent) = (gflops, 100 * gflops / peak.gflops)
                        (row.peakTensorMB, row.peakMappedMB, row.peakRSSMB) = (report.peakTensorMb, report.peakMappedMb, report.peakRssMb)
                        if let rss = report.peakRssMb, rss.isFinite { measured.append(CostSweep.Point(batch: batch, peakMiB: rss)) }
                    } catch {
                        row.skipped = "failed: \(error)"
                        stop = "not run: batch \(batch) failed"
                    }
                }
                if !command.json { print(Self.line(row)) }
                rows.append(row)
            }
        }
        guard command.json else { return }
        let report = Report(threads: threads, device: "cpu", cpu: cpu,
                            cpuFlags: Dictionary(uniqueKeysWithValues: info.simdFlags.map { ($0.name, $0.present) }),
                            fmaPeakGflops: peak.gflops, fmaPeakTheoreticalGflops: theoretical?.gflops, memAvailableMB: available, rows: rows)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }

    /// One row in a process of its own; its `--json` report.
    func runRow(_ op: String, model: String, batch: Int) throws -> (RowReport.Timing, RowReport) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.executable)
        p.arguments = ["bench", "train", "--sweep", "--only", op, "--json", "--sweep-models", model, "--sweep-batches", "\(batch)",
                       "--threads", "\(command.runtime.threads)", "--reps", "\(command.reps)", "--warmup", "\(command.warmup)",
                       "--seed", "\(command.runtime.seed)", "--mixed-precision", command.mixedPrecision] + (command.gradCheckpointing ? ["--grad-checkpointing"] : [])
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationReason == .exit, p.terminationStatus == 0 else {
            let status = p.terminationStatus
            throw Failure(description: p.terminationReason == .uncaughtSignal
                          ? "killed by signal \(status)\(status == 9 ? " (out of memory?)" : "")" : "exit status \(status)")
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        guard let report = try? decoder.decode(RowReport.self, from: data), let timing = report.rows.first(where: { $0.op == op }) else {
            throw Failure(description: "its output is not a --json report: \(String(decoding: data.prefix(200), as: UTF8.self))")
        }
        return (timing, report)
    }

    /// This executable (/proc/self/exe on Linux).
    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? Bundle.main.executablePath ?? CommandLine.arguments[0]
    }

    /// The table line of a row: its figures, or "skipped: why".
    static func line(_ r: Row) -> String {
        if let why = r.skipped { return format([r.op]) + "  skipped: " + why }
        func f(_ v: Double?, _ spec: String) -> String { v.map { String(format: spec, $0) } ?? "-" }
        return format([r.op, f(r.msMedian, "%.1f"), f(r.imagesPerSecond, "%.2f"), amount(r.gflopPerStep), r.gflops.map(amount) ?? "-",
                       f(r.peakPercent, "%.1f"), f(r.peakTensorMB, "%.0f"), f(r.peakMappedMB, "%.0f"), f(r.peakRSSMB, "%.0f")])
    }

    /// GFLOP figures from the tiny model's 0.5 to SiT-XL/2's 45 000: 3 significant digits, no exponent.
    static func amount(_ v: Double) -> String {
        String(format: v >= 100 ? "%.0f" : v >= 1 ? "%.1f" : "%.3f", v)
    }

    /// Cells padded to `widths`: the row name left-aligned, figures right-aligned.
    static func format(_ cells: [String]) -> String {
        cells.enumerated().map { i, c -> String in
            let pad = String(repeating: " ", count: max(0, widths[i] - c.count))
            return i == 0 ? c + pad : pad + c
        }.joined(separator: "  ")
    }
}
