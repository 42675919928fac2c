import ArgumentParser
import Foundation
import HasteCUDA
import HasteIO
import HasteSelftest
import HasteTensor

/// `haste selftest`: the conformance suite inside the binary (issue 11 §4): every op forward and backward on the
/// device against the CPU, then a tiny HASTE training run on both; a GPU node needs no Swift toolchain for it.
struct Selftest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a device's kernels against the CPU reference (every op, then 20 steps of a tiny HASTE run).",
        discussion: """
            Prints one row per op case (max abs and normwise relative error, the bound, pass/fail) and a final PASS \
            or FAIL line; exits 1 on any failure. `--device cpu` compares the CPU with itself (a sanity run). \
            `--compile-only` compiles every CUDA kernel source with NVRTC for sm_75, sm_80 and sm_90 without a GPU (the pre-sm_80 branches of the prelude included).
            """)

    @OptionGroup var runtime: RuntimeOptions
    @Flag(help: "Print the report as JSON (rows, bounds, both loss curves) instead of the table.")
    var json = false
    @Option(help: ArgumentHelp("Also write the JSON report to this file (the table still prints row by row).", valueName: "path"))
    var jsonOutput: String?
    @Option(help: ArgumentHelp("Only op cases whose name contains one of these comma-separated words; the training comparison runs only when 'training' is among them.",
                               valueName: "FILTER"))
    var ops: String?
    @Flag(help: "Only compile the CUDA kernel sources with NVRTC (sm_80, sm_90): needs NVRTC, not a GPU.")
    var compileOnly = false
    @Flag(help: "List the op case names and exit.")
    var list = false
    @Option(help: ArgumentHelp("Instead of the op cases (repeatable): haste's bf16 autocast of the tiny SiT or DINOv2 teacher on --device against torch's own run in this fixture (Scripts/fixtures/make_bf16_fixture.py --device cuda --only bf16_sit,bf16_dinov2 --out DIR, on the GPU node: torch's CUDA autocast), in units of the bf16 effect itself.",
                               valueName: "bf16_sit.safetensors"))
    var torchFixture: [String] = []

    func validate() throws {
        if let ops, !ops.lowercased().contains("training"), ConformanceSuite.cases(matching: ops).isEmpty {
            throw ValidationError("--ops '\(ops)' matches no case; `haste selftest --list` prints them")
        }
    }

    func run() throws {
        if list {
            print((ConformanceSuite.cases.map(\.name) + ["training"]).joined(separator: "\n"))
            return
        }
        if compileOnly { return try SelftestCompile.run(json: json) }
        let device = try runtime.openDevice()
        if !torchFixture.isEmpty {
            var passed = true
            for path in torchFixture {
                let tensors = try SafetensorsFile(path: path).tensors().mapValues { $0.dtype == .float32 ? $0 : $0.to(.float32) }
                let report = try TorchFixtureCheck.run(tensors, path: path, device: device)
                print(report.lines.joined(separator: "\n"))
                passed = passed && report.passed
            }
            if !passed { throw ExitCode(1) }
            return
        }
        let cases = ConformanceSuite.cases(matching: ops)
        let withTraining = ops == nil || ops!.lowercased().contains("training")
        if !json {
            print("haste selftest: \(device) against cpu, \(cases.count) op cases\(withTraining ? " + tiny HASTE training" : "")")
            print(SelftestReport.header)
        }
        // The TF32 rows: the device opened with TF32 allowed for their device half (as `--tf32` opens it), then as it was.
        let tf32Switch: TF32Switch? = {
            guard case let .cuda(index) = device, let driver = (Backends.registered(device) as? CUDABackend)?.driver else { return nil }
            return { body in
                let was = driver.allowTF32
                _ = try? CUDA.open(index: index, allowTF32: true)
                body()
                _ = try? CUDA.open(index: index, allowTF32: was)
            }
        }()
        let rows = ConformanceSuite.run(cases, on: device, seed: runtime.seed, tf32Switch: tf32Switch) { row in
            if !json { print(SelftestReport.line(row)); fflush(stdout) }
        }
        let training = withTraining ? try TrainingComparison.run(device: device, seed: runtime.seed) : nil
        let report = SelftestReport(device: "\(device)", rows: rows, training: training)
        if let jsonOutput {
            do { try report.json().write(toFile: jsonOutput, atomically: true, encoding: .utf8) } catch {
                throw HasteError.unsupported("selftest: could not write \(jsonOutput): \(error)")
            }
        }
        if json {
            print(report.json())
        } else {
            print("\n" + ConformanceSuite.boundNote)
            if training != nil { print("\n" + report.trainingLines().joined(separator: "\n") + "\n" + ConformanceSuite.trainingBoundNote) }
            print("")
            print(report.verdict)
        }
        if !report.passed { throw ExitCode(1) }
    }
}
