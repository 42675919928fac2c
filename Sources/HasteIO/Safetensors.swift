import Foundation
import HasteTensor

/// safetensors (huggingface/safetensors): u64 LE header length, JSON header, raw C-order LE bytes.
/// Reading maps the file once; tensors are copied out on demand. The header is validated as strictly as the
/// reference Rust reader: byte ranges must tile the data section exactly (no overlaps, holes or trailing bytes).
public final class SafetensorsFile {
    public struct Entry: Equatable, Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range inside the data section.
        public let begin: Int, end: Int
        public var byteCount: Int { end - begin }
    }

    public let path: String
    /// Entries in file order (by data offset).
    public let entries: [Entry]
    public let metadata: [String: String]
    private let file: MappedFile
    private let dataStart: Int
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path, kind: "a .safetensors file")
        (entries, metadata, dataStart) = try SafetensorsFile.parseHeader(file.bytes, path: path)
        index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($0.element.name, $0.offset) })
    }

    public var names: [String] { entries.map(\.name) }
    public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

    /// The named tensor in its stored dtype, on the CPU (a copy: it does not keep the file mapped).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entry(name) else {
            throw HasteError.fileFormat(path: path, detail: "no tensor named '\(name)' (the file has \(entries.count) tensors)")
        }
        let t = Tensor.empty(e.shape, dtype: e.dtype)
        if e.byteCount > 0 {
            t.backend.copyFromHost(file.bytes.baseAddress! + dataStart + e.begin, to: t.buffer, byteCount: e.byteCount)
        }
        if e.dtype == .bool { normalizeBools(t) }
        return t
    }

    /// Every tensor, keyed by name.
    public func tensors() throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for e in entries { out[e.name] = try tensor(e.name) }
        return out
    }

    static let dtypeNames: [String: DType] = ["F32": .float32, "F64": .float64, "F16": .float16, "BF16": .bfloat16,
                                              "I32": .int32, "I64": .int64, "U8": .uint8, "BOOL": .bool]
    static let namesByDType: [DType: String] = dtypeNames.reduce(into: [:]) { $0[$1.value] = $1.key }
    /// The reference reader's limit; a larger length is a corrupt file, not a header.
    static let maxHeaderBytes = 100_000_000

    static func parseHeader(_ bytes: UnsafeRawBufferPointer, path: String) throws -> ([Entry], [String: String], Int) {
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: "not a valid safetensors file: \(detail)") }
        guard bytes.count >= 8 else { throw bad("\(bytes.count) bytes, shorter than the 8-byte header length") }
        let n = bytes.littleEndianInteger(at: 0, size: 8)
        guard n <= UInt64(maxHeaderBytes) else { throw bad("header length \(n) is over the \(maxHeaderBytes)-byte limit") }
        guard n <= UInt64(bytes.count - 8) else {
            throw bad("header length \(n) runs past the end of the \(bytes.count)-byte file (truncated file?)")
        }
        let headerEnd = 8 + Int(n)
        guard n >= 2, bytes[8] == UInt8(ascii: "{") else { throw bad("header does not start with '{'") }
        let raw: [String: HeaderValue]
        do {
            raw = try JSONDecoder().decode([String: HeaderValue].self, from: Data(bytes[8..<headerEnd]))
        } catch let error as DecodingError {
            throw bad("header JSON: \(describe(error))")
        } catch {
            throw bad("header JSON: \(error)")
        }
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in raw {
            switch (name == "__metadata__", value) {
            case let (true, .metadata(m)): metadata = m
            case (true, .entry): throw bad("__metadata__ must map strings to strings")
            case (false, .metadata): throw bad("entry '\(name)' lacks dtype, shape or data_offsets")
            case let (false, .entry(dtype, shape, offsets)):
                entries.append(try makeEntry(name, dtype, shape, offsets, bad))
            }
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        try checkTiling(entries, dataSize: bytes.count - headerEnd, bad)
        return (entries, metadata, headerEnd)
    }

    private static func makeEntry(_ name: String, _ dt: String, _ shape: [Int], _ offsets: [Int],
                                  _ bad: (String) -> HasteError) throws -> Entry {
        guard let dtype = dtypeNames[dt] else {
            throw bad("entry '\(name)' has dtype \(dt); haste reads \(dtypeNames.keys.sorted().joined(separator: ", "))")
        }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw bad("entry '\(name)' has a negative dimension \(shape)") }
        guard let bytes = CheckedSize.byteCount(shape, dtype) else {
            throw bad("entry '\(name)' \(dt) \(shape) is too big to address (more than \(CheckedSize.maxRank) dimensions, or a size over 64 bits)")
        }
        guard offsets.count == 2, offsets[0] >= 0, offsets[1] >= offsets[0] else {
            throw bad("entry '\(name)' has data_offsets \(offsets); expected [begin, end] with 0 ≤ begin ≤ end")
        }
        guard offsets[1] - offsets[0] == bytes else {
            throw bad("entry '\(name)' \(dt) \(shape) does not match its byte range \(offsets) "
                      + "(\(offsets[1] - offsets[0]) bytes)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
    }

    /// Entries sorted by offset must cover 0..<dataSize exactly once.
    private static func checkTiling(_ entries: [Entry], dataSize: Int, _ bad: (String) -> HasteError) throws {
        var expected = 0, previous: Entry?
        for e in entries {
            if e.end > dataSize {
                throw bad("entry '\(e.name)' ends at byte \(e.end) but the data section has \(dataSize) bytes (truncated file?)")
            }
            if e.begin < expected, let p = previous {
                throw bad("entries '\(p.name)' [\(p.begin), \(p.end)) and '\(e.name)' [\(e.begin), \(e.end)) overlap")
            }
            if e.begin > expected { throw bad("bytes [\(expected), \(e.begin)) before entry '\(e.name)' belong to no tensor") }
            expected = e.end
            previous = e
        }
        if expected != dataSize {
            throw bad("the tensors cover \(expected) bytes but the data section has \(dataSize) (trailing bytes)")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        let context: DecodingError.Context
        var reason: String?
        switch error {
        case let .keyNotFound(key, c): (context, reason) = (c, "no '\(key.stringValue)' key")
        case let .typeMismatch(_, c), let .valueNotFound(_, c), let .dataCorrupted(c): context = c
        @unknown default: return "\(error)"
        }
        let at = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        return (at.isEmpty ? "" : "at '\(at)': ") + (reason ?? context.debugDescription)
    }
}

/// Swift's Bool must be 0 or 1; a file may hold any byte. Nonzero reads as true (numpy, torch agree).
func normalizeBools(_ t: Tensor) { normalizeBools(t.buffer.rawPointer, count: t.count) }

func normalizeBools(_ address: UnsafeMutableRawPointer, count: Int) {
    let p = address.assumingMemoryBound(to: UInt8.self)
    for i in 0..<count where p[i] > 1 { p[i] = 1 }
}

/// One value of the header object: a tensor entry, or the `__metadata__` string map.
private enum HeaderValue: Decodable {
    case entry(dtype: String, shape: [Int], offsets: [Int])
    case metadata([String: String])

    private enum Keys: String, CodingKey { case dtype, shape, data_offsets }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        if c.contains(.dtype) || c.contains(.shape) || c.contains(.data_offsets) {
            self = .entry(dtype: try c.decode(String.self, forKey: .dtype), shape: try c.decode([Int].self, forKey: .shape),
                          offsets: try c.decode([Int].self, forKey: .data_offsets))
        } else {
            self = .metadata(try decoder.singleValueContainer().decode([String: String].self))
        }
    }
}

/// Writes safetensors files atomically (temporary file, fsync, rename): a crash never leaves a half file.
public enum SafetensorsWriter {
    /// Tensors in the given order (any device, any layout). Names must be unique and not `__metadata__`.
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], to path: String) throws {
        var seen = Set<String>()
        for (name, _) in tensors {
            require(name != "__metadata__", "SafetensorsWriter.write: '__metadata__' is reserved, not a tensor name")
            require(seen.insert(name).inserted, "SafetensorsWriter.write: tensor name '\(name)' appears twice")
        }
        let header = try headerBytes(tensors, metadata: metadata)
        try AtomicFile.write(to: path) { file in
            try file.append(header)
            for (_, t) in tensors {
                let c = t.to(.cpu).contiguous()
                let bytes = c.count * c.dtype.byteSize
                if bytes > 0 { try file.append(c.buffer.rawPointer, count: bytes) }
                withExtendedLifetime(c) {}
            }
        }
    }

    /// Tensors sorted by name.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
        try write(tensors.sorted { $0.key < $1.key }, metadata: metadata, to: path)
    }

    /// Length prefix + JSON header, padded with spaces so the data section starts 8-byte aligned.
    private static func headerBytes(_ tensors: [(String, Tensor)], metadata: [String: String]) throws -> [UInt8] {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for (name, t) in tensors {
            let bytes = t.count * t.dtype.byteSize
            let dtype = SafetensorsFile.namesByDType[t.dtype]!
            header[name] = ["dtype": dtype, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes]))
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        let n = UInt64(json.count)
        return (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } + json
    }
}
