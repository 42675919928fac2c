import Foundation
import Testing
import HasteIO
import HasteModels
import HasteTensor
@testable import HasteTraining

/// `haste bench train --sweep`, `haste doctor`'s FMA peak and `haste plot --tsv` run as a user runs them (issue #15
/// item 4). The sweep runs the tiny model at batch 1 for one timed step: its timings are only checked to be numbers
/// that agree with each other, never against a speed.
@Suite struct SweepCommandTests {
    static func sweep(batches: String = "1", _ extra: [String] = []) -> [String] {
        ["bench", "train", "--sweep", "--sweep-models", CostSweep.tinyModel, "--sweep-batches", batches,
         "--reps", "1", "--warmup", "0", "--threads", "1"] + extra
    }

    static func tinyFLOPs() throws -> Double {
        var config = TrainConfig()
        CostSweep.apply(model: CostSweep.tinyModel, to: &config)
        return try config.studentConfig(sampleShape: [4, 32, 32], numClasses: 1000).trainingFLOPs(batch: 1)
    }

    static func number(_ v: Any?) -> Double? { (v as? NSNumber)?.doubleValue }

    static func object(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    @Test func sweepTablePrintsEveryColumn() throws {
        let r = try Launcher.run(Self.sweep(), timeout: 300)
        #expect(r.status == 0, "\(r)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("haste bench train --sweep: ") == true && lines.contains { $0.hasPrefix("float32 FMA peak: measured ") })
        let header = try #require(lines.first { $0.hasPrefix("row ") }, "\(r)")
        for column in ["step ms", "img/s", "GFLOP/step", "GFLOP/s", "% FMA peak", "tensor MiB", "mapped MiB", "RSS MiB"] {
            #expect(header.contains(column), "\(column) missing from \(header)")
        }
        let row = try #require(lines.first { $0.hasPrefix("SiT-tiny/4 bs1 ") }, "\(r)")
        let cells = row.dropFirst("SiT-tiny/4 bs1".count).split(separator: " ").map(String.init)
        #expect(cells.count == 8 && cells.allSatisfy { (Double($0) ?? -1) >= 0 }, "\(row)")           // % of peak may round to 0.0
        let gflop = try Self.tinyFLOPs() / 1e9
        #expect(cells.count == 8 && cells[2] == String(format: "%.3f", gflop), "\(row)")   // 0.501 GFLOP
    }

    @Test func sweepJSONHasEveryColumnAndTheFiguresAgree() throws {
        let r = try Launcher.run(Self.sweep(["--json"]), timeout: 300)
        #expect(r.status == 0, "\(r)")
        let report = try Self.object(r.stdout)
        for key in ["threads", "device", "cpu", "cpu_flags", "fma_peak_gflops", "mem_available_mb", "rows"] { #expect(report[key] != nil, "\(key)") }
        let rows = try #require(report["rows"] as? [[String: Any]])
        try #require(rows.count == 1)
        let row = rows[0]
        for key in ["ms_median", "ms_min", "img_per_s", "gflop_per_step", "gflops", "fma_peak_pct", "peak_tensor_mb", "peak_mapped_mb", "peak_rss_mb"] {
            #expect((Self.number(row[key]) ?? 0) > 0, "\(key): \(String(describing: row[key]))")
        }
        #expect(row["op"] as? String == "SiT-tiny/4 bs1" && row["model"] as? String == CostSweep.tinyModel && Self.number(row["batch"]) == 1)
        #expect(Self.number(row["reps"]) == 1 && row["skipped"] == nil)
        let gflop = try #require(Self.number(row["gflop_per_step"])), ms = try #require(Self.number(row["ms_median"]))
        let gflops = try #require(Self.number(row["gflops"])), peak = try #require(Self.number(report["fma_peak_gflops"]))
        let expected = try Self.tinyFLOPs() / 1e9
        #expect(gflop == expected)
        #expect(abs(gflops - gflop / (ms * 1e-3)) <= 1e-9 * gflops)
        #expect(abs(Self.number(row["img_per_s"])! - 1 / (ms * 1e-3)) <= 1e-9 * Self.number(row["img_per_s"])!)
        #expect(abs(Self.number(row["fma_peak_pct"])! - 100 * gflops / peak) <= 1e-9 * Self.number(row["fma_peak_pct"])!)
        #expect(Self.number(row["peak_rss_mb"])! >= Self.number(row["peak_tensor_mb"])!)
    }

    /// With 1 MiB available the tiny model's weights and AdamW state alone are over 80% of it: every row is
    /// skipped with the reason before any process starts.
    @Test func rowsThatWouldNotFitAreSkippedNotAttempted() throws {
        let json = try Launcher.run(Self.sweep(batches: "4,1", ["--json", "--sweep-mem-available", "1"]), timeout: 120)
        #expect(json.status == 0, "\(json)")
        let rows = try #require(try Self.object(json.stdout)["rows"] as? [[String: Any]])
        #expect(rows.map { $0["op"] as? String } == ["SiT-tiny/4 bs1", "SiT-tiny/4 bs4"])
        for row in rows {
            let why = row["skipped"] as? String ?? ""
            #expect(why.hasPrefix("predicted peak ") && why.hasSuffix("> 80% of MemAvailable 1 MiB"), "\(why)")
            #expect(row["ms_median"] == nil && row["peak_rss_mb"] == nil && Self.number(row["gflop_per_step"]) != nil)
        }
        let text = try Launcher.run(Self.sweep(["--sweep-mem-available", "1"]), timeout: 120)
        #expect(text.status == 0 && text.stdout.contains("SiT-tiny/4 bs1") && text.stdout.contains("skipped: predicted peak"), "\(text)")
    }

    @Test func sweepFlagsAreChecked() throws {
        func refused(_ args: [String], _ message: String) throws {
            let r = try Launcher.run(["bench", "train"] + args, timeout: 60)
            #expect(r.status == 64 && r.stderr.contains(message), "\(args): \(r)")
        }
        try refused(["--sweep", "--sweep-models", "SiT-M/2"], "--sweep-models: unknown model 'SiT-M/2'")
        try refused(["--sweep", "--sweep-batches", "1,0"], "positive sizes")
        try refused(["--sweep-batches", "4"], "belong to --sweep")
        try refused(["--sweep", "--device", "cuda"], "--sweep measures the CPU")
        try refused(["--sweep", "--only", "SiT-S/2 bs4 +align"], "is not a --sweep row")
        try refused(["--sweep", "--sweep-mem-available", "0"], "--sweep-mem-available must be a positive number")
        let list = try Launcher.run(["bench", "train", "--sweep", "--list", "--sweep-models", "SiT-S/2,SiT-XL/2", "--sweep-batches", "16,1"], timeout: 60)
        #expect(list.status == 0 && list.stdout == "SiT-S/2 bs1\nSiT-S/2 bs16\nSiT-XL/2 bs1\nSiT-XL/2 bs16\n", "\(list)")
    }

    @Test func doctorPrintsTheFMAPeakOnPaperAndMeasured() throws {
        let r = try Launcher.run(["doctor", "--threads", "1"], timeout: 120)
        #expect(r.status == 0, "\(r)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("cpu features: avx2 ") && $0.contains("fma ") && $0.contains("avx512f ") }, "\(r.stdout)")
        let measured = try #require(lines.first { $0.hasPrefix("float32 FMA peak measured: ") }, "\(r.stdout)")
        let value = Double(measured.dropFirst("float32 FMA peak measured: ".count).prefix { $0 != " " })
        #expect((value ?? 0) > 0 && measured.contains(CPUKernels.level == 2 ? "haste AVX-512 sgemm" : "OpenBLAS sgemm") && measured.hasSuffix(", 1 threads)"), "\(measured)")
        let json = try Self.object(try Launcher.run(["doctor", "--threads", "1", "--json"], timeout: 120).stdout)
        #expect((Self.number(json["fma_peak_gflops"]) ?? 0) > 0 && Self.number(json["threads"]) == 1)
        #expect((json["cpu_flags"] as? [String: Any]).map { Set($0.keys) } == Set(["avx2", "fma", "avx512f"]))
        guard CPUPeak.theoretical() != nil else { return }                // no /proc/cpuinfo (not Linux): no paper peak
        let paper = try #require(lines.first { $0.hasPrefix("float32 FMA peak on paper: ") }, "\(r.stdout)")
        #expect(paper.hasSuffix("FMA units × 2"), "\(paper)")
        for input in ["cores", "clock", "lanes", "FMA units"] { #expect(lines.contains { $0.hasPrefix("  \(input): ") }, "\(input)") }
        let inputs = try #require(json["fma_peak_theoretical_inputs"] as? [String: Any])
        let product = ["cores", "clock_ghz", "lanes", "fma_units"].map { Self.number(inputs[$0]) ?? .nan }.reduce(2, *)
        let theoretical = try #require(Self.number(json["fma_peak_theoretical_gflops"]))
        #expect(theoretical > 0 && abs(product - theoretical) <= 1e-9 * theoretical)
    }

    @Test func plotTSVWritesThePNGOfTheTableAndRefusesBadFlags() throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tsv = "\(root)/sweep.tsv"
        try CostSweepTests.sweepTSV.write(toFile: tsv, atomically: true, encoding: .utf8)
        let r = try Launcher.run(["plot", "--tsv", tsv, "--x", "batch", "--y", "img_per_s", "--series", "series", "--log-x", "--log-y"], timeout: 120)
        #expect(r.status == 0 && r.stdout == "\(root)/sweep.png\n", "\(r)")
        let image = try PNGImage.read("\(root)/sweep.png")
        let expected = try TablePlot.plot(text: CostSweepTests.sweepTSV, path: tsv, x: "batch", y: "img_per_s", series: "series", logX: true, logY: true)
        #expect(image.width == 800 && image.height == 480 && image.pixels == expected.render().pixels)
        let column = try Launcher.run(["plot", "--tsv", tsv, "--x", "batch", "--y", "ips"], timeout: 60)
        #expect(column.status != 0 && column.stderr.contains("has no column 'ips' (--y)"), "\(column)")
        let missing = try Launcher.run(["plot", "--tsv", "\(root)/none.tsv", "--x", "batch", "--y", "img_per_s"], timeout: 60)
        #expect(missing.status != 0 && missing.stderr.contains("none.tsv: no such file"), "\(missing)")
        try "batch\timg_per_s\n1\t2\n4\t0\n".write(toFile: "\(root)/zero.tsv", atomically: true, encoding: .utf8)
        let zero = try Launcher.run(["plot", "--tsv", "\(root)/zero.tsv", "--x", "batch", "--y", "img_per_s", "--log-y"], timeout: 60)
        #expect(zero.status != 0 && zero.stderr.contains("zero.tsv: line 3: 0 in column 'img_per_s' cannot go on a log axis (--log-y)"), "\(zero)")
        #expect(!FileManager.default.fileExists(atPath: "\(root)/zero.png"))
        for (args, message) in [(["--tsv", tsv, "--x", "batch"], "--tsv needs --x COL and --y COL"),
                                (["--tsv", tsv, "--x", "batch", "--y", "img_per_s", root], "--tsv draws a table, not run directories"),
                                (["--tsv", tsv, "--x", "batch", "--y", "img_per_s", "--metric", "loss"], "drop --table, --metric"),
                                ([root, "--log-x"], "belong to --tsv FILE"), ([root, "--log-y"], "--log-y and --title belong to --tsv FILE")] {
            let bad = try Launcher.run(["plot"] + args, timeout: 60)
            #expect(bad.status == 64 && bad.stderr.contains(message), "\(args): \(bad)")
        }
    }
}
