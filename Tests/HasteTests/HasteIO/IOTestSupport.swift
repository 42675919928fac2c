import Foundation
import Testing
import HasteTensor
@testable import HasteIO

/// A fresh folder under the system temporary directory, removed when `body` returns.
func withTemporaryDirectory<R>(_ body: (String) throws -> R) rethrows -> R {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haste-io-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

/// The stored bytes of a tensor, in C order (the oracle for bit-identical reads).
func rawBytes(_ t: Tensor) -> [UInt8] {
    let c = t.contiguous()
    let n = c.count * c.dtype.byteSize
    return n == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: c.buffer.rawPointer, count: n))
}

/// Little-endian bytes of fixed-width integers (bit patterns written in a test).
func leBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in (0..<T.bitWidth / 8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

/// Path of a committed fixture file (Tests/HasteTests/Fixtures/<name>).
func fixturePath(_ name: String) throws -> String {
    guard let url = Bundle.module.url(forResource: "Fixtures/" + name, withExtension: nil) else {
        throw HasteError.fileMissing(path: "Tests/HasteTests/Fixtures/\(name)",
                                     hint: "Regenerate with Scripts/make_fixtures.py --only io_torch_dtypes io_npy")
    }
    return url.path
}

/// Expects `body` to throw a HasteError whose text names `path` and contains every phrase.
func expectFileError(_ path: String, _ phrases: String..., sourceLocation: SourceLocation = #_sourceLocation,
                     _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error naming \(path) and \(phrases)", sourceLocation: sourceLocation)
    } catch let error as HasteError {
        let text = error.description
        #expect(text.contains(path), "error does not name the file: \(text)", sourceLocation: sourceLocation)
        for p in phrases {
            #expect(text.contains(p), "error lacks '\(p)': \(text)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a HasteError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// A safetensors file assembled by hand: u64 LE header length, the header text, then `data`.
func craftSafetensors(_ header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    return leBytes([length ?? UInt64(h.count)]) + h + data
}

func writeBytes(_ bytes: [UInt8], _ path: String) {
    let written = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    precondition(written, "writeBytes: cannot create \(path)")
}

func readBytes(_ path: String) -> [UInt8] {
    [UInt8](FileManager.default.contents(atPath: path) ?? Data())
}

/// A CPU tensor holding exactly `bytes` (bit patterns a conversion could alter, e.g. NaN payloads).
func tensorFromBytes(_ bytes: [UInt8], shape: [Int], dtype: DType) -> Tensor {
    precondition(bytes.count == shape.reduce(1, *) * dtype.byteSize, "tensorFromBytes: \(bytes.count) bytes for \(dtype) \(shape)")
    let t = Tensor.empty(shape, dtype: dtype)
    bytes.withUnsafeBytes { raw in
        if let base = raw.baseAddress { t.backend.copyFromHost(base, to: t.buffer, byteCount: bytes.count) }
    }
    return t
}
