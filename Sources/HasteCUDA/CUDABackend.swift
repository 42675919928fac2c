#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import HasteTensor

/// The CUDA backend (STYLE §2.5): every `Backend` kernel as CUDA C++ (Kernels/CUDA<Family>.swift), GEMMs
/// through the driver's cuBLAS, memory from a caching allocator, one stream. It runs over any `GPUDriver`:
/// `CUDADriver` on a GPU, the emulator in the tests.
///
/// Kernels cannot throw (the `Backend` protocol is the CPU's); a failure on the device (a launch error, an index
/// out of range seen by a kernel, out of memory) ends the process through `CUDABackend.fail` with a message
/// that says what happened and what to do, never a trap.
public final class CUDABackend: Backend {
    public let name = "cuda"
    public let driver: any GPUDriver
    public let device: Device
    public let allocator: CachingAllocator
    /// Loaded families, by family name (locked: kernels are launched from many threads in the tests).
    private var modules: [String: [String: GPUFunction]] = [:]
    private let modulesMutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    /// A 4-byte device word kernels set to a `DeviceErrorCode` when they find bad input (checked when the host reads).
    public private(set) var errorWord: DevicePointer = 0
    /// The same-bits alternatives chosen by their time on this device (`LaunchTuner`: the flash and row kernels').
    public let launchTuner = LaunchTuner()
    /// A tuner of a test's own task in place of `launchTuner` (its decisions kept from other tests').
    @TaskLocal static var tunerOverride: LaunchTuner?
    var tuner: LaunchTuner { CUDABackend.tunerOverride ?? launchTuner }
    public var tuningDecisions: [String] { tuner.decisions.map(\.description) }

    /// `body(i)` for one of `count` same-bits `candidates`, chosen by the tuner on this device's clock and memory
    /// (`LaunchTuner.run`; the key and candidates are made only where tuning applies).
    func tuned(_ key: @autoclosure () -> String, _ candidates: @autoclosure () -> [LaunchTuner.Candidate], count: Int,
               repeatable: Bool, _ body: (Int) -> Void) {
        tuner.run(key(), candidates(), count: count, repeatable: repeatable, freeBytes: driver.totalMemory - allocator.inUse,
                  timed: driver.timed, body)
    }

    /// Whether no output lies in an input's storage (nil entries are absent operands): a launch sequence that may be
    /// run again with the same result, as the tuner runs its candidates (an in-place op is not).
    static func separate(outputs: [Buffer?], inputs: [Buffer?]) -> Bool {
        let ins = inputs.compactMap { $0?.storage }
        return outputs.compactMap { $0?.storage }.allSatisfy { o in !ins.contains { $0 === o } }
    }

    public init(driver: any GPUDriver, device: Device) {
        self.driver = driver
        self.device = device
        self.allocator = CachingAllocator(driver: driver, device: device)
        if let hostOnly = driver as? HostOnlyDriver {
            hostOnly.handedOut = { [allocator] in allocator.bytesHandedOut }
        }
        self.errorWord = allocator.allocate(byteCount: 4)
        var zero: Int32 = 0
        driver.copy(fromHost: &zero, to: errorWord, byteCount: 4)
    }

    // MARK: addresses and launches

    /// The device address of a buffer's first element.
    @inline(__always) public func address(_ b: Buffer) -> DevicePointer {
        DevicePointer(UInt(bitPattern: b.storage.address)) + DevicePointer(b.offset * b.dtype.byteSize)
    }

    /// The entry point `kernel` of `source`, compiled and loaded on first use.
    public func function(_ source: KernelSource, _ kernel: String) -> GPUFunction {
        pthread_mutex_lock(modulesMutex); defer { pthread_mutex_unlock(modulesMutex) }
        if modules[source.family] == nil {
            do { modules[source.family] = try driver.load(source) } catch {
                CUDABackend.fail("could not compile the \(source.family) kernels for \(driver.deviceDescription): \(error)")
            }
        }
        guard let f = modules[source.family]![kernel] else {
            CUDABackend.fail("internal: kernel \(kernel) is not in the \(source.family) family's list")
        }
        return f
    }

    /// Queues `kernel` of `source`.
    public func launch(_ source: KernelSource, _ kernel: String, grid: Dim3, block: Dim3, sharedBytes: Int = 0,
                       _ arguments: [KernelArgument]) {
        driver.launch(function(source, kernel), grid: grid, block: block, sharedBytes: sharedBytes, arguments: arguments)
    }

    /// Blocks for an elementwise launch over `count` items with `threads` per block: at most 65 535 blocks
    /// (kernels use grid-stride loops), at least 1.
    public static func blocks(_ count: Int, threads: Int = 256) -> Int {
        Swift.max(1, Swift.min((count + threads - 1) / threads, 65_535))
    }

    /// Waits for the device and reports a kernel's bad-input flag or an asynchronous error.
    public func synchronize() {
        do { try driver.synchronize() } catch { CUDABackend.fail("\(device): \(error)") }
        var code: Int32 = 0
        driver.copy(from: errorWord, toHost: &code, byteCount: 4)
        if code != 0 {
            var zero: Int32 = 0
            driver.copy(fromHost: &zero, to: errorWord, byteCount: 4)
            CUDABackend.fail(DeviceErrorCode(rawValue: code)?.message ?? "a kernel reported error code \(code)")
        }
    }

    /// Ends the process with `message` (exit status 1): device failures cannot be thrown through `Backend`.
    public static func fail(_ message: String) -> Never {
        fputs("haste: error: \(message)\n", stderr)
        exit(1)
    }

    /// float32 is what CUDA kernels compute in (float64 is CPU-only, STYLE §2.3).
    @inline(__always) func requireFloat32(_ b: Buffer, _ op: String) {
        if b.dtype != .float32 {
            CUDABackend.fail("\(op) on \(device) computes in float32, got \(b.dtype) (float64 runs on --device cpu only)")
        }
    }

    // MARK: memory (copies; fill, stridedCopy and cast are in Kernels/CUDAMemory.swift)

    public func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: UInt(allocator.allocate(byteCount: byteCount)))!
    }

    public func deallocate(_ address: UnsafeMutableRawPointer, byteCount: Int) {
        allocator.release(DevicePointer(UInt(bitPattern: address)), byteCount: byteCount)
    }

    public func copy(from src: Buffer, to dst: Buffer, byteCount: Int) {
        if byteCount > 0 { driver.copy(from: address(src), to: address(dst), byteCount: byteCount) }
    }

    public func copyFromHost(_ host: UnsafeRawPointer, to dst: Buffer, byteCount: Int) {
        if byteCount > 0 { driver.copy(fromHost: host, to: address(dst), byteCount: byteCount) }
    }

    public func copyToHost(_ src: Buffer, _ host: UnsafeMutableRawPointer, byteCount: Int) {
        synchronize()
        if byteCount > 0 { driver.copy(from: address(src), toHost: host, byteCount: byteCount) }
    }
}

/// What a kernel writes into `CUDABackend.errorWord` when its input is bad (the CPU backend traps instead).
public enum DeviceErrorCode: Int32 {
    case embeddingIndex = 1, indexSelectIndex = 2, crossEntropyTarget = 3

    var message: String {
        switch self {
        case .embeddingIndex: return "embedding: an index is outside [0, rows) (labels beyond --num-classes?)"
        case .indexSelectIndex: return "index_select: an index is outside [0, size)"
        case .crossEntropyTarget: return "cross_entropy: a target class is outside [0, classes)"
        }
    }
}
