import Foundation
import Testing
import HasteTensor
@testable import HasteIO

// Files built to break readers (issue #14, item 1): each must be a HasteError naming the file, never a trap, a
// stack overflow or a gigabyte allocation. The bytes are written here; no PyTorch or numpy is needed.

extension PickleWriter {
    /// LONG1 of the 8-byte two's complement of `v` (how pickle stores integers beyond 32 bits).
    mutating func long(_ v: Int) { bytes += [0x8A, 8] + leBytes([Int64(v)]) }
    mutating func longs(_ v: [Int]) { op(0x28); v.forEach { long($0) }; op(0x74) }

    /// `_rebuild_tensor_v2` with 64-bit storage count, sizes and strides.
    mutating func tensor64(type: String = "FloatStorage", count: Int, size: [Int], stride: [Int]) {
        global("torch._utils", "_rebuild_tensor_v2")
        op(0x28, 0x28); string("storage"); global("torch", type); string("0"); string("cpu"); long(count); op(0x74, 0x51)
        int(0); longs(size); longs(stride); op(0x89); global("collections", "OrderedDict"); op(0x29, 0x52, 0x74, 0x52)
    }
}

/// A legacy `torch.save` file (`_use_new_zipfile_serialization=False`) holding `object` (a pickle whose storages
/// are key "0") followed by the storage: its declared element count, then `data`.
func legacyTorchFile(_ object: [UInt8], storedCount: UInt64, data: [UInt8]) -> [UInt8] {
    let magic: [UInt8] = [0x80, 2, 0x8A, 0x0A] + LegacyTorchFile.magic + [0x2E]
    let version: [UInt8] = [0x80, 2, 0x4D, 0xE9, 0x03, 0x2E]                             // 1001
    var info = PickleWriter(); info.op(0x7D); info.string("little_endian"); info.op(0x88, 0x73, 0x2E)
    var keys = PickleWriter(); keys.op(0x5D); keys.string("0"); keys.op(0x61, 0x2E)
    return magic + version + info.bytes + object + keys.bytes + leBytes([storedCount]) + data
}

/// A .npy file whose header dict is `dict` (padded as numpy pads it) followed by `data`.
func npyBytes(_ dict: String, data: [UInt8] = []) -> [UInt8] {
    var text = Array(dict.utf8)
    text += [UInt8](repeating: 0x20, count: 63 - (10 + text.count) % 64) + [0x0A]
    return NpyHeader.magic + [1, 0] + leBytes([UInt16(text.count)]) + text + data
}

@Test func picklesNestedThousandsOfLevelsDeepAreRefusedWithoutRecursing() {
    // 40 KB: one empty list wrapped in 40 000 one-element tuples (TUPLE1), which once overflowed the stack when
    // the half-built values were released. Then deep MARKs, and a list appended into a list 20 000 times.
    var tuples = PickleWriter(); tuples.op(0x5D); tuples.bytes += [UInt8](repeating: 0x85, count: 40_000); tuples.op(0x2E)
    expectTorchError(torchArchive(tuples.bytes), "entry 'archive/data.pkl'", "nest deeper than \(Unpickler.maxDepth) levels")
    var marks = PickleWriter(); marks.bytes += [UInt8](repeating: 0x28, count: 20_000) + [UInt8](repeating: 0x74, count: 20_000); marks.op(0x2E)
    expectTorchError(torchArchive(marks.bytes), "MARKs nest deeper than \(Unpickler.maxDepth) levels")
    var lists = PickleWriter(); lists.bytes += [UInt8](repeating: 0x5D, count: 20_000) + [UInt8](repeating: 0x61, count: 19_999); lists.op(0x2E)
    expectTorchError(torchArchive(lists.bytes), "nest deeper than")
    expectTorchError(legacyTorchFile(tuples.bytes, storedCount: 0, data: []), "entry 'object'", "nest deeper than")
}

/// The other nested text formats: a safetensors header of 100 000 nested JSON arrays (Foundation's parser stops at
/// its depth limit) and an .npy header of 30 000 nested tuples (ours stops at 16).
@Test func deeplyNestedHeadersAreRefusedWithoutRecursing() throws {
    withTemporaryDirectory { dir in
        let path = dir + "/deep.safetensors"
        writeBytes(craftSafetensors(#"{"t":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"), path)
        expectFileError(path, "header JSON") { _ = try SafetensorsFile(path: path) }
        let npy = npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': " + String(repeating: "(", count: 30_000)
                           + String(repeating: ")", count: 30_000) + ", }")
        writeBytes(npy, dir + "/deep.npy")
        expectFileError(dir + "/deep.npy", "nested too deeply") { _ = try NpyFile.read(dir + "/deep.npy") }
    }
}

/// Shared references may not turn a few hundred bytes into a million values (x = (x, x), 19 times: 2^20 nodes).
@Test func sharedReferencesCannotAmplifyASmallPickle() {
    var bomb = PickleWriter()
    bomb.op(0x5D)
    for _ in 0..<19 { bomb.op(0x71, 0, 0x68, 0, 0x86) }
    bomb.op(0x2E)
    #expect(bomb.bytes.count < 120)
    expectTorchError(torchArchive(bomb.bytes), "shared references expand to too many values")
}

@Test func sizesThatOverflowSixtyFourBitsAreErrorsNotTraps() throws {
    // Legacy storage of 2^60 int64 elements (2^63 bytes) in a 300-byte file.
    let legacy = PickleWriter.dict { $0.tensor64(type: "LongStorage", count: 1 << 60, size: [4], stride: [1]) }
    expectTorchError(legacyTorchFile(legacy, storedCount: 1 << 60, data: [UInt8](repeating: 0, count: 32)),
                     "legacy torch file", "storage '0' (1152921504606846976 int64 elements", "runs past the end")
    // The same declaration in a zip archive, and a view of shape [0, 2^62, 2^62] (no element, but its strides overflow).
    expectTorchError(torchArchive(legacy, storages: ["0": [UInt8](repeating: 0, count: 32)]), "archive/data/0",
                     "holds 32 bytes", "more bytes than 64 bits count")
    let empty = PickleWriter.dict { $0.tensor64(count: 0, size: [0, 1 << 62, 1 << 62], stride: [1, 1, 1]) }
    expectTorchError(torchArchive(empty, storages: ["0": []]), "tensor 't'", "[0, 4611686018427387904, 4611686018427387904]", "past 64 bits")
    withTemporaryDirectory { dir in
        // A 112-byte safetensors file, the .npy and .npz forms, and a 65-dimensional tensor of ones.
        let path = dir + "/huge.safetensors"
        let header = #"{"t":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}}"#
        writeBytes(craftSafetensors(header), path)
        #expect(readBytes(path).count < 120)
        expectFileError(path, "entry 't'", "too big to address") { _ = try SafetensorsFile(path: path).tensors() }
        expectFileError(path, "too big to address") { _ = try FileInspector.inspect(path) }
        let ones = "[" + Array(repeating: "1", count: 65).joined(separator: ",") + "]"
        writeBytes(craftSafetensors(#"{"t":{"dtype":"U8","shape":\#(ones),"data_offsets":[0,1]}}"#, data: [7]), path)
        expectFileError(path, "more than 64 dimensions") { _ = try SafetensorsFile(path: path) }
        let npy = npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4611686018427387904), }")
        writeBytes(npy, dir + "/huge.npy")
        expectFileError(dir + "/huge.npy", "too big to address") { _ = try NpyFile.read(dir + "/huge.npy") }
        writeBytes(makeZip([("arr_0.npy", npy)]), dir + "/huge.npz")
        expectFileError(dir + "/huge.npz", "arr_0.npy", "too big to address") { _ = try NpzArchive.read(dir + "/huge.npz") }
    }
}

@Test func viewsThatExpandTheirStoragePastTheLimitAreRefused() throws {
    // A 4-byte storage viewed as [16384, 16384] with stride 0: 1 GiB once copied out, from a ~600-byte file.
    let bomb = PickleWriter.dict { $0.tensor64(count: 1, size: [16384, 16384], stride: [0, 0]) }
    let archive = torchArchive(bomb, storages: ["0": leBytes([Float(1).bitPattern])])
    #expect(archive.count < 700)
    try withTemporaryDirectory { dir in
        let path = dir + "/bomb.pt", out = dir + "/out.safetensors"
        writeBytes(archive, path)
        let listed = try FileInspector.inspect(path)                                   // listing reads no data
        #expect(listed.tensors.map(\.shape) == [[16384, 16384]])
        expectFileError(path, "tensor 't'", "1.0 GiB", "past the 16.0 MiB", "--allow-expanding-views") {
            _ = try TorchCheckpoint.convert(path, to: out)
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        expectFileError(path, "16.0 MiB") { _ = try FileInspector.inspect(path, verify: true) }
        // Asked for, the view loads (still sharing its 4-byte storage: nothing is expanded until copied).
        let view = try #require(TorchCheckpoint(path: path).tensors(at: "", expandingViewLimit: .max).first?.1)
        #expect(view.shape == [16384, 16384] && view.strides == [0, 0] && view.storage.byteCount == 4)
        // The limit holds for the file's expanding views together: five 4 MiB views of one float are 20 MiB.
        let many = PickleWriter.dict { p in
            p.op(0x28)
            for i in 0..<5 { p.string("v\(i)"); p.tensor64(count: 1, size: [1024, 1024], stride: [0, 0]) }
            p.op(0x64)
        }
        writeBytes(torchArchive(many, storages: ["0": leBytes([Float(1).bitPattern])]), path)
        expectFileError(path, "tensor 't.v4'", "earlier views of the file take 16.0 MiB") { _ = try TorchCheckpoint.convert(path, to: out) }
        // Up to the limit an expanding view reads as before: 4 MiB from 4 bytes.
        let small = PickleWriter.dict { $0.tensor64(count: 1, size: [1024, 1024], stride: [0, 0]) }
        writeBytes(torchArchive(small, storages: ["0": leBytes([Float(2).bitPattern])]), path)
        let t = try #require(TorchCheckpoint(path: path).stateDict()["t"])
        #expect(t.contiguous().scalars(as: Float.self).allSatisfy { $0 == 2 } && t.count == 1 << 20)
    }
}

@Test func inspectListsNpzArraysAndDecodesImages() throws {
    try withTemporaryDirectory { dir in
        let images = Tensor((0..<(2 * 3 * 4 * 3)).map { UInt8($0) }, shape: [2, 3, 4, 3])
        try NpzWriter.write([("arr_0", images), ("mu", Tensor.randn([5], dtype: .float64, seed: 3))], to: dir + "/batch.npz")
        let npz = try FileInspector.inspect(dir + "/batch.npz", verify: true)
        #expect(npz.format == "npz" && npz.tensors.map(\.name) == ["arr_0", "mu"] && npz.tensors[0].shape == [2, 3, 4, 3])
        let deflated = try fixturePath("npz/compressed.npz")
        #expect(try FileInspector.inspect(deflated, verify: true).metadata["deflated"] != nil)
        try PNGImage.write((0..<(5 * 7 * 3)).map { UInt8($0) }, height: 5, width: 7, channels: 3, to: dir + "/a.png")
        let png = try FileInspector.inspect(dir + "/a.png")
        #expect(png.format == "png" && png.tensors.map(\.shape) == [[5, 7, 3]])
        var cut = readBytes(dir + "/a.png")
        cut.removeLast(30)
        writeBytes(cut, dir + "/cut.png")
        expectFileError(dir + "/cut.png", "PNG") { _ = try FileInspector.inspect(dir + "/cut.png") }
    }
}
