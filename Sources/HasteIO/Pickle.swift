import HasteTensor

/// A bounded unpickler for what `torch.save` and `torch.jit.save` write (pickle protocols 2 to 5): it builds
/// plain values and tensor records and never imports or calls anything [candle `pickle.rs`, tinygrad
/// `torch_load`]. Calls of torch's tensor-rebuild functions and `OrderedDict` are interpreted; classes become
/// inspectable `PickleValue.object`s; calls of any other function are refused with an error naming it.
/// Every read is bounds-checked, nesting is limited and shared references cannot expand without bound, so a
/// damaged or hostile pickle is a thrown error naming the file, the entry and the byte.
struct Unpickler {
    /// Resolves a persistent id (torch: `('storage', type, key, location, count)`) to a storage.
    typealias StorageResolver = (PickleValue) throws -> TorchStorage

    let bytes: UnsafeRawBufferPointer
    let path: String
    /// The pickle's name in the file ("archive/data.pkl").
    let entry: String
    let resolveStorage: StorageResolver

    /// Deepest nesting of containers accepted (real checkpoints nest fewer than 20 levels).
    static let maxDepth = 100

    var position = 0
    private var stack: [PickleNode] = []
    private var metastack: [[PickleNode]] = []
    private var memo: [Int: PickleNode] = [:]
    private var opcodeStart = 0
    /// Nodes `finalize` may still create: shared references (BINGET, DUP) cannot blow up into an exponential tree.
    /// 16 per pickle byte, at least 65 536 (a 337-byte pickle of `x = (x, x)` otherwise made 2^19 values to list).
    private var budget: Int

    /// `bytes` must stay valid while the unpickler runs; reading starts at `start`.
    init(bytes: UnsafeRawBufferPointer, path: String, entry: String, start: Int = 0, resolveStorage: @escaping StorageResolver) {
        self.bytes = bytes
        self.path = path
        self.entry = entry
        self.position = start
        self.resolveStorage = resolveStorage
        budget = min(max(1 << 16, 16 * (bytes.count - start)), 1 << 24)
    }

    /// Runs to STOP; returns the value and leaves `position` just past the STOP opcode.
    mutating func load() throws -> PickleValue {
        while true {
            opcodeStart = position
            let op = try byte()
            if op == 0x2E {                                              // STOP
                guard metastack.isEmpty, stack.count == 1 else { throw fail("STOP with \(stack.count) values and \(metastack.count) open marks on the stack") }
                return try finalize(stack[0], depth: 0)
            }
            try step(op)
        }
    }

    func fail(_ detail: String) -> HasteError {
        .fileFormat(path: path, detail: "entry '\(entry)', byte \(opcodeStart): \(detail)")
    }

    private mutating func step(_ op: UInt8) throws {
        switch op {
        case 0x80:                                                       // PROTO
            let v = try byte()
            guard (2...5).contains(v) else { throw fail("pickle protocol \(v); haste reads protocols 2 to 5") }
        case 0x95: _ = try take(8)                                       // FRAME: a length hint only
        case 0x28:                                                       // MARK
            guard metastack.count < Unpickler.maxDepth else { throw fail("MARKs nest deeper than \(Unpickler.maxDepth) levels (a damaged file?)") }
            metastack.append(stack); stack = []
        case 0x30: if stack.isEmpty { _ = try popMark() } else { _ = try pop() }   // POP
        case 0x31: _ = try popMark()                                     // POP_MARK
        case 0x32: stack.append(try top())                               // DUP
        case 0x71: try memoize(Int(try byte()))                          // BINPUT
        case 0x72: try memoize(Int(try uint(4)))                         // LONG_BINPUT
        case 0x94: try memoize(memo.count)                               // MEMOIZE
        case 0x68, 0x6A:                                                 // BINGET, LONG_BINGET
            let i = Int(op == 0x68 ? UInt64(try byte()) : try uint(4))
            guard let node = memo[i] else { throw fail("memo entry \(i) read before it was written") }
            stack.append(node)
        case 0x51:                                                       // BINPERSID
            let pid = try finalize(try pop(), depth: 0)
            stack.append(PickleNode(.storage(try resolveStorage(pid))))
        case 0x63, 0x93, 0x52, 0x81, 0x92, 0x62: try objectOp(op)
        default:
            if try !scalarOp(op) && !containerOp(op) {
                let printable = (0x21...0x7E).contains(op) ? " ('\(Character(UnicodeScalar(op)))')" : ""
                throw fail("opcode 0x\(String(op, radix: 16))\(printable) is not supported (haste reads the pickle subset torch writes, protocols 2 to 5)")
            }
        }
    }

    /// Opcodes that push one immutable value; false when `op` is not one of them.
    private mutating func scalarOp(_ op: UInt8) throws -> Bool {
        let value: PickleValue
        switch op {
        case 0x4E: value = .none                                         // NONE
        case 0x88: value = .bool(true)                                   // NEWTRUE
        case 0x89: value = .bool(false)                                  // NEWFALSE
        case 0x4A: value = .int(Int(Int32(truncatingIfNeeded: try uint(4))))   // BININT
        case 0x4B: value = .int(Int(try byte()))                         // BININT1
        case 0x4D: value = .int(Int(try uint(2)))                        // BININT2
        case 0x8A: value = try long(Int(try byte()))                     // LONG1
        case 0x8B: value = try long(try length(4))                       // LONG4
        case 0x47: value = .float(Double(bitPattern: try bigEndian(8)))  // BINFLOAT
        case 0x58, 0x8C, 0x8D, 0x54, 0x55:                               // BINUNICODE(8), SHORT_BINUNICODE, BINSTRING, SHORT_BINSTRING
            let n = try length(op == 0x8C || op == 0x55 ? 1 : op == 0x8D ? 8 : 4)
            value = .string(String(decoding: try take(n), as: UTF8.self))
        case 0x42, 0x43, 0x8E, 0x96:                                     // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
            value = .bytes(Array(try take(try length(op == 0x43 ? 1 : op == 0x42 ? 4 : 8))))
        default: return false
        }
        stack.append(PickleNode(.value(value)))
        return true
    }

    /// Opcodes that build or fill lists, tuples, dicts and sets; false when `op` is not one of them.
    private mutating func containerOp(_ op: UInt8) throws -> Bool {
        switch op {
        case 0x7D: stack.append(PickleNode(.dict([])))                   // EMPTY_DICT
        case 0x5D, 0x8F: stack.append(PickleNode(.list([])))             // EMPTY_LIST, EMPTY_SET (a set reads as a list)
        case 0x29: stack.append(PickleNode(.tuple([])))                  // EMPTY_TUPLE
        case 0x74, 0x91: stack.append(PickleNode(.tuple(try popMark()))) // TUPLE, FROZENSET
        case 0x85, 0x86, 0x87:                                           // TUPLE1, TUPLE2, TUPLE3
            let n = Int(op - 0x84)
            guard stack.count >= n else { throw fail("TUPLE\(n) with \(stack.count) values on the stack") }
            let items = Array(stack.suffix(n))
            stack.removeLast(n)
            stack.append(PickleNode(.tuple(items)))
        case 0x6C: stack.append(PickleNode(.list(try popMark())))        // LIST
        case 0x64: stack.append(PickleNode(.dict(try pairs(try popMark()))))   // DICT
        case 0x61: try append([try pop()])                               // APPEND
        case 0x65, 0x90: try append(try popMark())                       // APPENDS, ADDITEMS
        case 0x73:                                                       // SETITEM
            let value = try pop(), key = try pop()
            try setItems([(key, value)])
        case 0x75: try setItems(try pairs(try popMark()))                // SETITEMS
        default: return false
        }
        return true
    }

    private mutating func objectOp(_ op: UInt8) throws {
        switch op {
        case 0x63:                                                       // GLOBAL "module\nname\n"
            let module = try line(), name = try line()
            stack.append(PickleNode(.value(.global(module + "." + name))))
        case 0x93:                                                       // STACK_GLOBAL
            let name = try pop(), module = try pop()
            guard case let .value(.string(n)) = name.kind, case let .value(.string(m)) = module.kind else {
                throw fail("STACK_GLOBAL needs two strings")
            }
            stack.append(PickleNode(.value(.global(m + "." + n))))
        case 0x52, 0x81:                                                 // REDUCE, NEWOBJ
            let args = try pop(), callee = try pop()
            stack.append(try call(callee, args))
        case 0x92:                                                       // NEWOBJ_EX: keyword arguments are dropped
            _ = try pop()
            let args = try pop(), callee = try pop()
            stack.append(try call(callee, args))
        default:                                                         // BUILD
            let state = try pop(), target = try top()
            switch target.kind {
            case let .object(name, args, _): target.kind = .object(name, args, state)
            case .dict: break   // OrderedDict attributes (torch's `_metadata`) are not kept
            default: throw fail("BUILD on \(target.kindName), which has no attributes")
            }
        }
    }

    // MARK: calls

    private mutating func call(_ callee: PickleNode, _ argsNode: PickleNode) throws -> PickleNode {
        guard case let .value(.global(name)) = callee.kind else { throw fail("call of \(callee.kindName), not of a global") }
        guard case let .tuple(args) = argsNode.kind else { throw fail("arguments of \(name) are \(argsNode.kindName), not a tuple") }
        return try call(name, args)
    }

    private mutating func call(_ name: String, _ args: [PickleNode]) throws -> PickleNode {
        switch name {
        case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
            return PickleNode(.value(.tensor(try rebuildTensor(name, args))))
        case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
            guard let data = args.first, case .value(.tensor) = data.kind else { throw fail("\(name) without a tensor") }
            return data
        case "torch._tensor._rebuild_from_type_v2":                      // (function, type, args, state)
            guard args.count >= 3, case let .value(.global(function)) = args[0].kind, function.hasPrefix("torch._utils._rebuild_"),
                  case let .tuple(inner) = args[2].kind else { throw fail("\(name) with unexpected arguments") }
            return try call(function, inner)
        case "collections.defaultdict":                                  // (default_factory,): the factory is not kept
            return PickleNode(.dict([]))
        case "collections.OrderedDict", "builtins.dict":
            guard let first = args.first else { return PickleNode(.dict([])) }
            guard case let .list(items) = first.kind else { throw fail("\(name) of \(first.kindName)") }
            return PickleNode(.dict(try items.map { item in
                guard case let .tuple(kv) = item.kind, kv.count == 2 else { throw fail("\(name) item is not a (key, value) pair") }
                return (kv[0], kv[1])
            }))
        case "torch.jit._pickle.restore_type_tag":                       // (value, type string) from TorchScript
            guard let value = args.first else { throw fail("\(name) without a value") }
            return value
        case "builtins.set", "builtins.frozenset", "builtins.list", "torch.jit._pickle.build_intlist",
             "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist", "torch.jit._pickle.build_tensorlist":
            guard let first = args.first else { return PickleNode(.list([])) }
            guard case let .list(items) = first.kind else { throw fail("\(name) of \(first.kindName)") }
            return PickleNode(.list(items))
        case "_codecs.encode":                                           // protocol 2's spelling of bytes
            guard args.count == 2, case let .value(.string(text)) = args[0].kind else { throw fail("_codecs.encode with unexpected arguments") }
            let latin1 = text.unicodeScalars.allSatisfy { $0.value < 256 }
            return PickleNode(.value(.bytes(latin1 ? text.unicodeScalars.map { UInt8($0.value) } : Array(text.utf8))))
        default:
            try Unpickler.checkCallable(name, fail)
            return PickleNode(.object(name, args, nil))
        }
    }

    /// (storage, storage_offset, size, stride, …): the record of a strided view of `storage`.
    private mutating func rebuildTensor(_ name: String, _ args: [PickleNode]) throws -> TorchTensor {
        guard args.count >= 4, case let .storage(storage) = args[0].kind else {
            throw fail("\(name) needs (storage, offset, size, stride, …)")
        }
        let values = try args[1...3].map { try finalize($0, depth: 0) }
        guard let offset = values[0].intValue, let shape = values[1].elements?.compactMap(\.intValue),
              let strides = values[2].elements?.compactMap(\.intValue), shape.count == values[1].elements?.count,
              strides.count == values[2].elements?.count else {
            throw fail("\(name): offset \(values[0]), size \(values[1]) and stride \(values[2]) must be integers")
        }
        return TorchTensor(storage: storage, offset: offset, shape: shape, strides: strides)
    }

    /// Functions never run here; these names are refused outright, and any other lower-case name
    /// (a function, not a class) is refused unless it is a known data type.
    static func checkCallable(_ name: String, _ fail: (String) -> HasteError) throws {
        let module = name.split(separator: ".").first.map(String.init) ?? name
        let last = name.split(separator: ".").last.map(String.init) ?? name
        let isClass = last.first?.isUppercase == true
        if denied.contains(module) || (module == "builtins" && !dataTypes.contains(name)) {
            throw fail("refuses global '\(name)': a pickle that names it would run code when loaded by Python; haste builds only values and tensors")
        }
        if name.hasPrefix("torch._utils._rebuild_") || name.hasPrefix("torch._tensor._rebuild_") {
            throw fail("'\(name)' (a quantized, sparse, meta or subclassed tensor) is not supported; save plain dense tensors")
        }
        if !(isClass || module == "__torch__" || dataTypes.contains(name)) {
            throw fail("refuses to call global '\(name)': haste reads tensors, containers and classes kept as data, and calls no functions")
        }
    }

    static let denied: Set<String> = [
        "__builtin__", "os", "posix", "nt", "subprocess", "sys", "importlib", "runpy", "shutil", "socket", "pty", "code", "commands",
        "webbrowser", "ctypes", "marshal", "pickle", "_pickle", "types", "operator", "functools", "io", "pathlib",
        "multiprocessing", "threading", "signal", "platform", "tempfile", "urllib", "http", "asyncio", "inspect", "pydoc",
    ]
    static let dataTypes: Set<String> = [
        "builtins.complex", "builtins.slice", "builtins.range", "builtins.bytearray", "builtins.bytes", "torch.device",
        "torch.dtype", "numpy.dtype", "numpy.core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar", "numpy._core.multiarray._reconstruct", "torch.serialization._get_layout",
    ]
}

// MARK: reading, stack and memo

extension Unpickler {
    private mutating func byte() throws -> UInt8 {
        guard position < bytes.count else { throw fail("the pickle ends before its STOP opcode (truncated?)") }
        position += 1
        return bytes[position - 1]
    }

    private mutating func take(_ n: Int) throws -> Slice<UnsafeRawBufferPointer> {
        guard n >= 0, n <= bytes.count - position else {
            throw fail("needs \(n) more bytes but \(bytes.count - position) remain (truncated or damaged pickle)")
        }
        position += n
        return bytes[(position - n)..<position]
    }

    /// Little-endian unsigned integer of `n` bytes.
    private mutating func uint(_ n: Int) throws -> UInt64 {
        try take(n).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    private mutating func bigEndian(_ n: Int) throws -> UInt64 {
        try take(n).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// A length field of `n` bytes, checked against what remains (a huge length is damage, not data).
    private mutating func length(_ n: Int) throws -> Int {
        let v = try uint(n)   // signed 4-byte lengths that are negative read as huge, and fail below
        guard v <= UInt64(bytes.count - position) else {
            throw fail("a length of \(v) bytes runs past the end of the \(bytes.count)-byte pickle (truncated?)")
        }
        return Int(v)
    }

    /// A newline-terminated ASCII line (GLOBAL's module and name), at most 256 bytes.
    private mutating func line() throws -> String {
        guard let end = bytes[position...].prefix(257).firstIndex(of: 0x0A) else { throw fail("GLOBAL name without a newline") }
        let text = String(decoding: bytes[position..<end], as: UTF8.self)
        position = end + 1
        return text
    }

    /// A little-endian two's-complement integer of `n` bytes; one that fits in 64 bits is an `.int` even when
    /// stored with redundant sign bytes.
    private mutating func long(_ n: Int) throws -> PickleValue {
        var raw = Array(try take(n))
        guard !raw.isEmpty else { return .int(0) }
        let sign: UInt8 = raw.last! & 0x80 == 0 ? 0 : 0xFF
        while raw.count > 8 && raw.last == sign && (raw[raw.count - 2] & 0x80 == 0) == (sign == 0) { raw.removeLast() }
        guard raw.count <= 8 else { return .bigInt(raw) }
        var v = raw.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        if raw.count < 8 && sign != 0 { v |= ~UInt64(0) << UInt64(8 * raw.count) }   // sign-extend
        return .int(Int(Int64(bitPattern: v)))
    }

    private mutating func pop() throws -> PickleNode {
        guard let node = stack.popLast() else { throw fail("the stack is empty") }
        return node
    }

    private func top() throws -> PickleNode {
        guard let node = stack.last else { throw fail("the stack is empty") }
        return node
    }

    /// Everything pushed since the last MARK, which is removed.
    private mutating func popMark() throws -> [PickleNode] {
        guard let saved = metastack.popLast() else { throw fail("no MARK to pop to") }
        defer { stack = saved }
        return stack
    }

    private mutating func memoize(_ i: Int) throws {
        memo[i] = try top()
    }

    private mutating func pairs(_ items: [PickleNode]) throws -> [(PickleNode, PickleNode)] {
        guard items.count % 2 == 0 else { throw fail("\(items.count) items for key-value pairs") }
        return stride(from: 0, to: items.count, by: 2).map { (items[$0], items[$0 + 1]) }
    }

    private mutating func append(_ items: [PickleNode]) throws {
        let target = try top()
        guard case var .list(existing) = target.kind else { throw fail("APPEND to \(target.kindName), not a list") }
        target.kind = .tuple([])             // drop the node's reference so the append does not copy
        existing.append(contentsOf: items)
        target.kind = .list(existing)
    }

    private mutating func setItems(_ items: [(PickleNode, PickleNode)]) throws {
        let target = try top()
        guard case var .dict(existing) = target.kind else { throw fail("SETITEM on \(target.kindName), not a dict") }
        target.kind = .tuple([])
        existing.append(contentsOf: items)
        target.kind = .dict(existing)
    }

    /// The plain value of a node. Nesting deeper than `maxDepth` (also what a cycle becomes) and more nodes
    /// than the budget are errors.
    mutating func finalize(_ node: PickleNode, depth: Int) throws -> PickleValue {
        guard depth < Unpickler.maxDepth else { throw fail("values nest deeper than \(Unpickler.maxDepth) levels (torch writes far fewer: a cyclic structure or a damaged file)") }
        budget -= 1
        guard budget >= 0 else { throw fail("shared references expand to too many values") }
        switch node.kind {
        case let .value(v): return v
        case let .list(items): return .list(try items.map { try finalize($0, depth: depth + 1) })
        case let .tuple(items): return .tuple(try items.map { try finalize($0, depth: depth + 1) })
        case let .dict(pairs):
            return .dict(try pairs.map { (key: try finalize($0.0, depth: depth + 1), value: try finalize($0.1, depth: depth + 1)) })
        case let .object(name, args, state):
            return .object(className: name, args: try args.map { try finalize($0, depth: depth + 1) },
                           state: try state.map { try finalize($0, depth: depth + 1) })
        case let .storage(s): return .object(className: s.typeName, args: [.string(s.key)], state: nil)
        }
    }
}
