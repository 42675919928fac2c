import Foundation
import HasteTensor

/// safetensors (huggingface/safetensors): u64 LE header length, JSON header, raw C-order LE bytes.
/// Reading maps the file once; tensors are copied out on demand.
public final class SafetensorsFile {
    public struct Entry: Equatable, Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range inside the data section.
        public let begin: Int, end: Int
    }

    public let path: String
    /// Entries in file order (by data offset).
    public let entries: [Entry]
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "Check the path (a .safetensors file).")
        }
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw HasteError.fileFormat(path: path, detail: "cannot read: \(error.localizedDescription)")
        }
        (entries, metadata, dataStart) = try SafetensorsFile.parseHeader(data, path: path)
        index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($0.element.name, $0.offset) })
    }

    public var names: [String] { entries.map(\.name) }
    public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

    /// The named tensor in its stored dtype, on the CPU.
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entry(name) else {
            throw HasteError.fileFormat(path: path, detail: "no tensor named '\(name)' (the file has \(entries.count) tensors)")
        }
        let t = Tensor.empty(e.shape, dtype: e.dtype)
        data.withUnsafeBytes { raw in
            if e.end > e.begin {
                t.backend.copyFromHost(raw.baseAddress! + dataStart + e.begin, to: t.buffer, byteCount: e.end - e.begin)
            }
        }
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

    static func parseHeader(_ data: Data, path: String) throws -> ([Entry], [String: String], Int) {
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: "not a valid safetensors file: \(detail)") }
        guard data.count >= 8 else { throw bad("\(data.count) bytes, shorter than the 8-byte header length") }
        let n = data.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        guard n <= UInt64(data.count - 8), n < 100_000_000 else {
            throw bad("header length \(n) exceeds the file size \(data.count) (truncated file?)")
        }
        let headerEnd = 8 + Int(n)
        guard let json = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<headerEnd)),
              let dict = json as? [String: Any] else { throw bad("header is not a JSON object") }
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        let dataSize = data.count - headerEnd
        for (name, value) in dict {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__['\(k)'] is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any], let dt = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offs = info["data_offsets"] as? [Int], offs.count == 2 else {
                throw bad("entry '\(name)' lacks dtype, shape or data_offsets")
            }
            guard let dtype = dtypeNames[dt] else {
                throw bad("entry '\(name)' has dtype \(dt); supported: \(dtypeNames.keys.sorted().joined(separator: ", "))")
            }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw bad("entry '\(name)' has a negative dimension \(shape)") }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let r = acc.0.multipliedReportingOverflow(by: d); return (r.partialValue, acc.1 || r.overflow)
            }
            guard !overflow, offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == count * dtype.byteSize else {
                throw bad("entry '\(name)' \(dt) \(shape) does not match its byte range \(offs)")
            }
            guard offs[1] <= dataSize else {
                throw bad("entry '\(name)' ends at byte \(offs[1]) but the data section has \(dataSize) bytes (truncated file?)")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: offs[0], end: offs[1]))
        }
        entries.sort { ($0.begin, $0.name) < ($1.begin, $1.name) }
        return (entries, metadata, headerEnd)
    }
}

/// Writes safetensors files, atomically (temporary file, then rename): a crash never leaves a half file.
public enum SafetensorsWriter {
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], to path: String) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = SafetensorsFile.dtypeNames.reduce(into: [DType: String]()) { $0[$1.value] = $1.key }
        for (name, t) in tensors {
            let bytes = t.count * t.dtype.byteSize
            header[name] = ["dtype": names[t.dtype]!, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }   // pad with spaces so data starts aligned
        let tmp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: nil),
              let handle = FileHandle(forWritingAtPath: tmp) else {
            throw HasteError.fileFormat(path: path, detail: "cannot create \(tmp): check that the folder exists and is writable")
        }
        do {
            var n = UInt64(json.count).littleEndian
            try handle.write(contentsOf: Data(bytes: &n, count: 8))
            try handle.write(contentsOf: json)
            for (_, t) in tensors {
                let c = t.to(.cpu).contiguous()
                let bytes = c.count * c.dtype.byteSize
                if bytes > 0 { try handle.write(contentsOf: Data(bytesNoCopy: c.buffer.rawPointer, count: bytes, deallocator: .none)) }
                withExtendedLifetime(c) {}
            }
            try handle.synchronize()
            try handle.close()
            guard rename(tmp, path) == 0 else {
                throw HasteError.fileFormat(path: path, detail: "cannot rename \(tmp) into place (errno \(errno))")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw HasteError.fileFormat(path: path, detail: "write failed: \(error.localizedDescription)")
        }
    }
}
