import HasteTensor

/// A value read from a pickle, as plain data: nothing was imported or called to make it (STYLE §2.7).
/// Classes the reader does not interpret (argparse `Namespace`, TorchScript `__torch__` modules, numpy
/// scalars) become inspectable `object`s; tensors stay on disk until `TorchTensor.load()`.
public indirect enum PickleValue: CustomStringConvertible {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer outside Int64: little-endian two's-complement bytes, as LONG1/LONG4 store it.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    /// Pairs in insertion order (dicts, `OrderedDict`s); keys are usually strings or ints.
    case dict([(key: PickleValue, value: PickleValue)])
    case tensor(TorchTensor)
    /// A class or function named by the pickle but not called (e.g. `torch.float32`, a storage type).
    case global(String)
    /// An instance of a class the reader keeps as data: `module.Name`, constructor arguments and the
    /// state `BUILD` gave it (usually a dict of attributes).
    case object(className: String, args: [PickleValue], state: PickleValue?)

    /// Entries of a dict, or the attribute dict of an object; nil for anything else.
    public var entries: [(key: PickleValue, value: PickleValue)]? {
        switch self {
        case let .dict(pairs): return pairs
        case let .object(_, _, .some(.dict(pairs))): return pairs
        case let .object(_, _, .some(.tuple(parts))):       // (dict, slots dict), as `__reduce_ex__` may give
            if case let .dict(pairs)? = parts.first { return pairs }
            return nil
        default: return nil
        }
    }

    /// The entry whose key is the string or integer `key` (dicts and object attributes).
    public subscript(key: String) -> PickleValue? {
        entries?.first { $0.key.keyText == key }?.value
    }

    /// How a dict key reads in a dotted path: strings as they are, numbers in decimal.
    public var keyText: String {
        switch self {
        case let .string(s): return s
        case let .int(i): return String(i)
        case let .bool(b): return b ? "True" : "False"
        default: return description
        }
    }

    public var intValue: Int? {
        switch self {
        case let .int(i): return i
        case let .bool(b): return b ? 1 : 0
        case let .float(f) where f.rounded() == f && abs(f) < 9e18: return Int(f)
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case let .float(f): return f
        case let .int(i): return Double(i)
        default: return nil
        }
    }

    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    /// Elements of a list or tuple.
    public var elements: [PickleValue]? {
        switch self {
        case let .list(v), let .tuple(v): return v
        default: return nil
        }
    }

    /// Whether the value holds no container and no tensor (one line of `haste inspect` metadata).
    public var isScalar: Bool {
        switch self {
        case .none, .bool, .int, .bigInt, .float, .string, .bytes, .global: return true
        case let .list(v), let .tuple(v): return v.isEmpty
        case let .dict(p): return p.isEmpty
        case .tensor, .object: return false
        }
    }

    /// A Python-like rendering (`repr`), shortened for long bytes and containers.
    public var description: String {
        switch self {
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .bigInt(b): return "0x" + b.reversed().map { String($0, radix: 16).leftPadded(2) }.joined() + " (little-endian two's complement)"
        case let .float(f): return Self.repr(f)
        case let .string(s): return "'" + s + "'"
        case let .bytes(b): return "b<\(b.count) bytes>"
        case let .list(v): return "[" + Self.joined(v) + "]"
        case let .tuple(v): return "(" + Self.joined(v) + (v.count == 1 ? ",)" : ")")
        case let .dict(p): return "{" + p.prefix(16).map { "\($0.key): \($0.value)" }.joined(separator: ", ") + (p.count > 16 ? ", …" : "") + "}"
        case let .tensor(t): return t.description
        case let .global(name): return name
        case let .object(name, args, state):
            return name + "(" + Self.joined(args) + ")" + (state.map { " state=\($0)" } ?? "")
        }
    }

    private static func joined(_ v: [PickleValue]) -> String {
        v.prefix(16).map(\.description).joined(separator: ", ") + (v.count > 16 ? ", … (\(v.count) items)" : "")
    }

    /// Python's float repr for the values configs hold (1e-4 → "0.0001", 0.5 → "0.5", 3 → "3.0").
    static func repr(_ f: Double) -> String {
        if f.isNaN { return "nan" }
        if f.isInfinite { return f < 0 ? "-inf" : "inf" }
        if f == f.rounded() && abs(f) < 1e16 { return String(format: "%.1f", f) }
        return "\(f)"
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
