import Foundation
import HasteIO
import HasteTensor

/// Reads TensorBoard event files back for tests, independently of haste's writer: TFRecord frames with both
/// CRCs checked, then the protobuf fields of `Event`, `Summary.Value` and `Summary.Image` that haste writes.
enum TFEventReader {
    struct Value: Equatable {
        var tag = ""
        var simple: Float?
        var image: (height: Int, width: Int, colorspace: Int, png: [UInt8])?
        static func == (a: Value, b: Value) -> Bool {
            a.tag == b.tag && a.simple?.bitPattern == b.simple?.bitPattern && a.image?.height == b.image?.height
                && a.image?.width == b.image?.width && a.image?.colorspace == b.image?.colorspace && a.image?.png == b.image?.png
        }
    }

    struct Event {
        var wallTime = 0.0, step = 0
        var fileVersion: String?, writer: String?
        /// `SessionLog.START`: a (re)started job's first step.
        var sessionStart = false
        var values: [Value] = []
    }

    /// The payloads of a TFRecord file; throws at the first bad length, CRC or truncated record.
    static func records(_ bytes: [UInt8], path: String = "<bytes>") throws -> [[UInt8]] {
        var out: [[UInt8]] = [], at = 0
        func u32(_ i: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[i + $1]) << ($1 * 8) } }
        while at < bytes.count {
            guard at + 12 <= bytes.count else { throw bad(path, "truncated header at byte \(at)") }
            let length = Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << ($1 * 8) })
            guard u32(at + 8) == CRC32C.masked(bytes[at..<(at + 8)]) else { throw bad(path, "length CRC at byte \(at)") }
            guard at + 16 + length <= bytes.count else { throw bad(path, "truncated record at byte \(at)") }
            let payload = Array(bytes[(at + 12)..<(at + 12 + length)])
            guard u32(at + 12 + length) == CRC32C.masked(payload) else { throw bad(path, "data CRC at byte \(at)") }
            out.append(payload)
            at += 16 + length
        }
        return out
    }

    static func events(file path: String) throws -> [Event] {
        guard let data = FileManager.default.contents(atPath: path) else { throw bad(path, "unreadable") }
        return try records(Array(data), path: path).map { try event($0) }
    }

    static func event(_ payload: [UInt8]) throws -> Event {
        var e = Event()
        for f in try fields(payload) {
            switch (f.number, f.value) {
            case (1, .fixed64(let v)): e.wallTime = Double(bitPattern: v)
            case (2, .varint(let v)): e.step = Int(Int64(bitPattern: v))
            case (3, .bytes(let b)): e.fileVersion = String(decoding: b, as: UTF8.self)
            case (5, .bytes(let b)):
                e.values += try fields(b).filter { $0.number == 1 }.map { f in
                    guard case .bytes(let v) = f.value else { throw bad("event", "Summary.value is not a message") }
                    return try value(v)
                }
            case (7, .bytes(let b)):
                for s in try fields(b) where s.number == 1 { if case .varint(let status) = s.value { e.sessionStart = status == 1 } }
            case (10, .bytes(let b)):
                for s in try fields(b) where s.number == 1 { if case .bytes(let w) = s.value { e.writer = String(decoding: w, as: UTF8.self) } }
            default: throw bad("event", "unexpected Event field \(f.number)")
            }
        }
        return e
    }

    static func value(_ bytes: [UInt8]) throws -> Value {
        var v = Value()
        for f in try fields(bytes) {
            switch (f.number, f.value) {
            case (1, .bytes(let b)): v.tag = String(decoding: b, as: UTF8.self)
            case (2, .fixed32(let x)): v.simple = Float(bitPattern: x)
            case (4, .bytes(let b)):
                var image = (height: 0, width: 0, colorspace: 0, png: [UInt8]())
                for g in try fields(b) {
                    switch (g.number, g.value) {
                    case (1, .varint(let x)): image.height = Int(x)
                    case (2, .varint(let x)): image.width = Int(x)
                    case (3, .varint(let x)): image.colorspace = Int(x)
                    case (4, .bytes(let p)): image.png = p
                    default: throw bad("event", "unexpected Summary.Image field \(g.number)")
                    }
                }
                v.image = image
            default: throw bad("event", "unexpected Summary.Value field \(f.number)")
            }
        }
        return v
    }

    enum Wire { case varint(UInt64), fixed64(UInt64), fixed32(UInt32), bytes([UInt8]) }

    static func fields(_ b: [UInt8]) throws -> [(number: Int, value: Wire)] {
        var out: [(Int, Wire)] = [], at = 0
        func varint() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard at < b.count, shift < 64 else { throw bad("event", "bad varint") }
                let byte = b[at]; at += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return v }
                shift += 7
            }
        }
        func take(_ n: Int) throws -> [UInt8] {
            guard n >= 0, at + n <= b.count else { throw bad("event", "field runs past its message") }
            defer { at += n }
            return Array(b[at..<(at + n)])
        }
        func little(_ bytes: [UInt8]) -> UInt64 { bytes.enumerated().reduce(0) { $0 | UInt64($1.1) << ($1.0 * 8) } }
        while at < b.count {
            let key = try varint()
            switch key & 7 {
            case 0: out.append((Int(key >> 3), .varint(try varint())))
            case 1: out.append((Int(key >> 3), .fixed64(little(try take(8)))))
            case 2: let n = Int(try varint()); out.append((Int(key >> 3), .bytes(try take(n))))
            case 5: out.append((Int(key >> 3), .fixed32(UInt32(little(try take(4))))))
            default: throw bad("event", "wire type \(key & 7)")
            }
        }
        return out
    }

    /// The scalars of a run directory's event files as TensorBoard's EventAccumulator shows them: files in name
    /// order; a `SessionLog.START` at step s (a resumed run) drops every point at steps ≥ s. Tag → [(step, value)].
    static func scalars(inRun dir: String) throws -> [String: [(step: Int, value: Float)]] {
        var out: [String: [(step: Int, value: Float)]] = [:]
        for name in try eventFiles(inRun: dir) {
            for e in try events(file: "\(dir)/\(name)") {
                if e.sessionStart { for tag in out.keys { out[tag]!.removeAll { $0.step >= e.step } } }
                for v in e.values { if let x = v.simple { out[v.tag, default: []].append((e.step, x)) } }
            }
        }
        return out
    }

    static func eventFiles(inRun dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("events.out.tfevents.") }.sorted()
    }

    static func bad(_ path: String, _ detail: String) -> HasteError { .fileFormat(path: path, detail: detail) }
}
