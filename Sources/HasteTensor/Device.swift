/// Where a tensor's storage lives. The CPU backend is always present; others register at run time.
public enum Device: Hashable, Sendable, CustomStringConvertible {
    case cpu
    case cuda(Int)

    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case let .cuda(i): return "cuda:\(i)"
        }
    }

    /// The backend that owns this device's memory and kernels.
    public var backend: any Backend { Backends.backend(for: self) }
}

/// Registry of opened backends. `register` is called once by a backend's `open`, before any tensor exists there.
public enum Backends {
    nonisolated(unsafe) private static var table: [Device: any Backend] = [.cpu: CPUBackend.shared]

    public static func register(_ backend: any Backend, for device: Device) { table[device] = backend }

    public static func backend(for device: Device) -> any Backend {
        guard let b = table[device] else {
            fatalError("device \(device) was not opened (open it before creating tensors there)")
        }
        return b
    }
}
