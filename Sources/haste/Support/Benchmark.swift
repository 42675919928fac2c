import Foundation

/// One row of `haste bench`: what runs, at which shape, how much work it does (napkin math: FLOPs for
/// GEMMs, bytes moved for memory-bound kernels), and `prepare`, which builds the inputs (untimed) and returns
/// the closure that is timed. Rows must do the same work as Scripts/bench_torch.py's row of the same name.
struct BenchCase {
    enum Work { case flops(Double), bytes(Double) }
    let op: String
    let shape: String
    let work: Work
    let prepare: () -> () -> Void
}

struct BenchResult: Encodable {
    let op: String
    let shape: String
    let msMedian: Double
    let msMin: Double
    /// GFLOP/s or GB/s at the median time.
    let rate: Double
    let unit: String
    let reps: Int

    private enum CodingKeys: String, CodingKey {
        case op, shape, msMedian = "ms_median", msMin = "ms_min", rate, unit, reps
    }
}

/// Warm-up runs, then `reps` timed runs; the median is the figure quoted, the minimum shows the noise floor.
enum Benchmark {
    static func run(_ c: BenchCase, warmup: Int, reps: Int) -> BenchResult {
        let body = c.prepare()
        for _ in 0..<warmup { body() }
        let clock = ContinuousClock()
        var ms: [Double] = []
        for _ in 0..<max(reps, 1) {
            let elapsed = clock.measure { body() }
            ms.append(Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) * 1e-15)
        }
        ms.sort()
        let median = ms.count % 2 == 1 ? ms[ms.count / 2] : (ms[ms.count / 2 - 1] + ms[ms.count / 2]) / 2
        let (amount, unit): (Double, String)
        switch c.work {
        case let .flops(f): (amount, unit) = (f, "GFLOP/s")
        case let .bytes(b): (amount, unit) = (b, "GB/s")
        }
        return BenchResult(op: c.op, shape: c.shape, msMedian: median, msMin: ms[0], rate: amount / (median * 1e-3) / 1e9,
                           unit: unit, reps: ms.count)
    }

    /// op | shape | ms (median) | ms (min) | rate, aligned.
    static func table(_ results: [BenchResult]) -> String {
        let rows = [["op", "shape", "ms (median)", "ms (min)", "rate"]] + results.map {
            [$0.op, $0.shape, String(format: "%.3f", $0.msMedian), String(format: "%.3f", $0.msMin),
             String(format: "%.1f %@", $0.rate, $0.unit)]
        }
        let widths = (0..<5).map { col in rows.map { $0[col].count }.max() ?? 0 }
        return rows.map { row in
            (0..<5).map { col in
                col < 2 ? row[col].padding(toLength: widths[col], withPad: " ", startingAt: 0)
                        : String(repeating: " ", count: widths[col] - row[col].count) + row[col]
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    static func json(_ results: [BenchResult], threads: Int, device: String) -> String {
        struct Report: Encodable { let threads: Int; let device: String; let rows: [BenchResult] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(Report(threads: threads, device: device, rows: results)))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
