#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import HasteTensor

/// `HASTE_CUDA_HOST_ONLY=1`: `--device cuda` over a driver that queues nothing, to time haste's own host-side
/// work on the CUDA path (the autograd graph, kernel arguments, launches, GEMM calls, the caching allocator)
/// without a GPU, and to count what a step launches. Device memory is address space only (1 TiB, never backed);
/// reads from the "device" return zeros, so every result is meaningless: a diagnostic for `haste bench train
/// --device cuda`, never for training. On a GPU, a step whose host-only time approaches its real time is
/// launch-bound (the GPU waits for the host), and fewer launches (fusion, CUDA graphs) is what helps.
public final class HostOnlyDriver: GPUDriver, LaunchStatistics {
    public let deviceDescription = "host only (HASTE_CUDA_HOST_ONLY=1: nothing runs on a GPU, results are meaningless)"
    public let computeCapability = 90
    public let maxSharedBytes: Int
    public let totalMemory = 1 << 40
    /// As the device was opened (`CUDA.open(index:allowTF32:)`): which float32 attention kernel runs.
    public var allowTF32 = false
    private var next: DevicePointer = 1 << 44
    /// Launches per kernel name and GEMMs per (dtypes, m×n×k, batch), since the last `resetCounts()`.
    public private(set) var launches: [String: Int] = [:]
    public private(set) var gemms: [String: Int] = [:]
    /// Bytes of tensors made per kernel name or GEMM label: the caching allocator's bytes handed out since the
    /// previous launch or GEMM, charged to the next one (the outputs it writes, as a rule: a tensor is made right
    /// before the kernel that fills it), since the last `resetCounts()`.
    public private(set) var madeBytes: [String: Int] = [:]
    /// Host → device and device → host copies and their bytes, since the last `resetCounts()`. A device → host copy
    /// waits for the stream on a GPU; a host → device copy only where `asynchronousUploads` is false.
    public private(set) var uploads = (count: 0, bytes: 0), downloads = (count: 0, bytes: 0)
    /// As the GPU's `CUDADriver` would copy host → device: through pinned staging, without waiting for the stream
    /// (`HASTE_CUDA_STAGING_MB` not 0, Runtime/PinnedUploads.swift), or waiting for it.
    public let asynchronousUploads: Bool
    /// The allocator's running count of bytes handed out (`CachingAllocator.bytesHandedOut`), set by the backend.
    var handedOut: (() -> Int)?
    private var lastHandedOut = 0
    /// Each kernel's last launch configuration (grid, dynamic shared bytes), for tests of the host's choices.
    public private(set) var lastLaunch: [String: (grid: Dim3, sharedBytes: Int)] = [:]
    /// Handles of the "loaded" kernels, one per name (never freed: a process loads a few hundred).
    private var handles: [String: UnsafeMutableRawPointer] = [:]
    private let lock = NSLock()

    /// `HASTE_HOST_ONLY_TRACE=FILE`: every launch and GEMM in order, one line each (its kernel name or GEMM label, a
    /// tab, the tensor bytes charged to it as in `madeBytes`), host ↔ device copies as "upload N" / "download N" and
    /// each `resetCounts()` as "# reset" (a benchmark's warm-up ends there): which op sequence makes a step's bytes.
    private let trace: UnsafeMutablePointer<FILE>?

    /// `maxSharedBytes`: a block's shared-memory limit the host's choices see (sm_90's 227 KiB; a test may ask less).
    /// `tracePath`: the launch trace's file (written anew; nil: none; one that cannot be opened is reported on stderr
    /// and skipped).
    public init(maxSharedBytes: Int = 227 * 1024, asynchronousUploads: Bool = true,
                tracePath: String? = ProcessInfo.processInfo.environment["HASTE_HOST_ONLY_TRACE"]) {
        (self.maxSharedBytes, self.asynchronousUploads) = (maxSharedBytes, asynchronousUploads)
        trace = tracePath.flatMap { path in
            guard let f = fopen(path, "w") else {
                fputs("haste: HASTE_HOST_ONLY_TRACE=\(path): cannot write it (\(String(cString: strerror(errno)))); no launch trace\n", stderr)
                return nil
            }
            setvbuf(f, nil, _IOLBF, 1 << 16)               // whole lines reach the file as they are written
            return f
        }
    }

    deinit { if let trace { fclose(trace) } }

    /// A line of the launch trace (with the lock held).
    private func traced(_ line: @autoclosure () -> String) {
        guard let trace else { return }
        fputs(line() + "\n", trace)
    }

    public func allocate(byteCount: Int) -> DevicePointer? {
        lock.lock(); defer { lock.unlock() }
        let size = DevicePointer((byteCount + 511) & ~511)
        guard next + size <= (1 << 44) + DevicePointer(totalMemory) else { return nil }
        defer { next += size }
        return next
    }

    public func free(_ address: DevicePointer) {}
    public func copy(fromHost host: UnsafeRawPointer, to dst: DevicePointer, byteCount: Int) {
        lock.lock(); defer { lock.unlock() }
        uploads.count += 1; uploads.bytes += byteCount
        traced("upload\t\(byteCount)")
        if !asynchronousUploads { waitedAt = waitedAt ?? clock.now }
    }
    public func copy(from src: DevicePointer, toHost host: UnsafeMutableRawPointer, byteCount: Int) {
        host.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        lock.lock(); defer { lock.unlock() }
        downloads.count += 1; downloads.bytes += byteCount
        traced("download\t\(byteCount)")
        waitedAt = waitedAt ?? clock.now
    }

    /// Host time from a copy that waits for the stream on a GPU (the GPU then has nothing queued) to the next launch
    /// or GEMM, since the last `resetCounts()`: the GPU's idle time those waits cause, as far as the host makes it.
    public private(set) var idleAfterWaits = (count: 0, seconds: 0.0)
    private var waitedAt: ContinuousClock.Instant?
    private let clock = ContinuousClock()

    /// Called with the lock held at each launch or GEMM: ends the idle stretch a copy began.
    private func queued() {
        guard let start = waitedAt else { return }
        idleAfterWaits.count += 1
        idleAfterWaits.seconds += (clock.now - start).seconds
        waitedAt = nil
    }
    public func copy(from src: DevicePointer, to dst: DevicePointer, byteCount: Int) {}

    public func load(_ source: KernelSource) throws -> [String: GPUFunction] {
        lock.lock(); defer { lock.unlock() }
        var out: [String: GPUFunction] = [:]
        for name in source.kernels {
            let h = handles[name] ?? UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
            handles[name] = h
            out[name] = GPUFunction(name: name, handle: h)
        }
        return out
    }

    public func launch(_ function: GPUFunction, grid: Dim3, block: Dim3, sharedBytes: Int, arguments: [KernelArgument]) {
        lock.lock(); defer { lock.unlock() }
        launches[function.name, default: 0] += 1
        lastLaunch[function.name] = (grid, sharedBytes)
        queued()
        chargeMadeBytes(function.name)
    }

    public func gemm(_ g: GemmDescriptor) {
        lock.lock(); defer { lock.unlock() }
        gemms[g.label, default: 0] += 1
        queued()
        chargeMadeBytes("GEMM " + g.label)
    }

    /// Counted as the GEMM it is ("… +bias", "… +dgelu+bgrad"), as cuBLASLt would run it.
    public func gemm(_ g: GemmDescriptor, epilogue: GemmEpilogue) -> Bool {
        lock.lock(); defer { lock.unlock() }
        gemms[g.label + " " + epilogue.label, default: 0] += 1
        queued()
        chargeMadeBytes("GEMM " + g.label + " " + epilogue.label)
        return true
    }

    private func chargeMadeBytes(_ name: String) {
        guard let handedOut else { traced("\(name)\t0"); return }
        let now = handedOut()
        traced("\(name)\t\(now - lastHandedOut)")
        madeBytes[name, default: 0] += now - lastHandedOut
        lastHandedOut = now
    }

    public func synchronize() throws {}

    public var isCounting: Bool { true }
    public var launchTotal: Int { lock.lock(); defer { lock.unlock() }; return launches.values.reduce(0, +) }
    public var gemmTotal: Int { lock.lock(); defer { lock.unlock() }; return gemms.values.reduce(0, +) }

    public func resetCounts() {
        lock.lock(); defer { lock.unlock() }
        launches = [:]; gemms = [:]; madeBytes = [:]
        traced("# reset")
        (uploads, downloads, idleAfterWaits, waitedAt) = ((0, 0), (0, 0), (0, 0), nil)
        lastHandedOut = handedOut?() ?? 0
    }

    /// The counts since `resetCounts()` divided by `steps`: totals, then the most frequent kernels, GEMM shapes and
    /// tensor makers (then the host ↔ device copies), 25 of each or `HASTE_HOST_ONLY_TOP` (a diagnostic: the whole list when counting where a step's
    /// launches go).
    public func report(steps: Int) -> String {
        let top = Int(ProcessInfo.processInfo.environment["HASTE_HOST_ONLY_TOP"] ?? "") ?? 25
        lock.lock(); defer { lock.unlock() }
        let s = Double(Swift.max(steps, 1))
        func lines(_ d: [String: Int]) -> [String] {
            d.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(top)
                .map { "  \(String(format: "%8.1f", Double($0.value) / s))  \($0.key)" }
        }
        let k = launches.values.reduce(0, +), g = gemms.values.reduce(0, +)
        let made = madeBytes.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(top)
            .map { "  \(String(format: "%8.2f", Double($0.value) / s / 1e9))  \($0.key)" }
        return (["per step: \(String(format: "%.1f", Double(k) / s)) kernel launches (\(launches.count) kernels), "
                 + "\(String(format: "%.1f", Double(g) / s)) GEMMs (\(gemms.count) shapes); the most frequent kernels:"]
                + lines(launches) + ["the most frequent GEMMs (cuBLAS column-major m×n×k):"] + lines(gemms)
                + (made.isEmpty ? [] : ["GB of tensors made per step, charged to the kernel or GEMM launched next:"] + made)
                + [String(format: "copies per step: %.1f host → device (%.3f MB, ", Double(uploads.count) / s, Double(uploads.bytes) / s / 1e6)
                   + (asynchronousUploads ? "not waited for: pinned staging" : "each waited for")
                   + String(format: "), %.1f device → host (%.3f MB); the host's time from the waits to its next launch (the GPU idle): "
                            + "%.3f ms in %.1f stretches", Double(downloads.count) / s, Double(downloads.bytes) / s / 1e6,
                          idleAfterWaits.seconds / s * 1e3, Double(idleAfterWaits.count) / s)])
            .joined(separator: "\n")
    }
}
