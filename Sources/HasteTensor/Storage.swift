/// A buffer owned by a backend. `address` is opaque: a host pointer on CPU, a device pointer elsewhere;
/// only the owning backend's kernels dereference it.
public final class Storage: @unchecked Sendable {
    public let address: UnsafeMutableRawPointer
    public let byteCount: Int
    public let device: Device
    public let backend: any Backend
    /// Keeps foreign memory alive (e.g. a mapped file) when the storage does not own its bytes.
    private let owner: AnyObject?
    /// The `TensorMemory.measure` scope it was allocated in, if any.
    private let scope: TensorMemory.Scope?

    /// Allocates `byteCount` bytes (64-byte aligned on CPU) on `device`.
    public init(byteCount: Int, device: Device) {
        let backend = device.backend
        self.backend = backend
        self.device = device
        self.byteCount = byteCount
        self.address = backend.allocate(byteCount: Swift.max(byteCount, 1))
        self.owner = nil
        self.scope = TensorMemory.scope
        TensorMemory.allocated(byteCount, on: device, scope: scope)
    }

    /// Wraps host memory owned by `owner` (CPU only); nothing is freed on deinit.
    public init(borrowing address: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject) {
        self.backend = CPUBackend.shared
        self.device = .cpu
        self.byteCount = byteCount
        self.address = address
        self.owner = owner
        self.scope = nil
    }

    deinit {
        guard owner == nil else { return }
        backend.deallocate(address, byteCount: Swift.max(byteCount, 1))
        TensorMemory.freed(byteCount, on: device, scope: scope)
    }
}

/// A contiguous run of elements a kernel reads or writes: storage plus element offset.
public struct Buffer {
    public let storage: Storage
    public let offset: Int
    public let dtype: DType

    /// Host pointer to the first element (CPU backend only). `T` must be as wide as the buffer's elements: a
    /// kernel that took a bf16 buffer as `Float` would read and write twice its bytes (past the storage's end: a
    /// heap overrun, found once in the CPU's modulated LayerNorm), so a mismatch stops with the dtypes named, once
    /// per call of a kernel, never per element.
    @inlinable public func pointer<T>(_: T.Type) -> UnsafeMutablePointer<T> {
        require(MemoryLayout<T>.stride == dtype.byteSize,
                "a \(dtype) buffer taken as \(T.self) (\(MemoryLayout<T>.stride)-byte elements, the buffer's are \(dtype.byteSize)): an op handed a kernel a buffer of another dtype than it computes in")
        return storage.address.assumingMemoryBound(to: T.self) + offset
    }
    @inlinable public var rawPointer: UnsafeMutableRawPointer { storage.address + offset * dtype.byteSize }

    /// The same storage, `count` elements further on (one image or head of a batch).
    public func advanced(by count: Int) -> Buffer { Buffer(storage: storage, offset: offset + count, dtype: dtype) }
}
