import Testing
import HasteSelftest
import HasteTensor

/// `haste selftest --device cuda` as it runs on a GPU, here on the emulated CUDA device: every op's forward and
/// backward against the CPU within its stated bound, then the tiny HASTE training run on both devices.
@Test func selftestPassesOnTheEmulatedCUDADevice() throws {
    let rows = ConformanceSuite.run(ConformanceSuite.cases, on: EmulatedCUDA.device,
                                    tf32Switch: { body in EmulatedDriver.$allowsTF32.withValue(true) { body() } })
    #expect(rows.count == ConformanceSuite.cases.count && rows.count > 80)
    for row in rows where !row.passed {
        Issue.record("\(SelftestReport.line(row)) \(row.note ?? "")")
    }
    // The Autocast bf16 row (tensor-core flash kernels): its measured error against the bound.
    for row in rows where row.bound != .exact && (row.name.contains("bf16") || row.name.contains("TF32")) { print("selftest: \(SelftestReport.line(row))") }
    let training = try TrainingComparison.run(device: EmulatedCUDA.device, seed: 0)
    #expect(training.passed, "\(training.maxRelDiff)")
    print(SelftestReport(device: "emulated cuda", rows: rows, training: training).trainingLines().joined(separator: "\n"))
}
