#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
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
/// Guarded by a lock: tests open devices while other tests create tensors on other threads.
public enum Backends {
    nonisolated(unsafe) private static var table: [Device: any Backend] = [.cpu: CPUBackend.shared]
    nonisolated(unsafe) private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    public static func register(_ backend: any Backend, for device: Device) {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        table[device] = backend
    }

    /// The backend registered for `device`, or nil when that device was not opened.
    public static func registered(_ device: Device) -> (any Backend)? {
        if device == .cpu { return CPUBackend.shared }
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        return table[device]
    }

    public static func backend(for device: Device) -> any Backend {
        guard let b = registered(device) else {
            fatalError("device \(device) was not opened (open it before creating tensors there)")
        }
        return b
    }
}
