import Foundation
import HasteTensor

/// `haste selftest`: every kernel family's ops forward and backward on the device under test against the CPU
/// reference (STYLE §2.9, R12), then a tiny HASTE training run on both. Lives in the binary because a GPU node
/// may have no Swift toolchain.
public enum ConformanceSuite {
    /// Every case, in table order.
    public static var cases: [OpCase] {
        elementwiseCases + fusedCases + matmulCases + movementCases + castCases + imageCases + randomCases + optimizerCases
            + autocastCases
    }

    /// The cases whose name contains any of the comma-separated `filter` words (case-insensitive); all when nil.
    public static func cases(matching filter: String?) -> [OpCase] {
        guard let filter, !filter.isEmpty else { return cases }
        let words = filter.lowercased().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return cases.filter { c in words.contains { !$0.isEmpty && c.name.lowercased().contains($0) } }
    }

    /// Runs `cases` on `device` against the CPU; `progress` hears each row as it completes.
    /// `tf32Switch`: how the cases with `tf32` turn the device's TF32 mode on (nil: they run in float32).
    public static func run(_ cases: [OpCase], on device: Device, seed: UInt64 = 0, tf32Switch: TF32Switch? = nil,
                           progress: (ConformanceRow) -> Void = { _ in }) -> [ConformanceRow] {
        cases.enumerated().map { i, c in
            let row = c.run(on: device, seed: seed &+ UInt64(i) &* 0x9E37_79B9, tf32Switch: tf32Switch)
            progress(row)
            return row
        }
    }

    public static let boundNote = """
        Errors are normwise: max|device − cpu| / max|cpu| per output, the worst output per row. Bounds: \
        exact = bit for bit (copies, gathers, casts, Philox uniforms); 4·k·u = float32 rounding of a chain of k \
        operations or a k-term sum in any order (u = 2⁻²⁴; CUDA float math ≤ 2 ulp; no TF32 but in the TF32 rows: \
        4·k·u_tf32, u_tf32 = 2⁻¹¹).
        """

    public static let trainingBoundNote = """
        Training bound: the total loss of each of the \(TinyHASTE.steps) steps within \(TrainingComparison.bound) of the \
        CPU's, relative. Correct float32 kernels differ by a few ulp per op; on the CPU, ±2-ulp noise on every GEMM \
        output moves these losses by < 1e-7 over the 20 steps (test trainingBoundHoldsWhenGEMMsRoundDifferently), \
        so 1e-4 leaves a margin of 1000×, while one slightly wrong kernel (layerNorm with the unbiased variance, \
        0.8 %) moves them by more (test trainingComparisonFailsWhenLayerNormIsSlightlyWrong).
        """
}

/// The whole run, for printing and JSON.
public struct SelftestReport: Sendable {
    public let device: String
    public let rows: [ConformanceRow]
    public let training: TrainingComparison?
    public var passed: Bool { rows.allSatisfy(\.passed) && (training?.passed ?? true) }
    public var failures: [String] {
        rows.filter { !$0.passed }.map(\.name) + (training.map { $0.passed ? [] : ["tiny HASTE training"] } ?? [])
    }

    public init(device: String, rows: [ConformanceRow], training: TrainingComparison?) {
        self.device = device
        self.rows = rows
        self.training = training
    }

    static func sci(_ x: Double) -> String { x == 0 ? "0" : (x.isFinite ? String(format: "%.2e", x) : "\(x)") }

    public static let header = pad("op", 36) + pad("shapes", 44) + pad("max abs", 10) + pad("max rel", 10) + pad("bound", 20) + "result"

    public static func line(_ r: ConformanceRow) -> String {
        let bound = r.bound == .exact ? "exact" : "\(r.bound.label)=\(sci(r.bound.tolerance))"
        var s = pad(r.name, 36) + pad(r.shapes, 44) + pad(sci(r.maxAbs), 10) + pad(sci(r.maxRel), 10) + pad(bound, 20)
        s += r.passed ? "pass" : "FAIL (\(r.worst))"
        if let note = r.note { s += "  \(note)" }
        return s
    }

    static func pad(_ s: String, _ n: Int) -> String {
        let c = s.count
        return c >= n ? s + " " : s + String(repeating: " ", count: n - c)
    }

    /// The training section: per-step losses side by side.
    public func trainingLines() -> [String] {
        guard let t = training else { return [] }
        var lines = ["tiny HASTE training (\(TinyHASTE.steps) steps, SiT depth 2 hidden 64, 8×8×4 latents, patch 2, DINOv2 teacher depth 2):",
                     "  step  \(SelftestReport.pad(device, 14))cpu           rel diff"]
        for i in 0..<t.cpu.total.count {
            let d = t.device.total[i], c = t.cpu.total[i]
            let rel = Swift.abs(d - c) / Swift.max(Swift.abs(c), 1e-30)
            lines.append(String(format: "  %4d  %-14.8f%-14.8f%@", i + 1, d, c, SelftestReport.sci(rel)))
        }
        lines.append("  max rel diff \(SelftestReport.sci(t.maxRelDiff)) at step \(t.step), bound \(SelftestReport.sci(t.bound)): \(t.passed ? "pass" : "FAIL")")
        return lines
    }

    /// The final line: PASS or FAIL with what failed.
    public var verdict: String {
        let checks = rows.count + (training == nil ? 0 : 1)
        return passed ? "PASS: \(rows.count) op cases\(training == nil ? "" : " and the training comparison") on \(device)"
                      : "FAIL: \(failures.count) of \(checks) checks on \(device): \(failures.joined(separator: ", "))"
    }

    public func text() -> String {
        var lines = ["haste selftest: \(device) against cpu, \(rows.count) op cases", SelftestReport.header]
        lines += rows.map(SelftestReport.line)
        lines += ["", ConformanceSuite.boundNote]
        if training != nil { lines += [""] + trainingLines() + [ConformanceSuite.trainingBoundNote] }
        lines.append("")
        lines.append(verdict)
        return lines.joined(separator: "\n")
    }

    public func json() -> String {
        func num(_ x: Double) -> Any { x.isFinite ? x : "\(x)" }
        var object: [String: Any] = [
            "device": device, "passed": passed, "failures": failures,
            "ops": rows.map { r -> [String: Any] in
                var o: [String: Any] = ["op": r.name, "shapes": r.shapes, "max_abs": num(r.maxAbs), "max_rel": num(r.maxRel),
                                        "bound": r.bound.tolerance, "bound_kind": r.bound.label, "passed": r.passed, "worst_output": r.worst]
                if let n = r.note { o["note"] = n }
                return o
            },
        ]
        if let t = training {
            object["training"] = ["device_loss": t.device.total.map(num), "cpu_loss": t.cpu.total.map(num),
                                  "device_denoise": t.device.denoise.map(num), "cpu_denoise": t.cpu.denoise.map(num),
                                  "max_rel_diff": num(t.maxRelDiff), "step": t.step, "bound": t.bound, "passed": t.passed] as [String: Any]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
