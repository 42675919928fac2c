/// Errors from the world (files, configs, missing libraries). Caller bugs trap instead (STYLE R3, R7).
public enum HasteError: Error, CustomStringConvertible, Equatable {
    case fileFormat(path: String, detail: String)
    case fileMissing(path: String, hint: String)
    case config(key: String, detail: String)
    case stateDict(String)
    case unsupported(String)
    case backendUnavailable(library: String, reason: String)

    public var description: String {
        switch self {
        case let .fileFormat(path, detail): return "\(path): \(detail)"
        case let .fileMissing(path, hint): return "\(path): no such file. \(hint)"
        case let .config(key, detail): return "config key '\(key)': \(detail)"
        case let .stateDict(text): return text
        case let .unsupported(text): return text
        case let .backendUnavailable(library, reason):
            return "backend unavailable: could not load \(library) (\(reason)).\n"
                + "hint: install the NVIDIA driver, set HASTE_CUDA_LIB_DIR, or use --device cpu"
        }
    }
}
