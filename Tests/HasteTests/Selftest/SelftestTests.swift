import Foundation
import Testing
import HasteSelftest
import HasteTensor

/// Device indices of the deliberately wrong or noisy backends (HostAsCUDA uses cuda:1; tests run concurrently).
enum SelftestDevices {
    static let wrongUpsample: Device = { Backends.register(WrongUpsampleBackend(), for: .cuda(7)); return .cuda(7) }()
    static let wrongLayerNorm: Device = { Backends.register(WrongLayerNormBackend(), for: .cuda(8)); return .cuda(8) }()
    static let noisyGemm: Device = { Backends.register(NoisyGemmBackend(), for: .cuda(9)); return .cuda(9) }()
}

@Test func selftestPassesOnTheCPUBackendRegisteredAsCUDA() throws {
    let rows = ConformanceSuite.run(ConformanceSuite.cases, on: HostAsCUDA.device)
    #expect(rows.count == ConformanceSuite.cases.count && rows.count > 80)
    for row in rows {
        // Same kernels on both sides; OpenBLAS may block a GEMM differently while other tests use its pool, so
        // only the exact rows are sure to be 0 (they pass only then).
        #expect(row.passed, "\(row.name): \(row.maxAbs) \(row.note ?? "")")
    }
    let training = try TrainingComparison.run(device: HostAsCUDA.device, seed: 0)
    #expect(training.passed && training.maxRelDiff < 1e-6)
    #expect(training.cpu.total.count == TinyHASTE.steps && training.cpu.total.allSatisfy(\.isFinite))
    // The run trains: alignment terms are active and the loss moves.
    #expect(training.cpu.attention.allSatisfy { $0 > 0 } && training.cpu.projection.last! < training.cpu.projection.first! - 0.1)
    #expect(training.cpu.total.last! < training.cpu.total.first!)
}

@Test func selftestMarksTheOneWrongKernelFailedAndTheOthersPassed() throws {
    let rows = ConformanceSuite.run(ConformanceSuite.cases, on: SelftestDevices.wrongUpsample)
    let failed = rows.filter { !$0.passed }.map(\.name)
    #expect(failed == ["upsample nearest 2×"])
    let row = rows.first { $0.name == "upsample nearest 2×" }!
    #expect(row.worst == "y" && abs(row.maxAbs - 1e-3) < 1e-6)
    let report = SelftestReport(device: "cuda:7", rows: rows, training: nil)
    #expect(!report.passed && report.verdict.hasPrefix("FAIL: 1 of") && report.verdict.contains("upsample nearest 2×"))
    #expect(report.text().contains("FAIL (y)"))
}

@Test func trainingComparisonFailsWhenLayerNormIsSlightlyWrong() throws {
    let rows = ConformanceSuite.run(ConformanceSuite.cases(matching: "layerNorm"), on: SelftestDevices.wrongLayerNorm)
    #expect(rows.map(\.name) == ["layerNorm affine", "layerNorm"] && rows.map(\.passed) == [true, false])
    let training = try TrainingComparison.run(device: SelftestDevices.wrongLayerNorm, seed: 0)
    print("selftest: wrong layerNorm: training max rel diff \(training.maxRelDiff) at step \(training.step)")
    #expect(!training.passed)
}

@Test func trainingBoundHoldsWhenGEMMsRoundDifferently() throws {
    let training = try TrainingComparison.run(device: SelftestDevices.noisyGemm, seed: 0)
    print("selftest: ±2-ulp GEMM noise: training max rel diff \(training.maxRelDiff) at step \(training.step)")
    #expect(training.maxRelDiff > 0, "the noise reached the losses")
    #expect(training.passed)
    // GEMM rows see the noise and stay within their float32 rounding bounds.
    let rows = ConformanceSuite.run(ConformanceSuite.cases(matching: "matmul,linear,bmm"), on: SelftestDevices.noisyGemm)
    #expect(rows.count == 10 && rows.allSatisfy(\.passed) && rows.contains { $0.maxAbs > 0 }, "\(rows.map { ($0.name, $0.passed) })")
}

@Test func filtersAndJSONNameEveryRow() throws {
    #expect(ConformanceSuite.cases(matching: "cast f32, cast int").count == 4)
    #expect(ConformanceSuite.cases(matching: "softmax,philox").map(\.name) == ["softmax", "logSoftmax", "softmax axis 0", "softmaxMatmul", "Philox uniform", "Philox normal"])
    let rows = ConformanceSuite.run(ConformanceSuite.cases(matching: "cast f32,cast int"), on: .cpu)
    let json = SelftestReport(device: "cpu", rows: rows, training: nil).json()
    let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
    #expect(object["passed"] as? Bool == true && (object["ops"] as! [[String: Any]]).count == 4)
}
