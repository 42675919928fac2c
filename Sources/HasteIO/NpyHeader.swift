import HasteTensor

/// The header of a `.npy` file (numpy `lib/format.py`): magic `\x93NUMPY`, version, header length
/// (u16 for 1.0, u32 for 2.0/3.0), then a Python dict literal `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3), }` padded with spaces to a multiple of 64 bytes and ended by a newline.
public struct NpyHeader: Equatable, Sendable {
    /// Format version, e.g. "1.0".
    public let version: String
    /// numpy's type string as stored, e.g. "<f4", ">i8", "|b1".
    public let descr: String
    public let dtype: DType
    public let isBigEndian: Bool
    public let fortranOrder: Bool
    /// Shape of the array as numpy sees it (C order once read).
    public let shape: [Int]
    /// Byte offset of the data in the file.
    public let dataOffset: Int
    /// Bytes of the data (checked at parsing: a header whose size overflows is refused).
    public let byteCount: Int

    static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
    /// Type codes we read (after the byte-order character) and the dtype they become.
    static let typeCodes: [String: DType] = ["f2": .float16, "f4": .float32, "f8": .float64, "i4": .int32,
                                             "i8": .int64, "u1": .uint8, "b1": .bool]

    /// Parses the header at the start of `bytes`; errors name `path` and the problem.
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> NpyHeader {
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: "not a valid .npy file: \(detail)") }
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw bad("missing the \\x93NUMPY magic") }
        let major = Int(bytes[6]), minor = Int(bytes[7])
        guard (1...3).contains(major), minor == 0 else { throw bad("format version \(major).\(minor); haste reads 1.0, 2.0, 3.0") }
        let lengthSize = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lengthSize else { throw bad("file ends inside the header length") }
        let length = Int(bytes.littleEndianInteger(at: 8, size: lengthSize))
        let start = 8 + lengthSize
        guard length <= bytes.count - start else {
            throw bad("header length \(length) runs past the end of the \(bytes.count)-byte file (truncated file?)")
        }
        let text = Array(bytes[start..<start + length])
        guard major == 3 || text.allSatisfy({ $0 < 0x80 }) else { throw bad("non-ASCII header in a version \(major).0 file") }
        var parser = PythonLiteralParser(text)
        let dict: [String: PythonLiteral]
        do {
            guard case let .dict(d) = try parser.parseWhole() else { throw PythonLiteralParser.Failure("not a dict") }
            dict = d
        } catch let failure as PythonLiteralParser.Failure {
            throw bad("header is not a Python dict literal: \(failure.reason)")
        }
        guard Set(dict.keys) == ["descr", "fortran_order", "shape"] else {
            throw bad("header keys \(dict.keys.sorted()); expected descr, fortran_order, shape")
        }
        guard case let .string(descr) = dict["descr"]! else {
            throw bad("descr \(dict["descr"]!) is not a simple type string (structured arrays are not supported)")
        }
        guard case let .bool(fortran) = dict["fortran_order"]! else { throw bad("fortran_order is not True or False") }
        guard case let .tuple(dims) = dict["shape"]! else { throw bad("shape is not a tuple") }
        var shape: [Int] = []
        for d in dims {
            guard case let .int(n) = d, n >= 0 else { throw bad("shape \(dict["shape"]!) has a non-integer or negative entry") }
            shape.append(n)
        }
        let (dtype, bigEndian) = try decodeDescr(descr, bad)
        guard let byteCount = CheckedSize.byteCount(shape, dtype) else {
            throw bad("\(descr) \(shape) is too big to address (more than \(CheckedSize.maxRank) dimensions, or a size over 64 bits)")
        }
        return NpyHeader(version: "\(major).0", descr: descr, dtype: dtype, isBigEndian: bigEndian,
                         fortranOrder: fortran, shape: shape, dataOffset: start + length, byteCount: byteCount)
    }

    private static func decodeDescr(_ descr: String, _ bad: (String) -> HasteError) throws -> (DType, Bool) {
        let order = descr.first, code = String(descr.dropFirst())
        guard let order, "<>|=".contains(order), let dtype = typeCodes[code] else {
            throw bad("descr '\(descr)' is not supported; haste reads <f2 <f4 <f8 <i4 <i8 |u1 |b1 (and big-endian >…)")
        }
        return (dtype, order == ">" && dtype.byteSize > 1)
    }

    /// The header numpy itself writes: version 1.0 unless the dict needs more than 65535 bytes.
    static func encode(dtype: DType, shape: [Int]) -> [UInt8]? {
        let descr: String
        switch dtype {
        case .float16: descr = "<f2"
        case .float32: descr = "<f4"
        case .float64: descr = "<f8"
        case .int32: descr = "<i4"
        case .int64: descr = "<i8"
        case .uint8: descr = "|u1"
        case .bool: descr = "|b1"
        case .bfloat16: return nil
        }
        let dims = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }".utf8)
        func paddedTotal(_ prefix: Int) -> Int { (prefix + dict.count + 1 + 63) / 64 * 64 }   // + "\n"
        let v1 = paddedTotal(10) - 10 <= Int(UInt16.max)
        let prefix = v1 ? 10 : 12
        let padded = paddedTotal(prefix)
        dict += [UInt8](repeating: 0x20, count: padded - prefix - dict.count - 1) + [0x0A]
        let n = dict.count
        let length: [UInt8] = v1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : (0..<4).map { UInt8((n >> (8 * $0)) & 0xFF) }
        return magic + [v1 ? 1 : 2, 0] + length + dict
    }
}

/// The few Python literals a .npy header holds.
indirect enum PythonLiteral: Equatable, CustomStringConvertible {
    case string(String), bool(Bool), int(Int), none
    case tuple([PythonLiteral]), list([PythonLiteral]), dict([String: PythonLiteral])

    var description: String {
        switch self {
        case let .string(s): return "'\(s)'"
        case let .bool(b): return b ? "True" : "False"
        case let .int(n): return "\(n)"
        case .none: return "None"
        case let .tuple(xs): return "(" + xs.map(\.description).joined(separator: ", ") + (xs.count == 1 ? ",)" : ")")
        case let .list(xs): return "[" + xs.map(\.description).joined(separator: ", ") + "]"
        case let .dict(d): return "{" + d.map { "'\($0.key)': \($0.value)" }.sorted().joined(separator: ", ") + "}"
        }
    }
}

/// Recursive-descent parser for `ast.literal_eval`'s subset that numpy headers use; nesting is capped so
/// corrupt input fails cleanly.
struct PythonLiteralParser {
    struct Failure: Error { let reason: String; init(_ r: String) { reason = r } }
    private let bytes: [UInt8]
    private var pos = 0
    private var depth = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func parseWhole() throws -> PythonLiteral {
        let v = try value()
        skipSpace()
        guard pos == bytes.count else { throw Failure("unexpected text at byte \(pos)") }
        return v
    }

    private mutating func skipSpace() {
        while pos < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[pos]) { pos += 1 }
    }

    private mutating func value() throws -> PythonLiteral {
        skipSpace()
        guard pos < bytes.count else { throw Failure("unexpected end") }
        depth += 1
        defer { depth -= 1 }
        guard depth <= 16 else { throw Failure("nested too deeply") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return .dict(try dict())
        case UInt8(ascii: "("): return .tuple(try sequence(close: ")"))
        case UInt8(ascii: "["): return .list(try sequence(close: "]"))
        case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .int(try integer())
        default:
            for (word, v) in [("True", PythonLiteral.bool(true)), ("False", .bool(false)), ("None", .none)]
            where bytes[pos...].starts(with: word.utf8) {
                pos += word.utf8.count
                return v
            }
            throw Failure("unexpected character at byte \(pos)")
        }
    }

    private mutating func dict() throws -> [String: PythonLiteral] {
        var out: [String: PythonLiteral] = [:]
        pos += 1
        while true {
            skipSpace()
            if try consume("}") { return out }
            guard case let .string(key) = try value() else { throw Failure("dict key is not a string") }
            skipSpace()
            guard try consume(":") else { throw Failure("expected ':' after '\(key)'") }
            out[key] = try value()
            skipSpace()
            if try consume("}") { return out }
            guard try consume(",") else { throw Failure("expected ',' or '}' at byte \(pos)") }
        }
    }

    private mutating func sequence(close: Character) throws -> [PythonLiteral] {
        var out: [PythonLiteral] = []
        pos += 1
        while true {
            skipSpace()
            if try consume(close) { return out }
            out.append(try value())
            skipSpace()
            if try consume(close) { return out }
            guard try consume(",") else { throw Failure("expected ',' or '\(close)' at byte \(pos)") }
        }
    }

    private mutating func string() throws -> String {
        let quote = bytes[pos]
        pos += 1
        let start = pos
        while pos < bytes.count, bytes[pos] != quote {
            guard bytes[pos] != UInt8(ascii: "\\") else { throw Failure("escapes in strings are not supported") }
            pos += 1
        }
        guard pos < bytes.count else { throw Failure("unterminated string") }
        pos += 1
        return String(decoding: bytes[start..<pos - 1], as: UTF8.self)
    }

    private mutating func integer() throws -> Int {
        let negative = bytes[pos] == UInt8(ascii: "-")
        if negative { pos += 1 }
        var n = 0, digits = 0
        while pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos]) {
            let (m, o1) = n.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(bytes[pos] - UInt8(ascii: "0")))
            guard !o1, !o2 else { throw Failure("integer too large at byte \(pos)") }
            n = s
            digits += 1
            pos += 1
        }
        guard digits > 0 else { throw Failure("expected digits at byte \(pos)") }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "L") { pos += 1 }   // Python 2 longs: (3L, 4L)
        return negative ? -n : n
    }

    private mutating func consume(_ c: Character) throws -> Bool {
        guard pos < bytes.count else { throw Failure("unexpected end") }
        if bytes[pos] == c.asciiValue! { pos += 1; return true }
        return false
    }
}
