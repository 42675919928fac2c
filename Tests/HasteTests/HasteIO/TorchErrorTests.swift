import Foundation
import Testing
import HasteTensor
@testable import HasteIO

// MARK: crafting archives and pickles

/// A zip archive of stored entries with correct CRCs, as torch writes them (no alignment padding);
/// `zip64` puts every size and offset in ZIP64 extra fields and adds the ZIP64 end records.
func makeZip(_ entries: [(String, [UInt8])], zip64: Bool = false) -> [UInt8] {
    var out: [UInt8] = [], directory: [UInt8] = []
    for (name, data) in entries {
        let crc = data.withUnsafeBytes { FileSpan.crc32($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, $0.count) }
        let offset = out.count, n = Array(name.utf8), big: UInt32 = zip64 ? 0xFFFF_FFFF : 0
        let extra: [UInt8] = zip64 ? leBytes([UInt16(1), UInt16(24)]) + leBytes([UInt64(data.count), UInt64(data.count), UInt64(offset)]) : []
        out += leBytes([UInt32(0x0403_4B50)]) + leBytes([UInt16(20), 0, 0, 0, 0]) + leBytes([crc, UInt32(data.count), UInt32(data.count)])
            + leBytes([UInt16(n.count), 0]) + n + data
        directory += leBytes([UInt32(0x0201_4B50)]) + leBytes([UInt16(45), 45, 0, 0, 0, 0]) + leBytes([crc])
            + leBytes([big == 0 ? UInt32(data.count) : big, big == 0 ? UInt32(data.count) : big])
            + leBytes([UInt16(n.count), UInt16(extra.count), 0, 0, 0]) + leBytes([UInt32(0), big == 0 ? UInt32(offset) : big]) + n + extra
    }
    let start = out.count
    out += directory
    if zip64 {
        let record = out.count
        out += leBytes([UInt32(0x0606_4B50)]) + leBytes([UInt64(44)]) + leBytes([UInt16(45), 45]) + leBytes([UInt32(0), 0])
            + leBytes([UInt64(entries.count), UInt64(entries.count), UInt64(directory.count), UInt64(start)])
        out += leBytes([UInt32(0x0706_4B50), 0]) + leBytes([UInt64(record)]) + leBytes([UInt32(1)])
        return out + leBytes([UInt32(0x0605_4B50)]) + leBytes([UInt16(0), 0, 0xFFFF, 0xFFFF]) + leBytes([UInt32(0xFFFF_FFFF), 0xFFFF_FFFF]) + [0, 0]
    }
    return out + leBytes([UInt32(0x0605_4B50)]) + leBytes([UInt16(0), 0, UInt16(entries.count), UInt16(entries.count)])
        + leBytes([UInt32(directory.count), UInt32(start)]) + [0, 0]
}

/// A pickle written opcode by opcode (protocol 2).
struct PickleWriter {
    var bytes: [UInt8] = [0x80, 2]
    mutating func op(_ o: UInt8...) { bytes += o }
    mutating func string(_ s: String) { bytes += [0x58] + leBytes([UInt32(s.utf8.count)]) + Array(s.utf8) }
    mutating func int(_ i: Int32) { bytes += [0x4A] + leBytes([i]) }
    mutating func global(_ module: String, _ name: String) { bytes += [0x63] + Array("\(module)\n\(name)\n".utf8) }
    mutating func ints(_ v: [Int32]) { op(0x28); v.forEach { int($0) }; op(0x74) }
    /// `_rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', count), offset, size, stride, False, OrderedDict())`
    mutating func tensor(type: String = "FloatStorage", key: String = "0", count: Int32, offset: Int32 = 0, size: [Int32], stride: [Int32]) {
        global("torch._utils", "_rebuild_tensor_v2")
        op(0x28, 0x28); string("storage"); global("torch", type); string(key); string("cpu"); int(count); op(0x74, 0x51)
        int(offset); ints(size); ints(stride); op(0x89); global("collections", "OrderedDict"); op(0x29, 0x52, 0x74, 0x52)
    }
    /// `{"t": <tensor>}` and STOP.
    static func dict(_ body: (inout PickleWriter) -> Void) -> [UInt8] {
        var p = PickleWriter()
        p.op(0x7D); p.string("t"); body(&p); p.op(0x73, 0x2E)
        return p.bytes
    }
}

func torchArchive(_ pickle: [UInt8], storages: [String: [UInt8]] = [:]) -> [UInt8] {
    makeZip([("archive/data.pkl", pickle)] + storages.sorted { $0.key < $1.key }.map { ("archive/data/\($0.key)", $0.value) }
            + [("archive/version", Array("3\n".utf8))])
}

/// Writes `bytes` as a file and expects opening and reading every tensor to fail naming it and each phrase.
func expectTorchError(_ bytes: [UInt8], _ phrases: String..., sourceLocation: SourceLocation = #_sourceLocation) {
    withTemporaryDirectory { dir in
        let path = dir + "/bad.pt"
        writeBytes(bytes, path)
        do {
            _ = try TorchCheckpoint(path: path).flatTensors()
            Issue.record("expected an error naming \(phrases)", sourceLocation: sourceLocation)
        } catch let error as HasteError {
            let text = error.description
            #expect(text.contains(path), "error does not name the file: \(text)", sourceLocation: sourceLocation)
            for p in phrases { #expect(text.contains(p), "error lacks '\(p)': \(text)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("not a HasteError: \(error)", sourceLocation: sourceLocation)
        }
    }
}

let twelveFloats = leBytes((0..<12).map { Float($0).bitPattern })

// MARK: bad input

@Test func craftedArchivesReadAndCraftedDamageIsNamed() throws {
    let good = PickleWriter.dict { $0.tensor(count: 12, size: [3, 4], stride: [4, 1]) }
    try withTemporaryDirectory { dir in
        writeBytes(torchArchive(good, storages: ["0": twelveFloats]), dir + "/good.pt")
        let t = try TorchCheckpoint(path: dir + "/good.pt").stateDict()["t"]
        #expect(t?.scalars(as: Float.self) == (0..<12).map(Float.init))
    }
    expectTorchError(torchArchive(PickleWriter.dict { $0.tensor(count: 12, size: [5, 5], stride: [5, 1]) }, storages: ["0": twelveFloats]),
                     "entry 'archive/data.pkl'", "tensor 't'", "reaches element 24 of archive/data/0", "holds 12")
    expectTorchError(torchArchive(good, storages: ["0": Array(twelveFloats.prefix(40))]), "archive/data/0", "holds 40 bytes", "12 float32")
    expectTorchError(torchArchive(good), "storage '0' has no entry archive/data/0")
    expectTorchError(torchArchive(PickleWriter.dict { $0.tensor(type: "ShortStorage", count: 2, size: [2], stride: [1]) },
                                  storages: ["0": [0, 0, 0, 0]]), "torch.ShortStorage")
    expectTorchError(torchArchive(PickleWriter.dict { $0.tensor(count: 12, size: [3, -4], stride: [4, 1]) }, storages: ["0": twelveFloats]),
                     "tensor 't'", "negative")
    expectTorchError(makeZip([("archive/version", [51])]), "without a data.pkl entry")
    expectTorchError([0x80, 2, 0x7D, 0x2E], "not a PyTorch file")
}

@Test func unknownOpcodesAndGlobalsAreRefused() {
    var p = PickleWriter()
    p.op(0x49); p.bytes += Array("12\n".utf8); p.op(0x2E)                     // protocol-0 INT
    expectTorchError(torchArchive(p.bytes), "entry 'archive/data.pkl', byte 2", "opcode 0x49 ('I') is not supported")
    for (module, name, phrase) in [("os", "system", "refuses global 'os.system'"), ("builtins", "eval", "refuses global 'builtins.eval'"),
                                   ("posix", "system", "refuses global"), ("helpers", "load_weights", "refuses to call global 'helpers.load_weights'"),
                                   ("torch._utils", "_rebuild_qtensor", "not supported")] {
        var q = PickleWriter()
        q.global(module, name); q.string("rm -rf /"); q.op(0x85, 0x52, 0x2E)
        expectTorchError(torchArchive(q.bytes), phrase)
    }
    var cycle = PickleWriter()
    cycle.op(0x5D, 0x71, 0, 0x68, 0, 0x61, 0x2E)                               // l = []; l.append(l)
    expectTorchError(torchArchive(cycle.bytes), "nest deeper")
    var bomb = PickleWriter()
    bomb.op(0x5D)
    for _ in 0..<40 { bomb.op(0x71, 0, 0x68, 0, 0x86) }                        // x = (x, x), 40 times: 2^40 leaves
    bomb.op(0x2E)
    expectTorchError(torchArchive(bomb.bytes), "too many values")
    expectTorchError(torchArchive([0x80, 2, 0x7D]), "ends before its STOP")
    expectTorchError(torchArchive([0x80, 2, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x2E]), "runs past the end")
}

@Test func classesBecomeInspectableObjects() throws {
    var p = PickleWriter()
    p.op(0x7D); p.string("args"); p.global("argparse", "Namespace"); p.op(0x29, 0x81, 0x7D)
    p.string("lr"); p.op(0x47); p.bytes += withUnsafeBytes(of: (1e-4).bitPattern.bigEndian) { Array($0) }
    p.op(0x73, 0x62, 0x73, 0x2E)
    try withTemporaryDirectory { dir in
        writeBytes(torchArchive(p.bytes), dir + "/args.pt")
        let c = try TorchCheckpoint(path: dir + "/args.pt")
        #expect(c.root["args"]?["lr"]?.doubleValue == 1e-4)
        #expect(c.flatten().values.map(\.0) == ["args.lr"])
    }
}

@Test func truncatedAndCorruptArchivesNameTheProblem() throws {
    let bytes = readBytes(try fixturePath("pth/views.pt"))
    expectTorchError(Array(bytes.dropLast(30)), "end-of-central-directory", "truncated")
    for cut in stride(from: 100, to: bytes.count - 22, by: 397) { expectTorchError(Array(bytes.prefix(cut)), "truncated") }
    var flipped = bytes
    let pickleStart = try #require((0..<200).first { Array(bytes[$0..<($0 + 4)]) == [0x80, 2, 0x7D, 0x71] })
    flipped[pickleStart + 40] ^= 0x10
    expectTorchError(flipped, "entry 'views/data.pkl'", "CRC-32 mismatch")
    let legacy = readBytes(try fixturePath("pth/views_legacy.pt"))
    expectTorchError(Array(legacy.dropLast(5)), "legacy torch file", "truncated")
}

// MARK: fuzz

/// Opens (and reads every tensor of) each mutated file: it must succeed or throw a HasteError naming the file.
func fuzzTorch(_ files: [[UInt8]], path: String) -> (parsed: Int, rejected: Int) {
    fuzzEach(files, path: path) { path in
        let c = try TorchCheckpoint(path: path)
        for (_, t) in try c.flatTensors() where t.count <= 4096 { _ = t.contiguous() }
        _ = c.flatten().values.map(\.1.description)
    }
}

/// Writes a file in place (no temporary file and rename: thousands of fuzz cases stay fast).
func overwrite(_ bytes: [UInt8], _ path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "overwrite: cannot open \(path)")
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    precondition(written == bytes.count, "overwrite: short write to \(path)")
}

func mutate(_ bytes: [UInt8], count: Int, seed: UInt64, focus: Range<Int>) -> [[UInt8]] {
    var rng = SplitMix64(state: seed)
    return (0..<count).map { _ in
        var b = bytes
        switch rng.below(4) {
        case 0: b.removeLast(1 + rng.below(b.count))
        case 1: for _ in 0...rng.below(3) { b[focus.lowerBound + rng.below(focus.count)] ^= UInt8(1) << UInt8(rng.below(8)) }
        case 2: for _ in 0...rng.below(3) { b[rng.below(b.count)] ^= UInt8(1) << UInt8(rng.below(8)) }
        default: b[focus.lowerBound + rng.below(focus.count)] = [0x00, 0xFF, 0x7F, 0x80, 0x28, 0x2E, 0x71, 0x68][rng.below(8)]
        }
        return b
    }
}

@Test func fuzzedTorchFilesLoadOrThrow() throws {
    let zip = readBytes(try fixturePath("pth/views.pt")), legacy = readBytes(try fixturePath("pth/views_legacy.pt"))
    let source = try TorchZip(file: MappedFile(path: try fixturePath("pth/views.pt"), kind: "zip"))
    let entries = try source.entries.map { ($0.name, try $0.bytes(verify: true)) }
    let pickle = try #require(entries.first { $0.0 == "views/data.pkl" }).1
    withTemporaryDirectory { dir in
        // The archive: damage anywhere, or in the central directory at the end.
        var r = fuzzTorch(mutate(zip, count: 800, seed: 11, focus: (zip.count - 1200)..<zip.count), path: dir + "/zip.pt")
        #expect(r.parsed + r.rejected == 800 && r.rejected > 400 && r.parsed > 100, "archive: \(r)")
        // The pickle inside a well-formed archive (CRCs recomputed), so the unpickler itself meets the damage.
        let wrapped = mutate(pickle, count: 1600, seed: 12, focus: 0..<pickle.count).map { bad in
            makeZip(entries.map { $0.0 == "views/data.pkl" ? ($0.0, bad) : $0 })
        }
        r = fuzzTorch(wrapped, path: dir + "/pickle.pt")
        #expect(r.parsed + r.rejected == 1600 && r.rejected > 1000 && r.parsed > 100, "pickle: \(r)")
        r = fuzzTorch(mutate(legacy, count: 500, seed: 13, focus: 0..<legacy.count), path: dir + "/legacy.pt")
        #expect(r.parsed + r.rejected == 500 && r.rejected > 300 && r.parsed > 50, "legacy: \(r)")
    }
}
