import HasteTensor

/// A file written by `torch.save` (zip, torch ≥ 1.6, or the legacy sequential format) or `torch.jit.save`
/// (TorchScript), read without Python (STYLE §2.7, spec/formats.md §1). Opening parses the pickle and checks
/// every tensor's view against its storage; tensor bytes are read only when asked for, once per storage.
public final class TorchCheckpoint {
    public enum Format: String, Sendable {
        case pytorch, torchScript = "torchscript", legacy = "pytorch-legacy"
    }

    public let path: String
    public let format: Format
    /// The saved object: usually a dict (a state dict, or HASTE's {model, ema, opt, args, steps}); for
    /// TorchScript the root module, its attributes in the objects' state.
    public let root: PickleValue
    /// TorchScript tensor constants (`constants.pkl`), nil for other formats.
    public let constants: PickleValue?
    /// The pickle's entry name, for messages ("archive/data.pkl").
    public let pickleEntry: String
    let file: MappedFile

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path, kind: "a PyTorch .pt/.pth file")
        let bytes = file.bytes
        if TorchZip.looksLikeZip(bytes) {
            let zip = try TorchZip(file: file)
            let (prefix, entry) = try TorchCheckpoint.pickleEntry(zip)
            pickleEntry = entry.name
            root = try TorchCheckpoint.unpickle(entry, zip: zip, storageFolder: prefix + "data/")
            if let c = zip.entry(prefix + "constants.pkl") {
                format = .torchScript
                constants = try TorchCheckpoint.unpickle(c, zip: zip, storageFolder: prefix + "constants/")
            } else {
                format = .pytorch
                constants = nil
            }
            if let order = zip.entry(prefix + "byteorder"), try order.bytes(verify: true) != Array("little".utf8) {
                throw HasteError.fileFormat(path: path, detail: "entry '\(order.name)': big-endian tensors are not supported")
            }
        } else if LegacyTorchFile.looksLegacy(bytes) {
            (root, pickleEntry) = try LegacyTorchFile.read(file)
            format = .legacy
            constants = nil
        } else {
            let hint = bytes.count > 8 && bytes.u64(0) <= UInt64(SafetensorsFile.maxHeaderBytes) && bytes[8] == UInt8(ascii: "{")
                ? " (it looks like safetensors)" : ""
            throw HasteError.fileFormat(path: path, detail: "not a PyTorch file: neither a zip archive (torch.save, torch.jit.save) nor the legacy torch.save format\(hint)")
        }
        for (name, tensor) in flatten().tensors {
            if let problem = tensor.problem {
                throw HasteError.fileFormat(path: path, detail: "entry '\(pickleEntry)', tensor '\(name)': \(problem)")
            }
        }
    }

    /// Whether the file starts like a torch file (a zip archive, or the legacy format's magic number).
    public static func isTorchFile(_ path: String) -> Bool {
        guard let file = try? MappedFile(path: path, kind: "a PyTorch file") else { return false }
        return TorchZip.looksLikeZip(file.bytes) || LegacyTorchFile.looksLegacy(file.bytes)
    }

    /// The value at a dotted path of dict keys, attribute names and list indices ("ema", "opt.state.3",
    /// "args.lr"). Keys that contain dots themselves ("blocks.0.attn.qkv.weight") are matched whole.
    public func value(at keyPath: String) throws -> PickleValue {
        var current = root, walked: [String] = []
        var parts = keyPath.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        while !parts.isEmpty {
            var next: (PickleValue, Int)?
            for n in stride(from: parts.count, through: 1, by: -1) {
                let key = parts[0..<n].joined(separator: ".")
                if let v = current[key] { next = (v, n); break }
                if let items = current.elements, let i = Int(key), items.indices.contains(i) { next = (items[i], n); break }
            }
            guard let (value, n) = next else {
                let available = current.entries?.map(\.key.keyText) ?? current.elements.map { ["0..<\($0.count)"] } ?? []
                let under = walked.isEmpty ? "at the top level" : "under '\(walked.joined(separator: "."))'"
                throw HasteError.fileFormat(path: path, detail: "no entry '\(parts.joined(separator: "."))' \(under); "
                    + (available.isEmpty ? "it holds \(current)" : "keys: " + available.prefix(30).joined(separator: ", ")))
            }
            walked += parts[0..<n]
            parts.removeFirst(n)
            current = value
        }
        return current
    }

    /// Every tensor under `value` (default: the whole file) with its dotted path, and every other leaf value
    /// (steps, args, hyper-parameters). Lists of plain values stay one leaf. TorchScript modules' bookkeeping
    /// attributes (`training`, `_is_full_backward_hook`) are left out; constants come as `constants.N`.
    public func flatten(_ value: PickleValue? = nil) -> (tensors: [(String, TorchTensor)], values: [(String, PickleValue)]) {
        var tensors: [(String, TorchTensor)] = [], values: [(String, PickleValue)] = []
        func walk(_ v: PickleValue, _ path: String) {
            func join(_ key: String) -> String { path.isEmpty ? key : path + "." + key }
            switch v {
            case let .tensor(t): tensors.append((path.isEmpty ? "tensor" : path, t))
            case let .list(items) where !v.isScalar && !items.allSatisfy(\.isScalar),
                 let .tuple(items) where !v.isScalar && !items.allSatisfy(\.isScalar):
                for (i, item) in items.enumerated() { walk(item, join(String(i))) }
            case let .dict(pairs) where !pairs.isEmpty:
                for (k, item) in pairs { walk(item, join(k.keyText)) }
            case let .object(name, args, state):
                if let pairs = v.entries {
                    let skip: Set<String> = name.hasPrefix("__torch__.") ? ["training", "_is_full_backward_hook"] : []
                    for (k, item) in pairs where !skip.contains(k.keyText) { walk(item, join(k.keyText)) }
                } else if let state {
                    walk(state, path)
                } else {
                    walk(args.isEmpty ? .global(name) : .tuple(args), path)
                }
            default: values.append((path.isEmpty ? "value" : path, v))
            }
        }
        walk(value ?? root, "")
        if value == nil, let constants, let items = constants.elements, !items.isEmpty { walk(constants, "constants") }
        return (tensors, values)
    }

    /// The key a state dict is read from when none is given: the file itself when it is a flat dict of
    /// tensors (DINOv2 hub files), else the first of `ema` (what HASTE/REPA's generate.py loads), `model`,
    /// `state_dict`, `model_state_dict`, `module`, `net` that holds tensors, else the whole file ("").
    public var defaultStateDictKey: String {
        if let pairs = root.entries, !pairs.isEmpty, pairs.allSatisfy({ if case .tensor = $0.value { true } else { false } }) {
            return ""
        }
        for key in ["ema", "model", "state_dict", "model_state_dict", "module", "net"] {
            if let v = root[key], !flatten(v).tensors.isEmpty { return key }
        }
        return ""
    }

    /// Tensors under `keyPath` (nil: `defaultStateDictKey`; "": the whole file), keyed by their paths
    /// relative to it, in file order; each storage is read once. Views larger than their storage may take
    /// `expandingViewLimit` bytes together; past that they are an error (`TorchTensor.expandingViewLimit`).
    public func tensors(at keyPath: String? = nil, expandingViewLimit: Int = TorchTensor.expandingViewLimit) throws -> [(String, Tensor)] {
        let key = keyPath ?? defaultStateDictKey
        let value = key.isEmpty ? nil : try self.value(at: key)
        var expanded = 0
        return try flatten(value).tensors.map { name, t in
            do {
                let loaded = try t.load(expandingViewLimit: expandingViewLimit, used: expanded)
                expanded += t.expandedByteCount                       // ≤ the limit: load checked it
                return (name, loaded)
            } catch let error as HasteError {
                var reason = error.description                        // named once: "FILE: tensor 'x': entry …"
                if case let .fileFormat(p, detail) = error, p == path { reason = detail }
                throw HasteError.fileFormat(path: path, detail: "tensor '\(key.isEmpty ? name : key + "." + name)': \(reason)")
            }
        }
    }

    /// A state dict (torch `load_state_dict` input): `tensors(at:)` as a dictionary.
    public func stateDict(at keyPath: String? = nil) throws -> [String: Tensor] {
        Dictionary(try tensors(at: keyPath), uniquingKeysWith: { first, _ in first })
    }

    /// Every tensor of the file with its dotted path (for `haste convert` and `haste inspect`).
    public func flatTensors() throws -> [(String, Tensor)] { try tensors(at: "") }

    // MARK: opening

    /// The folder prefix ("archive/") and the `data.pkl` entry: the one nearest the top of the archive.
    private static func pickleEntry(_ zip: TorchZip) throws -> (String, FileSpan) {
        let candidates = zip.entries.filter { $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") }
        guard let best = candidates.min(by: { $0.name.count < $1.name.count }) else {
            throw HasteError.fileFormat(path: zip.path, detail: "a zip archive without a data.pkl entry: not written by torch.save (entries: "
                + zip.entries.prefix(5).map(\.name).joined(separator: ", ") + ")")
        }
        return (String(best.name.dropLast("data.pkl".count)), best)
    }

    private static func unpickle(_ entry: FileSpan, zip: TorchZip, storageFolder: String) throws -> PickleValue {
        var storages: [String: TorchStorage] = [:]
        let data = try entry.bytes(verify: true)
        let resolve: Unpickler.StorageResolver = { pid in
            let (key, dtype, count, typeName) = try storageID(pid, path: zip.path, entry: entry.name)
            if let s = storages[key] {
                guard s.dtype == dtype && s.count == count else {
                    throw HasteError.fileFormat(path: zip.path, detail: "entry '\(entry.name)': storage '\(key)' is declared twice with different types or sizes")
                }
                return s
            }
            guard let span = zip.entry(storageFolder + key) else {
                throw HasteError.fileFormat(path: zip.path, detail: "entry '\(entry.name)': storage '\(key)' has no entry \(storageFolder + key) (truncated archive?)")
            }
            guard let bytes = CheckedSize.product(count, dtype.byteSize), span.size == bytes else {
                let declared = CheckedSize.product(count, dtype.byteSize).map { "\($0) bytes" } ?? "more bytes than 64 bits count"
                throw span.fail("holds \(span.size) bytes, but the pickle declares \(count) \(dtype) elements (\(declared))")
            }
            let s = TorchStorage(key: key, dtype: dtype, count: count, typeName: typeName, span: span)
            storages[key] = s
            return s
        }
        return try data.withUnsafeBytes { raw in
            var machine = Unpickler(bytes: raw, path: zip.path, entry: entry.name, resolveStorage: resolve)
            return try machine.load()
        }
    }

    /// ('storage', storage type, key, location, element count [, view metadata]) → its parts.
    static func storageID(_ pid: PickleValue, path: String, entry: String) throws -> (String, DType, Int, String) {
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: "entry '\(entry)': \(detail)") }
        guard let parts = pid.elements, parts.count >= 5, parts[0].stringValue == "storage",
              case let .global(typeName) = parts[1], let count = parts[4].intValue, count >= 0 else {
            throw bad("persistent id \(pid) is not ('storage', type, key, location, count)")
        }
        let key = parts[2].stringValue ?? parts[2].keyText
        guard let dtype = TorchStorage.dtypes[String(typeName.split(separator: ".").last ?? "")],
              typeName.hasPrefix("torch.") else {
            throw bad("storage '\(key)' has type \(typeName); haste reads float32, float64, float16, bfloat16, int64, int32, uint8 and bool tensors")
        }
        if parts.count > 5, case .tuple = parts[5] {
            throw bad("storage '\(key)' is a view of another storage (legacy view metadata), which is not supported")
        }
        return (key, dtype, count, typeName)
    }
}

/// What `TorchCheckpoint.convert` wrote, and how long reading and writing took.
public struct ConversionReport: Sendable {
    public let tensors: Int
    /// Bytes of tensor data written.
    public let byteCount: Int
    public let metadata: [String: String]
    public let readSeconds: Double
    public let writeSeconds: Double
}

extension TorchCheckpoint {
    /// A torch file → safetensors (`haste convert`): the tensors under `select` (nil or "": all of them) named
    /// by their dotted paths relative to it, each in its stored dtype with its bytes unchanged (views are
    /// written contiguously); the non-tensor values under it (steps, args) as metadata strings, with
    /// `format: pt` as Hugging Face loaders expect. Each storage is read once; the output is written atomically.
    /// A broadcast or overlapping view that would expand its storage past `expandingViewLimit` bytes is refused
    /// (pass `Int.max` to write it anyway: `haste convert --allow-expanding-views`).
    public static func convert(_ input: String, to output: String, select: String? = nil,
                               expandingViewLimit: Int = TorchTensor.expandingViewLimit) throws -> ConversionReport {
        let clock = ContinuousClock(), start = clock.now
        let checkpoint = try TorchCheckpoint(path: input)
        let key = select ?? ""
        let tensors = try checkpoint.tensors(at: key, expandingViewLimit: expandingViewLimit)
        var seen = Set<String>()
        for (name, _) in tensors where !seen.insert(name).inserted || name == "__metadata__" {
            throw HasteError.fileFormat(path: input, detail: "two tensors flatten to the name '\(name)'; select a part of the file with --select")
        }
        var metadata = ["format": "pt"]
        for (name, value) in checkpoint.flatten(key.isEmpty ? nil : try checkpoint.value(at: key)).values {
            metadata[name] = value.stringValue ?? value.description
        }
        let read = clock.now
        try SafetensorsWriter.write(tensors, metadata: metadata, to: output)
        let end = clock.now
        return ConversionReport(tensors: tensors.count, byteCount: tensors.reduce(0) { $0 + $1.1.count * $1.1.dtype.byteSize },
                                metadata: metadata, readSeconds: (read - start).seconds, writeSeconds: (end - read).seconds)
    }
}
