import HasteTensor

extension ParameterStore {
    /// Every entry (parameters and buffers) in registration order = PyTorch's state-dict order. The tensors
    /// are the registered ones (arena views after `finalize`), not copies.
    public func stateDict() -> [(String, Tensor)] {
        unpackWeights()
        return entries.map { ($0.key, $0.tensor) }
    }

    /// Copies a state dict into the store (torch `load_state_dict`). Everything is checked before anything
    /// is copied, and one `HasteError.stateDict` lists every missing, unexpected and mis-shaped key (STYLE R6).
    /// `strict: false` tolerates missing and unexpected keys (as torch does), never wrong shapes.
    /// float16, bfloat16 and float64 values are converted to the store's dtype on copy.
    public func load(_ tensors: [String: Tensor], strict: Bool = true) throws {
        try StateDictCheck.validate(expected: entries.map { ($0.key, $0.tensor.shape) }, given: tensors,
                                    strict: strict, what: "state dict")
        unpackWeights()
        noGrad {
            for e in entries {
                if let t = tensors[e.key] { e.tensor.copyValues(from: t) }
            }
        }
    }
}

/// The strict comparison of a model's keys with a file's (STYLE R6), shared by the store, EMA and AdamW.
enum StateDictCheck {
    /// How many keys of each kind a report spells out.
    static let listed = 20

    static func validate(expected: [(String, [Int])], given: [String: Tensor], strict: Bool, what: String) throws {
        var missing: [String] = [], misShaped: [String] = [], badType: [String] = []
        var known = Set<String>()
        for (key, shape) in expected {
            known.insert(key)
            guard let t = given[key] else { missing.append(key); continue }
            if t.shape != shape {
                misShaped.append("\(key): model \(shape) vs file \(t.shape)")
            } else if !t.dtype.isFloatingPoint {
                badType.append("\(key): file dtype \(t.dtype), expected a float type")
            }
        }
        let unexpected = strict ? given.keys.filter { !known.contains($0) }.sorted() : []
        if !strict { missing = [] }
        guard !(missing.isEmpty && unexpected.isEmpty && misShaped.isEmpty && badType.isEmpty) else { return }
        var lines = ["\(what) does not match the model: \(missing.count) missing, \(unexpected.count) unexpected, "
            + "\(misShaped.count) mis-shaped, \(badType.count) wrong dtype"]
        for (title, keys) in [("missing", missing), ("unexpected", unexpected), ("mis-shaped", misShaped),
                              ("wrong dtype", badType)] where !keys.isEmpty {
            lines.append("\(title) (\(keys.count)):")
            lines += keys.prefix(listed).map { "  " + $0 }
            if keys.count > listed { lines.append("  … and \(keys.count - listed) more") }
        }
        lines.append("hint: check that the checkpoint was made for this model and size (e.g. --model); "
            + "`haste inspect FILE` lists its keys")
        throw HasteError.stateDict(lines.joined(separator: "\n"))
    }
}
