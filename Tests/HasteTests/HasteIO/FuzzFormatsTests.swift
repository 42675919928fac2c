import Foundation
import Testing
import HasteTensor
@testable import HasteIO

// Seeded fuzzing of every format haste reads (issue #14, item 6), beside FuzzTests.swift (safetensors, npy) and
// TorchErrorTests.swift (torch zip, pickle, legacy): each mutant of a valid seed must read or throw a HasteError
// naming the file, never trap. Formats with checksums are also mutated under valid checksums (entries re-zipped,
// PNG chunk CRCs recomputed), so the parsers behind the checksum meet the damage. Scripts/fuzz.sh runs the same
// idea out of process for long campaigns.

/// Writes each mutant to `path` and runs `read`: it must return or throw a HasteError whose text names `path`.
func fuzzEach(_ mutants: [[UInt8]], path: String, read: (String) throws -> Void) -> (parsed: Int, rejected: Int) {
    var parsed = 0, rejected = 0
    for bytes in mutants {
        overwrite(bytes, path)
        do {
            try read(path)
            parsed += 1
        } catch let error as HasteError {
            #expect(error.description.contains(path), "\(error)")
            rejected += 1
        } catch {
            Issue.record("not a HasteError: \(error)")
        }
    }
    return (parsed, rejected)
}

/// The entries of a zip file (torch archive or npz), decompressed.
func zipEntries(_ path: String) throws -> [(String, [UInt8])] {
    try TorchZip(file: MappedFile(path: path, kind: "zip")).entries.map { ($0.name, try $0.bytes(verify: true)) }
}

/// Mutants of one entry of an archive, re-zipped with correct CRCs (stored), so the reader behind the zip layer
/// (npy header parser, unpickler) meets the damage.
func rezippedMutants(_ entries: [(String, [UInt8])], entry: String, count: Int, seed: UInt64, focus: Int = 256) -> [[UInt8]] {
    guard let target = entries.first(where: { $0.0 == entry })?.1 else {
        Issue.record("no entry \(entry) in \(entries.map(\.0))")
        return []
    }
    return mutate(target, count: count, seed: seed, focus: 0..<min(focus, target.count)).map { bad in
        makeZip(entries.map { $0.0 == entry ? ($0.0, bad) : $0 })
    }
}

/// A PNG with every chunk's CRC-32 recomputed (a mutated PNG whose checksums still hold).
func fixingPNGCRCs(_ png: [UInt8]) -> [UInt8] {
    var b = png, at = 8
    while at + 12 <= b.count {
        let length = Int(b[at]) << 24 | Int(b[at + 1]) << 16 | Int(b[at + 2]) << 8 | Int(b[at + 3])
        guard length <= b.count - at - 12 else { break }
        let crc = b.withUnsafeBytes { FileSpan.crc32($0.baseAddress! + at + 4, length + 4) }
        b.replaceSubrange((at + 8 + length)..<(at + 12 + length), with: (0..<4).map { UInt8(truncatingIfNeeded: crc >> (24 - 8 * $0)) })
        at += 12 + length
    }
    return b
}

/// What a caller reading an npz does: every array whole, then rows of the leading axis; and `haste inspect --verify`.
private func readNpz(_ path: String) throws {
    let npz = try NpzArchive(path: path)
    for key in npz.keys {
        let h = try npz.header(key)
        if h.byteCount <= 1 << 20 { _ = try npz.tensor(key) }
        if let n = h.shape.first, n > 0, h.byteCount <= 1 << 20 { _ = try npz.rows(key, 0..<min(n, 2)) }
    }
    _ = try FileInspector.inspect(path, verify: true)
}

@Test func fuzzedNpzArchivesReadOrThrow() throws {
    try withTemporaryDirectory { dir in
        let stored = dir + "/seed.npz"
        try NpzWriter.write([("arr_0", Tensor((0..<(2 * 3 * 4 * 3)).map { UInt8($0) }, shape: [2, 3, 4, 3])),
                             ("mu", Tensor.randn([5], dtype: .float64, seed: 4)), ("sigma", Tensor.randn([3, 2], seed: 5))], to: stored)
        let bytes = readBytes(stored)
        var r = fuzzEach(mutate(bytes, count: 300, seed: 21, focus: 0..<bytes.count), path: dir + "/stored.npz", read: readNpz)
        #expect(r.parsed + r.rejected == 300 && r.rejected > 100 && r.parsed > 10, "stored: \(r)")
        r = fuzzEach(rezippedMutants(try zipEntries(stored), entry: "arr_0.npy", count: 300, seed: 22, focus: 128),
                     path: dir + "/header.npz", read: readNpz)
        #expect(r.parsed + r.rejected == 300 && r.rejected > 100 && r.parsed > 10, "npy member: \(r)")
        let deflated = readBytes(try fixturePath("npz/compressed.npz"))
        r = fuzzEach(mutate(deflated, count: 300, seed: 23, focus: 0..<deflated.count), path: dir + "/deflated.npz", read: readNpz)
        #expect(r.parsed + r.rejected == 300 && r.rejected > 200, "deflated: \(r)")
    }
}

@Test func fuzzedTorchScriptAndDeflatedArchivesLoadOrThrow() throws {
    let scriptedPath = try fixturePath("pth/scripted.pt")
    let scripted = readBytes(scriptedPath), entries = try zipEntries(scriptedPath)
    let deflated = readBytes(try fixturePath("pth/views_deflated.pt"))
    try withTemporaryDirectory { dir in
        var r = fuzzTorch(mutate(scripted, count: 300, seed: 31, focus: 0..<scripted.count), path: dir + "/scripted.pt")
        #expect(r.parsed + r.rejected == 300 && r.rejected > 100 && r.parsed > 50, "torchscript archive: \(r)")
        let constants = try #require(entries.first { $0.0.hasSuffix("constants.pkl") }).0
        r = fuzzTorch(rezippedMutants(entries, entry: constants, count: 300, seed: 32), path: dir + "/constants.pt")
        #expect(r.parsed + r.rejected == 300 && r.rejected > 100, "torchscript constants: \(r)")
        r = fuzzTorch(mutate(deflated, count: 300, seed: 33, focus: 0..<deflated.count), path: dir + "/deflated.pt")
        #expect(r.parsed + r.rejected == 300 && r.rejected > 200, "deflated archive: \(r)")
        // Through `haste inspect --verify`, which sniffs the format first.
        r = fuzzEach(mutate(scripted, count: 200, seed: 34, focus: 0..<64), path: dir + "/sniffed.pt") {
            _ = try FileInspector.inspect($0, verify: true)
        }
        #expect(r.parsed + r.rejected == 200 && r.rejected > 50 && r.parsed > 50, "inspect: \(r)")
    }
}

@Test func fuzzedImagesDecodeOrThrow() throws {
    let fixture = try Fixture("preprocess_pil.safetensors")
    func seed(_ key: String) -> [UInt8] { fixture[key + ".bytes"].scalars(as: UInt8.self) }
    withTemporaryDirectory { dir in
        func decode(_ path: String) throws { _ = try ImageDecoder.decodeRGB(path: path) }
        for (i, key) in ["palette_png", "interlaced_png", "grey16_png", "grey2_png", "la_png", "rgba16_png"].enumerated() {
            let png = seed(key), header = min(png.count, 128)
            let raw = mutate(png, count: 100, seed: 40 + UInt64(i), focus: 0..<header)
            var r = fuzzEach(raw, path: dir + "/\(key).png", read: decode)
            #expect(r.parsed + r.rejected == 100 && r.rejected > 50, "\(key): \(r)")
            // With valid CRCs the damage reaches IHDR, PLTE, tRNS and the zlib stream.
            let crcs = mutate(png, count: 100, seed: 50 + UInt64(i), focus: 8..<header).map(fixingPNGCRCs)
            r = fuzzEach(crcs, path: dir + "/\(key)-crc.png", read: decode)
            #expect(r.parsed + r.rejected == 100 && r.rejected > 10, "\(key) with CRCs: \(r)")
        }
        for (i, key) in ["exif_jpg", "grey_jpg", "cmyk_jpg"].enumerated() {
            let jpg = seed(key)
            let r = fuzzEach(mutate(jpg, count: 200, seed: 60 + UInt64(i), focus: 0..<min(jpg.count, 400)), path: dir + "/\(key).jpg") {
                _ = try FileInspector.inspect($0)
            }
            #expect(r.parsed + r.rejected == 200 && r.rejected > 30, "\(key): \(r)")
        }
    }
}
