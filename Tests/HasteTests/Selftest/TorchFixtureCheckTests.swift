import Testing
import HasteIO
@testable import HasteSelftest
import HasteTensor

/// `haste selftest --torch-fixture`: the tiny SiT's (and DINOv2's) bf16 run against a torch fixture of it. On the committed CPU fixture
/// it passes with the CPU test's figures (sitBF16ForwardAndGradientsTrackTorchAutocast); with torch's float32
/// velocity in place of its bf16 one (haste's bf16 then sits ~1·e away and its float32 mode ~0) it fails; a file
/// without the fixture's tensors is refused with its path.
@Suite struct TorchFixtureCheckTests {
    static func tensors() throws -> (tensors: [String: Tensor], path: String) {
        let f = try Fixture("bf16_sit.safetensors")
        return (try f.file.tensors(), f.file.path)
    }

    @Test func theCPUFixturePassesAndASwappedReferenceFails() throws {
        let (t, path) = try Self.tensors()
        let report = try TorchFixtureCheck.sit(t, path: path, device: .cpu)
        #expect(report.passed, "\(report.lines.joined(separator: "\n"))")
        #expect(report.lines.contains { $0.hasPrefix("  velocity") && $0.contains("ok") })
        var swapped = t
        (swapped["velocity"], swapped["fp32.velocity"]) = (t["fp32.velocity"], t["velocity"])
        let bad = try TorchFixtureCheck.sit(swapped, path: path, device: .cpu)
        #expect(!bad.passed && bad.lines.last == "FAIL: torch fixture")
        #expect(bad.lines.contains { $0.hasPrefix("  velocity") && $0.contains("OVER") })
    }

    /// The teacher's fixture, dispatched by its contents: it passes with the CPU test's figures (logits bit-equal).
    @Test func theDINOv2FixturePasses() throws {
        let f = try Fixture("bf16_dinov2.safetensors")
        let report = try TorchFixtureCheck.run(try f.file.tensors(), path: f.file.path, device: .cpu)
        #expect(report.passed && report.lines.first?.contains("DINOv2") == true, "\(report.lines.joined(separator: "\n"))")
        #expect(report.lines.contains { $0.hasPrefix("  logits0") && $0.contains("bf16 0.000·e") })
    }

    @Test func aFileWithoutTheFixturesTensorsIsRefused() throws {
        var (t, path) = try Self.tensors()
        t["w2"] = nil
        #expect(throws: HasteError.fileFormat(path: path, detail: "no tensor 'w2': not a bf16_sit fixture (Scripts/fixtures/make_bf16_fixture.py --only bf16_sit writes one)")) {
            try TorchFixtureCheck.run(t, path: path, device: .cpu)
        }
        #expect(throws: HasteError.fileFormat(path: path, detail: "neither a bf16_sit nor a bf16_dinov2 fixture (Scripts/fixtures/make_bf16_fixture.py writes them)")) {
            try TorchFixtureCheck.run(["x": t["x"]!], path: path, device: .cpu)
        }
    }
}
