import Foundation
import HasteTensor

extension TrainConfig {
    /// Reads `file` (YAML or JSON; optional), then applies `overrides` (flag or `--set` pairs) in order.
    /// Unknown keys and ill-typed values are errors naming the key; missing keys keep the reference default.
    /// Relative input paths (`configRelativeKeys`) are made absolute unless `resolvePaths` is
    /// false (a config stored in a checkpoint, which keeps what it was trained with).
    public static func load(file: String?, overrides: [(key: String, value: String)] = [], resolvePaths: Bool = true) throws -> TrainConfig {
        var dict = try TrainConfig().jsonDictionary()
        let types = TrainConfig.typedDefaults()
        if let file {
            let fileDict = try ConfigFile.mapping(at: file)
            for (key, value) in fileDict.sorted(by: { $0.key < $1.key }) {
                try checkKnown(key, in: dict, source: file)
                dict[key] = try coerce(value, like: types[key]!, key: key)
                if resolvePaths, let path = dict[key] as? String {
                    dict[key] = resolve(path, key: key, against: URL(fileURLWithPath: file).deletingLastPathComponent().path)
                }
            }
        }
        for (key, value) in overrides {
            try checkKnown(key, in: dict, source: "--set")
            dict[key] = try parse(value, like: types[key]!, key: key)
        }
        if resolvePaths {                          // flags: the working directory; built-in defaults stay as they are
            let cwd = FileManager.default.currentDirectoryPath
            for key in configRelativeKeys { if let path = dict[key] as? String { dict[key] = resolve(path, key: key, against: cwd) } }
        }
        // Every value went through `parse`, so numbers are finite and JSON can carry them.
        let config: TrainConfig
        do {
            let data = try JSONSerialization.data(withJSONObject: dict)
            config = try JSONDecoder().decode(TrainConfig.self, from: data)
        } catch let error as DecodingError {
            throw HasteError.config(key: error.key, detail: "invalid value (\(error))")
        }
        try config.validate()
        return config
    }

    /// Input files and folders named in a config file; a relative one means relative to the config file's folder
    /// (so a config works from any working directory). `output-dir` is not among them: like the reference's
    /// `--output-dir exps`, runs go under the working directory. Flags and `--set` are relative to the working
    /// directory. Both are made absolute, so the run's config.yaml means the same thing wherever it is read.
    public static let configRelativeKeys: Set<String> = ["data-dir", "enc-weights", "vae-weights", "fid-ref", "fid-weights",
                                                          "text-encoder", "tokenizer-vocab"]

    /// The built-in values of `configRelativeKeys`: they name defaults, not places (`fid-weights`' is searched for by
    /// `InceptionWeightsFile.resolve`, `data-dir`'s means Fashion-MNIST's folder for that dataset), so never resolved.
    static let builtInPaths: [String: String] = {
        let d = TrainConfig()
        return ["data-dir": d.dataDir, "enc-weights": d.encWeights, "vae-weights": d.vaeWeights, "fid-ref": d.fidRef, "fid-weights": d.fidWeights,
                "text-encoder": d.textEncoder, "tokenizer-vocab": d.tokenizerVocab]
    }()

    /// `value` of `key` made absolute against `folder` when it is a relative path of a `configRelativeKeys` key.
    /// Left alone: "" and other built-in values (`builtInPaths`) and `name:split` specs (`fashion-mnist:t10k`).
    static func resolve(_ value: String, key: String, against folder: String) -> String {
        guard configRelativeKeys.contains(key), !value.isEmpty, !value.hasPrefix("/"), !value.hasPrefix("~"),
              !(value.contains(":") && !value.contains("/")), value != TrainConfig.builtInPaths[key] else { return value }
        return URL(fileURLWithPath: folder, isDirectory: true).appendingPathComponent(value).standardizedFileURL.path
    }

    /// Default values with their Swift types, by config key (JSON numbers lose the Int/Double distinction).
    static func typedDefaults(of config: TrainConfig = TrainConfig()) -> [String: Any] {
        var out: [String: Any] = [:]
        for child in Mirror(reflecting: config).children {
            guard let label = child.label else { continue }
            out[kebab(label)] = child.value                          // property names map to keys by this rule
        }
        require(Set(out.keys) == Set(CodingKeys.allCases.map(\.stringValue)),
                     "TrainConfig: CodingKeys out of step with properties: \(Set(out.keys).symmetricDifference(CodingKeys.allCases.map(\.stringValue)))")
        return out
    }

    /// expName → exp-name, adamBeta1 → adam-beta1.
    static func kebab(_ name: String) -> String {
        name.reduce(into: "") { out, ch in
            if ch.isUppercase { out += "-" + ch.lowercased() } else { out.append(ch) }
        }
    }

    func jsonDictionary() throws -> [String: Any] {
        let data = try JSONEncoder().encode(self)
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The resolved config as YAML, keys sorted (written to the run directory and into checkpoints).
    public func yaml() throws -> String {
        let dict = TrainConfig.typedDefaults(of: self)
        return dict.keys.sorted().map { key in "\(key): \(TrainConfig.render(dict[key]!))" }.joined(separator: "\n") + "\n"
    }

    static func render(_ v: Any) -> String {
        if let b = v as? Bool { return b ? "true" : "false" }
        if let a = v as? [Int] { return "[" + a.map(String.init).joined(separator: ", ") + "]" }
        if let e = v as? any RawRepresentable { return "\(e.rawValue)" }
        if let s = v as? String {
            // Quote what YAML would read as something else (`no` is a boolean in YAML 1.1, `1e-4` a number).
            let special = ["yes", "no", "true", "false", "on", "off", "null", "~", ""].contains(s.lowercased())
                || Double(s) != nil || s.contains(where: { ":#[]{},&*!|>'\"%@`".contains($0) })
            return special ? "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\"" : s
        }
        return "\(v)"
    }

    static func checkKnown(_ key: String, in dict: [String: Any], source: String) throws {
        guard dict[key] == nil else { return }
        let close = dict.keys.filter { $0.hasPrefix(String(key.prefix(4))) || key.contains($0) || $0.contains(key) }.sorted()
        let hint = close.isEmpty ? "run `haste train --help` for the list" : "did you mean \(close.prefix(3).joined(separator: ", "))?"
        throw HasteError.config(key: key, detail: "unknown key (in \(source)); \(hint)")
    }

    /// A YAML value converted to the type of the default `like`.
    static func coerce(_ value: Any, like: Any, key: String) throws -> Any {
        if let s = value as? String { return try parse(s, like: like, key: key) }
        if like is String, let b = value as? Bool { return b ? "yes" : "no" }   // YAML 1.1 reads `no` as false
        if like is [Int] {
            guard let a = value as? [Any] else { throw HasteError.config(key: key, detail: "expected a list like [4, 5, 6, 7]") }
            return try a.map { try parse("\($0)", like: 0, key: key) }
        }
        return try parse("\(value)", like: like, key: key)
    }

    /// A flag string converted to the type of the default `like`.
    static func parse(_ s: String, like: Any, key: String) throws -> Any {
        func bad(_ what: String) -> HasteError { .config(key: key, detail: "'\(s)' is not \(what)") }
        switch like {
        case is Bool:
            switch s.lowercased() {
            case "true", "1", "yes": return true
            case "false", "0", "no": return false
            default: throw bad("a boolean (true/false)")
            }
        case is Int:
            if let i = Int(s) { return i }
            if let d = Double(s), d == d.rounded(), Swift.abs(d) < 1e15 { return Int(d) }   // 2.5e6 style
            throw bad("an integer")
        case is Double:
            guard let d = Double(s) else { throw bad("a number") }
            guard d.isFinite else { throw bad("a finite number") }              // NaN/Inf: no range admits them
            return d
        case is [Int]:
            let items = s.trimmingCharacters(in: CharacterSet(charactersIn: "[] ")).split(separator: ",")
            return try items.map { item -> Int in
                guard let i = Int(item.trimmingCharacters(in: .whitespaces)) else { throw bad("a comma-separated list of integers") }
                return i
            }
        case let e as any CaseIterable & RawRepresentable:
            let choices = (type(of: e).allCases as any Collection).map { "\(($0 as! any RawRepresentable).rawValue)" }
            guard choices.contains(s) else { throw bad("one of \(choices.joined(separator: ", "))") }
            return s
        default:
            return s
        }
    }
}

extension DecodingError {
    /// The config key a decoding error is about.
    var key: String {
        let context: Context
        switch self {
        case let .dataCorrupted(c), let .typeMismatch(_, c), let .valueNotFound(_, c), let .keyNotFound(_, c): context = c
        @unknown default: return "?"
        }
        return context.codingPath.map(\.stringValue).joined(separator: ".")
    }
}
