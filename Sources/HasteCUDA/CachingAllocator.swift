#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import HasteTensor

/// A size-keyed caching allocator in front of the driver's allocations (STYLE §2.5 [tinygrad LRUAllocator, MLX]):
/// freed blocks wait in a free list keyed by their rounded size and are handed out again, so a training step
/// allocates nothing from the driver once warm. Out of memory, it returns every cached block to the driver and
/// retries once; then it ends the process with what was asked, what haste holds, and a hint.
/// Locked: tensors are created and freed on any thread (the test suites share one device).
public final class CachingAllocator {
    let driver: any GPUDriver
    let device: Device
    /// Cached (free) blocks by rounded byte size.
    private var free: [Int: [DevicePointer]] = [:]
    /// Blocks handed out for a smaller request (`fit`), by address: their own size, to cache them under on release.
    private var handedLarger: [DevicePointer: Int] = [:]
    /// A request of at least 1 MiB that finds no cached block of its rounded size takes the smallest cached block of
    /// at most `fit` times its size before asking the driver (1: exact sizes only): fewer bytes held for blocks of sizes
    /// no later request asks for exactly. SiT-XL/2 bf16 +align at batch 256 on the host-only device (2026-12-06):
    /// 134 339 MiB held with exact sizes, 128 175 with 1.5 (the default), for a peak of 119 218 MiB in use either way
    /// (before the fused alignment loss: 140 499 exact, 137 667 with 1.25, 134 335 with 1.5, 134 191 with 2); plain
    /// rows within 0.5%; 0 driver allocations per warm step in each case.
    public let fit: Double
    /// Bytes handed out and not yet released; bytes held from the driver (in use + cached); the peak in use.
    public private(set) var inUse = 0, held = 0, peakInUse = 0
    /// Driver allocations so far (a warm step adds none).
    public private(set) var driverAllocations = 0
    /// Bytes handed out so far, cached blocks included (rounded sizes): tensors and kernels' scratch (partial sums),
    /// each written at least once and read at least once, so twice this per step bounds its memory traffic from below.
    public private(set) var bytesHandedOut = 0

    private let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// `fit`: see the property; `HASTE_ALLOC_FIT` (a number ≥ 1) sets the default.
    init(driver: any GPUDriver, device: Device, fit: Double = CachingAllocator.defaultFit) {
        (self.driver, self.device, self.fit) = (driver, device, fit)
    }

    static let defaultFit: Double = {
        guard let v = getenv("HASTE_ALLOC_FIT"), let f = Double(String(cString: v)), f >= 1 else { return 1.5 }
        return f
    }()

    /// Sizes round up to 512 bytes below 1 MiB and to 2 MiB above, so similar requests share blocks.
    public static func rounded(_ byteCount: Int) -> Int {
        let n = Swift.max(byteCount, 1)
        if n < 1 << 20 { return (n + 511) & ~511 }
        return (n + (2 << 20) - 1) & ~((2 << 20) - 1)
    }

    public func allocate(byteCount: Int) -> DevicePointer {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        let size = CachingAllocator.rounded(byteCount)
        bytesHandedOut += size
        if var list = free[size], let p = list.popLast() {
            free[size] = list
            inUse += size; peakInUse = Swift.max(peakInUse, inUse)
            return p
        }
        // No block of this size: the smallest cached one up to `fit` times larger, whole (its size stays its own).
        if size >= 1 << 20, fit > 1 {
            var best: Int?
            for (k, list) in free where k > size && !list.isEmpty && Double(k) <= Double(size) * fit && k < (best ?? .max) { best = k }
            if let k = best, let p = free[k]!.popLast() {
                handedLarger[p] = k
                inUse += k; peakInUse = Swift.max(peakInUse, inUse)
                return p
            }
        }
        var p = driver.allocate(byteCount: size)
        if p == nil {
            emptyCacheLocked()
            p = driver.allocate(byteCount: size)
        }
        guard let address = p else {
            let mib = { (b: Int) in "\((Double(b) / 1_048_576 * 10).rounded() / 10) MiB" }
            CUDABackend.fail("out of memory on \(device) (\(driver.deviceDescription)): asked for \(mib(size)), "
                             + "haste holds \(mib(held)) (\(mib(inUse)) in use) of \(mib(driver.totalMemory)).\n"
                             + "hint: use a smaller --batch-size, or free the GPU from other processes (nvidia-smi)")
        }
        driverAllocations += 1
        held += size; inUse += size; peakInUse = Swift.max(peakInUse, inUse)
        return address
    }

    public func release(_ address: DevicePointer, byteCount: Int) {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        let size = handedLarger.removeValue(forKey: address) ?? CachingAllocator.rounded(byteCount)
        inUse -= size
        free[size, default: []].append(address)
    }

    /// Starts a new peak at the bytes in use now (torch `reset_peak_memory_stats`; `haste bench train` per row).
    public func resetPeak() {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        peakInUse = inUse
    }

    /// Returns every cached block to the driver.
    public func emptyCache() {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        emptyCacheLocked()
    }

    private func emptyCacheLocked() {
        for (size, list) in free {
            for p in list { driver.free(p); held -= size }
        }
        free.removeAll()
    }
}
