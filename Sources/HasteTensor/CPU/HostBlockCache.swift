import CKernels
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// What a `HostBlockCache` holds, in page-rounded bytes, and what it has done. `TensorMemory.hostBlocks` is the
/// CPU backend's; `haste bench train` prints its peak mapped bytes beside the tensor peak and the RSS.
public struct HostBlockStats: Sendable, Equatable {
    /// Blocks handed out and not freed yet; blocks freed and kept for reuse. Mapped = live + cached.
    public var liveBytes = 0, cachedBytes = 0
    /// The most live bytes so far (the cache's budget is this plus its slack), and the most mapped bytes so far.
    public var highestLiveBytes = 0, peakMappedBytes = 0
    /// Requests served from the cache; fresh mappings; cached blocks resized to another size (mremap, no new
    /// pages where it shrinks); cached blocks returned to the system.
    public var hits = 0, maps = 0, remaps = 0, unmaps = 0
    /// The bytes mapped may pass the most live bytes by now (the base slack, or more where it has grown).
    public var slackBytes = 0
    public var mappedBytes: Int { liveBytes + cachedBytes }
    /// Requests that needed a mapping or a resize (each takes page faults for its new pages).
    public var misses: Int { maps + remaps }
}

/// Where a `HostBlockCache` gets its memory: `SystemHostMapper` (anonymous mmap), or a fake in tests.
protocol HostMapper: AnyObject {
    /// `byteCount` (a page multiple) fresh bytes, or nil and the errno.
    func map(_ byteCount: Int) -> (UnsafeMutableRawPointer?, Int32)
    func unmap(_ address: UnsafeMutableRawPointer, _ byteCount: Int)
    /// The block resized from `old` to `new` bytes, its first min(old, new) bytes kept; nil if refused (unchanged).
    func remap(_ address: UnsafeMutableRawPointer, from old: Int, to new: Int) -> UnsafeMutableRawPointer?
}

/// Anonymous private mappings (CKernels/hostmap.c).
final class SystemHostMapper: HostMapper {
    func map(_ byteCount: Int) -> (UnsafeMutableRawPointer?, Int32) {
        var error: Int32 = 0
        let p = haste_map(byteCount, &error)
        return (p, error)
    }

    func unmap(_ address: UnsafeMutableRawPointer, _ byteCount: Int) {
        let error = haste_unmap(address, byteCount)
        if error != 0 { fatalError("haste: munmap of a \(byteCount)-byte host block failed: \(String(cString: strerror(error)))") }
    }

    func remap(_ address: UnsafeMutableRawPointer, from old: Int, to new: Int) -> UnsafeMutableRawPointer? {
        haste_remap(address, old, new)
    }
}

/// A caching allocator for large host blocks (tensor storage of `threshold` bytes and more), behind
/// `CPUBackend.allocate`. Each block is a mapping of its own, rounded to whole pages; a freed block is kept under
/// its size and handed out again for the same size (or for a request at most 1/8 smaller, counted live at its own
/// size), so a training step that repeats the last step's sizes maps nothing and takes no page faults. Unlike
/// blocks on the malloc heap, a block never fragments the memory of others: what is mapped is what is live plus what is cached, and the cache is bounded so that this stays within
/// the most live bytes seen plus the slack. On a miss that would pass the bound, the blocks freed longest ago are
/// returned (munmap) until it fits; the last one is resized to the size asked (mremap) rather than unmapped, so
/// its pages are reused, not faulted again. With `slackGrowth` g the slack starts at `slack` and grows by a
/// request's size whenever a miss asks again for a size the bound made it return (a repeating step whose phases
/// use different sizes, e.g. the teacher's [4112, 3072] blocks and the student's [4096, 1536] ones, would
/// otherwise unmap and fault the same bytes every step: SiT-S/2 bs16 +align, 325 MiB a step), up to
/// max(`slack`, highest live / g): so mapped ≤ highest live + max(`slack`, highest live / g), and a step that
/// never asks back what it evicted keeps the base slack. [torch's CUDACachingAllocator caches by size and frees cached blocks
/// when the device is full; c10's CPU allocator caches nothing (posix_memalign, glibc's heap or mmap).]
/// Deterministic for a given order of calls (eviction by a counter, not a clock); locked, since tensors are freed
/// on any thread. The statistics count bytes as mapped (page-rounded), not as asked.
final class HostBlockCache<Mapper: HostMapper>: @unchecked Sendable {
    let threshold: Int, slack: Int, slackGrowth: Int?, pageSize: Int
    private let mapper: Mapper
    private var stats = HostBlockStats()
    /// Sizes of the blocks the bound made a miss return (unmapped, or resized away from), while `slackGrowth`
    /// is set; cleared past `evictedSizeLimit` distinct sizes.
    private var evictedSizes: Set<Int> = []
    static var evictedSizeLimit: Int { 4096 }
    /// Cached blocks by size, oldest first (a miss evicts the oldest first; a hit takes the newest, still warm).
    private var free: [Int: [(address: UnsafeMutableRawPointer, stamp: UInt64)]] = [:]
    private var freeCount: UInt64 = 0
    /// Blocks handed out for a smaller request than their size (`takeCached`'s close fit), by address: their size.
    private var oversized: [UnsafeMutableRawPointer: Int] = [:]
    private let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// `threshold`: smallest request served (smaller ones belong to malloc); `slack`: bytes the mapping may pass
    /// the most live bytes seen by (at first, with `slackGrowth`: see the type's comment).
    init(mapper: Mapper, threshold: Int, slack: Int, slackGrowth: Int? = nil,
         pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))) {
        precondition(slackGrowth.map { $0 > 0 } ?? true, "slackGrowth must be positive")
        (self.mapper, self.threshold, self.slack, self.slackGrowth, self.pageSize) = (mapper, threshold, slack, slackGrowth, pageSize)
        stats.slackBytes = slack
    }

    var statistics: HostBlockStats { locked { stats } }

    /// Whether a request of `byteCount` bytes comes from (and must be freed to) this cache.
    func serves(_ byteCount: Int) -> Bool { byteCount >= threshold }

    func rounded(_ byteCount: Int) -> Int { (Swift.max(byteCount, 1) + pageSize - 1) / pageSize * pageSize }

    func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer {
        let size = rounded(byteCount)
        return locked {
            let (address, blockSize) = takeCached(size) ?? (mapFresh(size), size)
            if blockSize != size { oversized[address] = blockSize }
            stats.liveBytes += blockSize
            stats.highestLiveBytes = Swift.max(stats.highestLiveBytes, stats.liveBytes)
            stats.peakMappedBytes = Swift.max(stats.peakMappedBytes, stats.mappedBytes)
            return address
        }
    }

    /// `byteCount` as given to `allocate` for this block.
    func deallocate(_ address: UnsafeMutableRawPointer, byteCount: Int) {
        locked {
            let size = oversized.removeValue(forKey: address) ?? rounded(byteCount)
            freeCount += 1
            free[size, default: []].append((address, freeCount))
            stats.liveBytes -= size
            stats.cachedBytes += size
        }
    }

    /// Returns every cached block to the system.
    func emptyCache() { locked { emptyCacheLocked() } }

    /// The message allocation ends the process with when the system has no memory for a block.
    static func failure(bytes: Int, errno error: Int32, stats: HostBlockStats) -> String {
        func mib(_ b: Int) -> String { "\((Double(b) / 1_048_576 * 10).rounded() / 10) MiB" }
        return "haste: out of host memory: could not map \(bytes) bytes (\(mib(bytes))) for tensor storage "
            + "(mmap: \(String(cString: strerror(error)))); tensors held \(mib(stats.liveBytes)), "
            + "at most \(mib(stats.highestLiveBytes)) so far.\n"
            + "hint: use a smaller --batch-size (or --grad-checkpointing), or stop other processes that use memory"
    }

    /// The newest cached block of `size` bytes, else of the smallest cached size up to `size / closeFit` bytes
    /// larger, with its size. A step's sizes often differ by a little from the last step's at the same point (a
    /// [16, 12, 257, 257] logits block for a [4112, 3072] activation's: 0.4%); an exact match only would map those
    /// afresh (SiT-S/2 bs4 +align: 22 misses per step, DINOv2-B forward bs16: 6) and fault their pages again.
    private func takeCached(_ size: Int) -> (UnsafeMutableRawPointer, Int)? {
        var fit = free[size] == nil ? nil : size
        if fit == nil {
            for candidate in free.keys where candidate > size && Self.serves(block: candidate, request: size) && candidate < (fit ?? .max) {
                fit = candidate
            }
        }
        guard let fit, let block = free[fit]?.popLast() else { return nil }
        if free[fit]!.isEmpty { free[fit] = nil }
        stats.cachedBytes -= fit
        stats.hits += 1
        return (block.address, fit)
    }

    /// A cached block serves a request down to 1/closeFit smaller than itself (at most 12.5% of it idle).
    static var closeFit: Int { 8 }

    /// Whether a block of `block` bytes may serve a request of `request` (page-rounded) bytes.
    static func serves(block: Int, request: Int) -> Bool { block >= request && block <= request + request / closeFit }

    /// A miss: evicts the oldest cached blocks while mapping `size` more would pass the budget, the last of them
    /// resized to `size`; else maps. If the system refuses, it empties the cache and tries once more.
    private func mapFresh(_ size: Int) -> UnsafeMutableRawPointer {
        if let growth = slackGrowth, evictedSizes.contains(where: { Self.serves(block: $0, request: size) }) {
            let ceiling = Swift.max(slack, Swift.max(stats.highestLiveBytes, stats.liveBytes + size) / growth)
            stats.slackBytes = Swift.max(stats.slackBytes, Swift.min(ceiling, stats.slackBytes + size))
        }
        let budget = Swift.max(stats.highestLiveBytes, stats.liveBytes + size) + stats.slackBytes
        while stats.mappedBytes + size > budget, let victim = popOldest() {
            noteEvicted(victim.size)
            if stats.mappedBytes + size <= budget, let p = mapper.remap(victim.address, from: victim.size, to: size) {
                stats.remaps += 1
                return p
            }
            mapper.unmap(victim.address, victim.size)
            stats.unmaps += 1
        }
        var (p, error) = mapper.map(size)
        if p == nil {
            emptyCacheLocked()
            (p, error) = mapper.map(size)
        }
        guard let p else { fatalError(Self.failure(bytes: size, errno: error, stats: stats)) }
        stats.maps += 1
        return p
    }

    private func noteEvicted(_ size: Int) {
        guard slackGrowth != nil else { return }
        if evictedSizes.count >= Self.evictedSizeLimit { evictedSizes.removeAll() }
        evictedSizes.insert(size)
    }

    /// Removes the block freed longest ago from the cache (stamps are unique: the same choice in any
    /// dictionary order).
    private func popOldest() -> (address: UnsafeMutableRawPointer, size: Int)? {
        guard let size = free.min(by: { $0.value[0].stamp < $1.value[0].stamp })?.key else { return nil }
        let block = free[size]!.removeFirst()
        if free[size]!.isEmpty { free[size] = nil }
        stats.cachedBytes -= size
        return (block.address, size)
    }

    private func emptyCacheLocked() {
        while let block = popOldest() {
            mapper.unmap(block.address, block.size)
            stats.unmaps += 1
        }
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}
