import Foundation
import Testing
import HasteTensor
@testable import HasteIO

@Test func inspectListsSafetensorsEntriesInFileOrder() throws {
    let path = try fixturePath("io_torch_dtypes.safetensors")
    let report = try FileInspector.inspect(path)
    #expect(report.format == "safetensors" && report.file == path && report.tensors.count == 11)
    // File order = order of data offsets, read here straight from the header JSON.
    let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
    let n = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    let header = try #require(try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + n))) as? [String: Any])
    let offsets = Dictionary(uniqueKeysWithValues: header.compactMap { k, v -> (String, Int)? in
        guard let e = v as? [String: Any], let o = e["data_offsets"] as? [Int] else { return nil }
        return (k, o[0])
    })
    let listed = report.tensors.map { offsets[$0.name] ?? -1 }   // a zero-byte tensor may share its neighbour's offset
    #expect(Set(report.tensors.map(\.name)) == Set(offsets.keys) && listed == listed.sorted(), "\(report.tensors.map(\.name))")
    let f32 = try #require(report.tensors.first { $0.name == "f32" })
    #expect(f32.dtype == .float32 && f32.shape == [2, 7] && f32.byteCount == 56)
    #expect(report.metadata["step"] == "1200")
    let text = report.render(json: false)
    #expect(text.contains("11 tensors") && text.contains("step: 1200"), "\(text)")
    let bf16 = try #require(text.split(separator: "\n").first { $0.hasPrefix("bf16 ") })
    #expect(bf16.split(separator: " ") == ["bf16", "bfloat16", "[14]", "28"])
    #expect(text.split(separator: "\n").count == 1 + 1 + 11 + 1 + 3, "title, column names, rows, metadata\n\(text)")
}

@Test func inspectJSONIsMachineReadable() throws {
    let path = try fixturePath("io_torch_dtypes.safetensors")
    let json = try FileInspector.inspect(path).render(json: true)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    #expect(object["file"] as? String == path && object["format"] as? String == "safetensors")
    let tensors = try #require(object["tensors"] as? [[String: Any]])
    let names = tensors.compactMap { $0["name"] as? String }
    #expect(names.count == 11 && Set(names).contains("bool"))
    let u8 = try #require(tensors.first { $0["name"] as? String == "u8" })
    #expect(u8["dtype"] as? String == "uint8" && u8["shape"] as? [Int] == [5, 3] && u8["bytes"] as? Int == 15)
    #expect((object["metadata"] as? [String: String])?["format_version"] == "1")
}

@Test func inspectReadsNpyHeadersOnly() throws {
    let report = try FileInspector.inspect(try fixturePath("npy/fortran.npy"))
    #expect(report.format == "npy" && report.tensors.map(\.name) == ["fortran"])
    #expect(report.tensors[0].shape == [2, 3, 4] && report.tensors[0].dtype == .float32 && report.tensors[0].byteCount == 96)
    #expect(report.metadata == ["npy_version": "1.0", "descr": "<f4", "fortran_order": "True"])
}

@Test func inspectErrorsNameTheFile() throws {
    expectFileError("/nonexistent/ckpt.safetensors", "no such file") {
        _ = try FileInspector.inspect("/nonexistent/ckpt.safetensors")
    }
    try withTemporaryDirectory { dir in
        let path = dir + "/notes.txt"
        try "hello, this is not a tensor file".write(toFile: path, atomically: true, encoding: .utf8)
        expectFileError(path, "haste inspect reads .safetensors, .npy, .npz and HDF5 (.h5) files") { _ = try FileInspector.inspect(path) }
        let npy = dir + "/short.npy"
        writeBytes([0x93, 0x4E], npy)
        expectFileError(npy, "not a valid .npy file") { _ = try FileInspector.inspect(npy) }
    }
}
