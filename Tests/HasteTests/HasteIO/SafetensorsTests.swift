import Foundation
import Testing
import HasteTensor
@testable import HasteIO

/// Bit patterns of Scripts/fixtures/io.py's SPECIAL values (±0, subnormals, ±inf, NaN, overflow to inf) as
/// PyTorch stores them in each float dtype; pasted from torch, not computed here.
enum TorchBits {
    static let f64: [UInt64] = [
        0x0000000000000000, 0x8000000000000000, 0x3ff0000000000000, 0xbff8000000000000, 0x4009200000000000,
        0x40effc0000000000, 0x3e7ad7f29abcaf48, 0xbe5ad7f29abcaf48, 0x7ff0000000000000, 0xfff0000000000000,
        0x7ff8000000000000, 0x46293e5939a08cea, 0x3e701b2b29a4692b, 0x37a16c262777579c]
    static let f32: [UInt32] = [
        0x00000000, 0x80000000, 0x3f800000, 0xbfc00000, 0x40490000, 0x477fe000, 0x33d6bf95, 0xb2d6bf95,
        0x7f800000, 0xff800000, 0x7fc00000, 0x7149f2ca, 0x3380d959, 0x000116c2]
    static let f16: [UInt16] = [0x0000, 0x8000, 0x3c00, 0xbe00, 0x4248, 0x7bff, 0x0002, 0x8000, 0x7c00, 0xfc00, 0x7e00,
                                0x7c00, 0x0001, 0x0000]
    static let bf16: [UInt16] = [0x0000, 0x8000, 0x3f80, 0xbfc0, 0x4049, 0x4780, 0x33d7, 0xb2d7, 0x7f80, 0xff80, 0x7fc0,
                                 0x714a, 0x3381, 0x0001]
}

/// One tensor of every dtype with awkward bit patterns, shaped oddly.
func everyDTypeTensors() -> [(String, Tensor)] {
    [("f32", tensorFromBytes(leBytes(TorchBits.f32), shape: [2, 7], dtype: .float32)),
     ("f16", tensorFromBytes(leBytes(TorchBits.f16), shape: [7, 2], dtype: .float16)),
     ("bf16", tensorFromBytes(leBytes(TorchBits.bf16), shape: [14], dtype: .bfloat16)),
     ("f64", tensorFromBytes(leBytes(TorchBits.f64), shape: [14, 1], dtype: .float64)),
     ("i64", Tensor([Int64.min, .max, -1, 0, 1], shape: [5])),
     ("i32", Tensor([Int32.min, .max, -1, 0, 1, 7], shape: [3, 2])),
     ("u8", Tensor([UInt8](0...254), shape: [5, 51])),
     ("bool", Tensor([true, false, true, true, false, false, true], shape: [7])),
     ("scalar", Tensor([Float(2.5)], shape: [])),
     ("empty", Tensor.zeros([0, 3])),
     ("transposed", Tensor((0..<12).map(Float.init), shape: [3, 4]).transposed(0, 1))]
}

@Test func safetensorsRoundTripsEveryDTypeAndMetadata() throws {
    try withTemporaryDirectory { dir in
        let path = dir + "/all.safetensors"
        let tensors = everyDTypeTensors()
        let metadata = ["note": "unicode ✓, \"quotes\", back\\slash, a/b\nnew line", "step": "1200", "": "empty key"]
        try SafetensorsWriter.write(tensors, metadata: metadata, to: path)
        let file = try SafetensorsFile(path: path)
        #expect(file.metadata == metadata)
        #expect(file.names == tensors.map(\.0), "entries keep the writer's order")
        for (name, t) in tensors {
            let back = try file.tensor(name)
            #expect(back.dtype == t.dtype && back.shape == t.shape, "\(name): \(back.dtype) \(back.shape)")
            #expect(rawBytes(back) == rawBytes(t), "\(name): bytes differ")
        }
        #expect(try file.tensor("transposed").scalars(as: Float.self) == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(leftovers == ["all.safetensors"], "the atomic writer left \(leftovers)")
        let headerLength = readBytes(path).prefix(8).reversed().reduce(0) { $0 << 8 | Int($1) }
        #expect(headerLength % 8 == 0, "data section starts 8-byte aligned")
    }
}

@Test func safetensorsReadsPyTorchFilesBitIdentically() throws {
    let file = try SafetensorsFile(path: try fixturePath("io_torch_dtypes.safetensors"))
    #expect(rawBytes(try file.tensor("f64")) == leBytes(TorchBits.f64))
    #expect(rawBytes(try file.tensor("f32")) == leBytes(TorchBits.f32))
    #expect(rawBytes(try file.tensor("f16")) == leBytes(TorchBits.f16))
    #expect(rawBytes(try file.tensor("bf16")) == leBytes(TorchBits.bf16))
    #expect(try file.tensor("f32").shape == [2, 7] && file.tensor("f16").shape == [7, 2])
    #expect(try file.tensor("i64").scalars(as: Int64.self)
            == [.min, .max, -1, 0, 1, 123_456_789_012, -42, 7, 8, 9, 10, 11, 12, 13, 14])
    #expect(try file.tensor("i32").scalars(as: Int32.self) == [.min, .max, -1, 0, 1, 1_234_567, -42, 7, 8, 9, 10, 11, 12, 13, 14])
    #expect(try file.tensor("u8").scalars(as: UInt8.self) == [0, 1, 2, 127, 128, 200, 254, 255, 3, 4, 5, 6, 7, 8, 9])
    #expect(try file.tensor("u8").shape == [5, 3])
    #expect(try file.tensor("bool").scalars(as: Bool.self)
            == [true, false, false, true, true, false, true, false, true, true, false, false, true, false, true])
    #expect(try file.tensor("scalar").shape == [] && file.tensor("scalar").item() == 2.5)
    #expect(try file.tensor("empty").shape == [0, 3])
    #expect(try file.tensor("transposed").scalars(as: Float.self) == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
    #expect(file.metadata["note"] == "unicode ✓, \"quotes\", back\\slash, a/b")
    #expect(file.metadata["step"] == "1200" && file.metadata["format_version"] == "1")
}

@Test func safetensorsRejectsMalformedFilesNamingThem() {
    withTemporaryDirectory { dir in
        let path = dir + "/bad.safetensors"
        func expectBad(_ bytes: [UInt8], _ phrases: String..., sourceLocation: SourceLocation = #_sourceLocation) {
            writeBytes(bytes, path)
            do {
                _ = try SafetensorsFile(path: path)
                Issue.record("accepted a bad file; expected \(phrases)", sourceLocation: sourceLocation)
            } catch let error as HasteError {
                #expect(error.description.contains(path), "\(error)", sourceLocation: sourceLocation)
                for p in phrases { #expect(error.description.contains(p), "\(error)", sourceLocation: sourceLocation) }
            } catch { Issue.record("not a HasteError: \(error)", sourceLocation: sourceLocation) }
        }
        let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let data = [UInt8](repeating: 1, count: 8)
        expectBad([1, 2, 3], "shorter than the 8-byte header length")
        expectBad(Array(craftSafetensors(good, data: data).prefix(20)), "runs past the end", "truncated")
        expectBad(Array(craftSafetensors(good, data: data).dropLast(3)), "ends at byte 8", "truncated")
        expectBad(craftSafetensors(good, data: data, length: 1 << 40), "over the 100000000-byte limit")
        expectBad(craftSafetensors(good, data: data, length: 500), "runs past the end")
        expectBad(craftSafetensors("{\"a\": [1, 2", data: data), "header JSON")
        expectBad(craftSafetensors("garbage!", data: data), "does not start with '{'")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
                                   + #""b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: data), "overlap")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: data),
                  "does not match its byte range")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: data),
                  "belong to no tensor")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: data),
                  "trailing bytes")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: data),
                  "0 ≤ begin ≤ end")
        expectBad(craftSafetensors(#"{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, data: data),
                  "dtype C64", "BF16")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: data),
                  "negative dimension")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[4611686018427387904, 4],"data_offsets":[0,8]}}"#,
                                   data: data), "too big to address")
        expectBad(craftSafetensors(#"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#, data: data), "header JSON")
        expectBad(craftSafetensors(#"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, data: data), "header JSON", "dtype")
        expectBad(craftSafetensors(#"{"a":{}}"#, data: data), "entry 'a' lacks dtype")
        expectBad(craftSafetensors(#"{"__metadata__":{"step":3}}"#), "header JSON", "__metadata__")
        expectBad(craftSafetensors(#"{"__metadata__":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#), "__metadata__")
    }
}

@Test func safetensorsErrorsNameMissingFilesAndNames() throws {
    expectFileError("/nonexistent/model.safetensors", "no such file") {
        _ = try SafetensorsFile(path: "/nonexistent/model.safetensors")
    }
    let path = try fixturePath("io_torch_dtypes.safetensors")
    expectFileError(path, "no tensor named 'nope'") { _ = try SafetensorsFile(path: path).tensor("nope") }
    withTemporaryDirectory { dir in
        expectFileError(dir, "not a regular file") { _ = try SafetensorsFile(path: dir) }
        expectFileError(dir + "/missing/x.safetensors", "cannot create", "folder exists") {
            try SafetensorsWriter.write([("a", Tensor.zeros([2]))], to: dir + "/missing/x.safetensors")
        }
    }
}

@Test func safetensorsBoolBytesOtherThanOneReadAsTrue() throws {
    try withTemporaryDirectory { dir in
        let path = dir + "/b.safetensors"
        let header = #"{"m":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}     "#
        writeBytes(craftSafetensors(header, data: [0, 1, 2, 255]), path)
        let t = try SafetensorsFile(path: path).tensor("m")
        #expect(rawBytes(t) == [0, 1, 1, 1])
        #expect(t.scalars(as: Bool.self) == [false, true, true, true])
    }
}

@Test func safetensorsWriterReplacesAnExistingFile() throws {
    try withTemporaryDirectory { dir in
        let path = dir + "/w.safetensors"
        try SafetensorsWriter.write(["x": Tensor([Float(1), 2, 3])], to: path)
        try SafetensorsWriter.write(["y": Tensor([Int32(7)], shape: [1, 1])], metadata: ["k": "v"], to: path)
        let f = try SafetensorsFile(path: path)
        #expect(f.names == ["y"] && f.metadata == ["k": "v"])
        #expect(try f.tensor("y").scalars(as: Int32.self) == [7])
    }
}
