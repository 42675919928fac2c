import Dispatch
import Foundation
import Testing
import CKernels
@testable import HasteTensor

/// The host block cache's policy (issue 15, item 2) on a fake mapper that hands out fake addresses and logs what
/// it is asked: reuse by size, the bound on mapped bytes, eviction order, recycling by resize, determinism, the
/// failure path; then the real mapper under threads.
@Suite struct HostBlockCacheTests {
    static let page = 4096

    /// Addresses are never dereferenced by the policy: distinct fake ones, with what is mapped now tracked.
    final class FakeMapper: HostMapper {
        var log: [String] = []
        var mapped: [Int: Int] = [:]          // address → bytes
        var next = 1 << 30
        var refuseMaps = 0, refuseRemaps = false

        func map(_ byteCount: Int) -> (UnsafeMutableRawPointer?, Int32) {
            if refuseMaps > 0 {
                refuseMaps -= 1
                log.append("refused \(byteCount)")
                return (nil, ENOMEM)
            }
            log.append("map \(byteCount)")
            next += byteCount + HostBlockCacheTests.page
            mapped[next] = byteCount
            return (UnsafeMutableRawPointer(bitPattern: next)!, 0)
        }

        func unmap(_ address: UnsafeMutableRawPointer, _ byteCount: Int) {
            log.append("unmap \(byteCount)")
            #expect(mapped.removeValue(forKey: Int(bitPattern: address)) == byteCount, "unmapped what was not mapped")
        }

        func remap(_ address: UnsafeMutableRawPointer, from old: Int, to new: Int) -> UnsafeMutableRawPointer? {
            if refuseRemaps { log.append("remap refused"); return nil }
            log.append("remap \(old)->\(new)")
            #expect(mapped[Int(bitPattern: address)] == old)
            mapped[Int(bitPattern: address)] = new
            return address
        }

        var mappedBytes: Int { mapped.values.reduce(0, +) }
    }

    static func cache(slack: Int = 0, growth: Int? = nil) -> (HostBlockCache<FakeMapper>, FakeMapper) {
        let mapper = FakeMapper()
        return (HostBlockCache(mapper: mapper, threshold: page, slack: slack, slackGrowth: growth, pageSize: page), mapper)
    }

    @Test func sameSizeBlocksAreReusedWithoutMapping() {
        let (cache, mapper) = Self.cache()
        #expect(!cache.serves(4095) && cache.serves(4096))
        let a = cache.allocate(5000)                                    // 2 pages
        cache.deallocate(a, byteCount: 5000)
        let b = cache.allocate(8000)                                    // also 2 pages: the same block
        #expect(b == a && mapper.log == ["map 8192"])
        let s = cache.statistics
        #expect(s.hits == 1 && s.maps == 1 && s.liveBytes == 8192 && s.cachedBytes == 0 && s.peakMappedBytes == 8192)
        cache.deallocate(b, byteCount: 8000)
        #expect(cache.statistics.cachedBytes == 8192 && cache.statistics.liveBytes == 0)
    }

    /// A request with no cached block of its size takes the smallest cached block at most 1/8 larger (no mapping),
    /// counted live at the block's size and cached again at it when freed; a block more than 1/8 larger is not taken.
    @Test func aCloseLargerCachedBlockServesASmallerRequest() {
        let (cache, mapper) = Self.cache(slack: 64 * Self.page)
        let big = cache.allocate(18 * Self.page), mid = cache.allocate(16 * Self.page)
        cache.deallocate(big, byteCount: 18 * Self.page)
        cache.deallocate(mid, byteCount: 16 * Self.page)
        let p = cache.allocate(15 * Self.page)                        // 16 ≤ 15 + 15/8 pages; 18 is not the smallest fit
        #expect(p == mid && mapper.log == ["map 73728", "map 65536"])
        #expect(cache.statistics.liveBytes == 16 * Self.page && cache.statistics.cachedBytes == 18 * Self.page)
        cache.deallocate(p, byteCount: 15 * Self.page)
        #expect(cache.statistics.liveBytes == 0 && cache.statistics.cachedBytes == 34 * Self.page)
        #expect(cache.allocate(16 * Self.page) == mid)                 // cached again under its own size
        let q = cache.allocate(12 * Self.page)                        // 18 > 12 + 12/8 pages: mapped
        #expect(q != big && mapper.log.last == "map 49152")
        #expect(cache.statistics.hits == 2 && cache.statistics.maps == 3)
    }

    /// Freed B, then A, then C; a 4-page miss with no slack may map only what the highest live bytes (6 pages)
    /// allow: B and A (oldest first) go, C is resized to 4 pages instead of unmapped and mapped again.
    @Test func evictionTakesTheOldestFreedFirstAndRecyclesTheLast() {
        let (cache, mapper) = Self.cache()
        let a = cache.allocate(1 * Self.page), b = cache.allocate(2 * Self.page), c = cache.allocate(3 * Self.page)
        cache.deallocate(b, byteCount: 2 * Self.page)
        cache.deallocate(a, byteCount: 1 * Self.page)
        cache.deallocate(c, byteCount: 3 * Self.page)
        let d = cache.allocate(4 * Self.page)
        #expect(d == c)
        #expect(mapper.log == ["map 4096", "map 8192", "map 12288", "unmap 8192", "unmap 4096", "remap 12288->16384"])
        let s = cache.statistics
        #expect(s.unmaps == 2 && s.remaps == 1 && s.misses == 4 && s.mappedBytes == 4 * Self.page && s.highestLiveBytes == 6 * Self.page)
        #expect(mapper.mappedBytes == s.mappedBytes)
    }

    @Test func aRefusedResizeUnmapsAndMaps() {
        let (cache, mapper) = Self.cache()
        let a = cache.allocate(2 * Self.page)
        cache.deallocate(a, byteCount: 2 * Self.page)
        mapper.refuseRemaps = true
        _ = cache.allocate(3 * Self.page)                               // budget 3 pages: the cached 2 must go
        #expect(mapper.log == ["map 8192", "remap refused", "unmap 8192", "map 12288"])
        #expect(cache.statistics.mappedBytes == 3 * Self.page && mapper.mappedBytes == 3 * Self.page)
    }

    /// When the system refuses a mapping, the cache is returned and the mapping tried once more.
    @Test func aRefusedMapEmptiesTheCacheAndRetries() {
        let (cache, mapper) = Self.cache(slack: 100 * Self.page)
        let a = cache.allocate(Self.page), b = cache.allocate(2 * Self.page)
        cache.deallocate(a, byteCount: Self.page)
        cache.deallocate(b, byteCount: 2 * Self.page)
        mapper.refuseMaps = 1
        _ = cache.allocate(5 * Self.page)
        #expect(mapper.log == ["map 4096", "map 8192", "refused 20480", "unmap 4096", "unmap 8192", "map 20480"])
        #expect(cache.statistics.cachedBytes == 0 && mapper.mappedBytes == 5 * Self.page)
    }

    @Test func theOutOfMemoryMessageNamesTheBytesAndWhatToDo() {
        var stats = HostBlockStats()
        (stats.liveBytes, stats.highestLiveBytes) = (3 << 30, 5 << 30)
        let text = HostBlockCache<FakeMapper>.failure(bytes: 1_234_567_168, errno: ENOMEM, stats: stats)
        #expect(text.contains("could not map 1234567168 bytes (1177.4 MiB)"), "\(text)")
        #expect(text.contains("tensors held 3072.0 MiB, at most 5120.0 MiB") && text.contains("hint: use a smaller --batch-size"), "\(text)")
        #expect(text.contains(String(cString: strerror(ENOMEM))), "\(text)")
    }

    /// A seeded script of allocations and frees of mixed sizes: after every call the mapped bytes (as the mapper
    /// sees them too) stay within the highest live bytes plus the slack, and the live bytes within what the held
    /// requests round to plus the close-fit allowance; the same script gives the same calls.
    @Test func mappedBytesStayWithinTheLivePeakPlusSlackAndRunsRepeat() {
        func run(slack: Int, growth: Int? = nil) -> ([String], HostBlockStats) {
            let (cache, mapper) = Self.cache(slack: slack, growth: growth)
            var rng = SplitMix64(seed: 11)
            var held: [(UnsafeMutableRawPointer, Int)] = []
            for _ in 0..<2000 {
                if held.count < 3 || (held.count < 40 && rng.next() % 2 == 0) {
                    let bytes = Self.page * (1 + rng.below(24)) - rng.below(100)
                    held.append((cache.allocate(bytes), bytes))
                } else {
                    let (p, bytes) = held.remove(at: rng.below(held.count))
                    cache.deallocate(p, byteCount: bytes)
                }
                let s = cache.statistics
                #expect(s.mappedBytes <= s.highestLiveBytes + s.slackBytes && s.mappedBytes == mapper.mappedBytes)
                #expect(s.slackBytes == slack || (growth.map { s.slackBytes > slack && s.slackBytes <= Swift.max(slack, s.highestLiveBytes / $0) } ?? false))
                // Each held block is its request rounded to pages, or a cached block at most 1/8 larger.
                let asked = held.map { cache.rounded($0.1) }
                #expect(s.liveBytes >= asked.reduce(0, +) && s.liveBytes <= asked.reduce(0) { $0 + $1 + $1 / 8 })
            }
            return (mapper.log, cache.statistics)
        }
        for slack in [0, 8 * Self.page, 1 << 20] {
            let first = run(slack: slack), second = run(slack: slack)
            #expect(first.0 == second.0 && first.1 == second.1, "slack \(slack): the same script made different calls")
            #expect(first.1.hits > 0 && first.1.misses > 0)
            if slack == 0 { #expect(first.1.unmaps > 0 && first.1.remaps > 0) }
        }
        // The slack free to grow (to half the live peak): the same bound with the grown slack, the same calls on a
        // second run, and fewer misses than at the fixed slack it starts from.
        let fixed = run(slack: 8 * Self.page), grown = run(slack: 8 * Self.page, growth: 2), again = run(slack: 8 * Self.page, growth: 2)
        #expect(grown.0 == again.0 && grown.1 == again.1)
        #expect(grown.1.slackBytes > 8 * Self.page && grown.1.misses < fixed.1.misses, "\(grown.1) vs \(fixed.1)")
    }

    /// A repeated "step" (the same sizes allocated and freed in the same order, 26 pages live at most): with a
    /// slack of 8 pages every block it needs stays cached and the steps after the first make no call at all; with
    /// 4 pages the cache cannot hold them all, and the later steps resize cached blocks (faulting only what grows)
    /// but map none; with none they map again: the bound wins over reuse.
    @Test func aRepeatedStepMapsNothingNewWhenTheSlackHoldsItsSizes() {
        let sizes = [3, 7, 7, 2, 9, 1, 4].map { $0 * Self.page }
        func steps(slack: Int) -> (first: [String], later: [String], highest: Int) {
            let (cache, mapper) = Self.cache(slack: slack * Self.page)
            func step() {
                var held: [(UnsafeMutableRawPointer, Int)] = []
                for (i, s) in sizes.enumerated() {
                    held.append((cache.allocate(s), s))
                    if i % 3 == 2 { let (p, b) = held.removeFirst(); cache.deallocate(p, byteCount: b) }
                }
                for (p, b) in held.reversed() { cache.deallocate(p, byteCount: b) }
            }
            step()
            let first = mapper.log
            step(); step()
            return (first, Array(mapper.log.dropFirst(first.count)), cache.statistics.highestLiveBytes / Self.page)
        }
        let roomy = steps(slack: 8), tight = steps(slack: 4), none = steps(slack: 0)
        #expect(roomy.highest == 26 && roomy.first.count == 7 && roomy.later.isEmpty, "\(roomy)")
        #expect(!tight.later.isEmpty && tight.later.allSatisfy { $0.hasPrefix("remap ") }, "\(tight)")
        #expect(none.later.contains { $0.hasPrefix("map ") }, "\(none)")
    }

    /// A step in two phases of different sizes (three 10-page blocks live, then four 6-page ones: 30 pages live at
    /// most, no size close enough to serve the other): with a fixed slack of 2 pages every step returns blocks of
    /// one phase to map the other's again; with the slack free to grow (by what is asked back after an eviction, up
    /// to highest live / 1) the later steps make no call at all, within the highest live bytes plus the grown slack;
    /// capped at highest live / 4 (7 pages) it grows to the cap and no further.
    @Test func aStepThatAsksBackWhatItEvictedGrowsTheSlackUntilItMapsNothing() {
        let page = Self.page
        func steps(growth: Int?) -> (later: [String], stats: HostBlockStats) {
            let (cache, mapper) = Self.cache(slack: 2 * page, growth: growth)
            func phase(_ pages: Int, _ count: Int) {
                let held = (0..<count).map { _ in cache.allocate(pages * page) }
                for p in held { cache.deallocate(p, byteCount: pages * page) }
                let s = cache.statistics
                #expect(s.mappedBytes == mapper.mappedBytes && s.mappedBytes <= s.highestLiveBytes + s.slackBytes)
            }
            for _ in 0..<4 { phase(10, 3); phase(6, 4) }
            let settled = mapper.log.count
            for _ in 0..<3 { phase(10, 3); phase(6, 4) }
            return (Array(mapper.log.dropFirst(settled)), cache.statistics)
        }
        let fixed = steps(growth: nil), grown = steps(growth: 1), capped = steps(growth: 4)
        #expect(fixed.stats.slackBytes == 2 * page && fixed.later.contains { $0.hasPrefix("map ") || $0.hasPrefix("remap ") }, "\(fixed.later)")
        #expect(grown.later.isEmpty, "\(grown.later)")
        #expect(grown.stats.slackBytes > 2 * page && grown.stats.slackBytes <= grown.stats.highestLiveBytes, "\(grown.stats)")
        #expect(grown.stats.highestLiveBytes == 30 * page && grown.stats.mappedBytes <= 30 * page + grown.stats.slackBytes)
        #expect(capped.stats.slackBytes == 30 * page / 4, "\(capped.stats)")
        #expect(!capped.later.isEmpty)
    }

    /// A step whose sizes the base slack already holds never grows it (`aRepeatedStepMapsNothingNewWhenTheSlackHoldsItsSizes`'s
    /// roomy case, with growth allowed).
    @Test func aStepThatEvictsNothingKeepsTheBaseSlack() {
        let (cache, mapper) = Self.cache(slack: 8 * Self.page, growth: 1)
        for _ in 0..<3 {
            var held: [(UnsafeMutableRawPointer, Int)] = []
            for (i, s) in [3, 7, 7, 2, 9, 1, 4].map({ $0 * Self.page }).enumerated() {
                held.append((cache.allocate(s), s))
                if i % 3 == 2 { let (p, b) = held.removeFirst(); cache.deallocate(p, byteCount: b) }
            }
            for (p, b) in held.reversed() { cache.deallocate(p, byteCount: b) }
        }
        #expect(mapper.log.count == 7 && cache.statistics.slackBytes == 8 * Self.page, "\(mapper.log)")
    }

    /// Real mappings, 8 threads allocating, writing, checking and freeing (frees from other threads than the
    /// allocating one too): no block is handed out twice, the counts add up, and the cache empties.
    @Test func concurrentAllocationsAndFreesOfRealMappings() {
        let cache = HostBlockCache(mapper: SystemHostMapper(), threshold: Self.page, slack: 1 << 20, pageSize: Self.page)
        let threads = 8, rounds = 200
        final class Handoff: @unchecked Sendable {
            let lock = NSLock()
            var blocks: [(UnsafeMutableRawPointer, Int, UInt8)] = []
            var overwritten = 0
        }
        let handoff = Handoff()
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            var rng = SplitMix64(seed: UInt64(t + 1))
            for r in 0..<rounds {
                let bytes = Self.page * (1 + rng.below(16)), tag = UInt8(truncatingIfNeeded: t * rounds + r)
                let p = cache.allocate(bytes)
                p.initializeMemory(as: UInt8.self, repeating: tag, count: bytes)
                handoff.lock.lock()
                handoff.blocks.append((p, bytes, tag))
                let take: (UnsafeMutableRawPointer, Int, UInt8)? = handoff.blocks.count > 6 ? handoff.blocks.remove(at: rng.below(handoff.blocks.count)) : nil
                handoff.lock.unlock()
                if let take {
                    let (q, n, expected) = take
                    if !UnsafeRawBufferPointer(start: q, count: n).allSatisfy({ $0 == expected }) {   // #expect off the test's thread is not reported
                        handoff.lock.lock(); handoff.overwritten += 1; handoff.lock.unlock()
                    }
                    cache.deallocate(q, byteCount: n)
                }
            }
        }
        #expect(handoff.overwritten == 0, "blocks were overwritten while held")
        for (p, n, _) in handoff.blocks { cache.deallocate(p, byteCount: n) }
        let s = cache.statistics
        #expect(s.liveBytes == 0 && s.hits + s.misses == threads * rounds && s.mappedBytes <= s.highestLiveBytes + (1 << 20))
        cache.emptyCache()
        #expect(cache.statistics.mappedBytes == 0 && cache.statistics.cachedBytes == 0)
    }

    /// The CPU backend's blocks: a 1 MiB tensor comes from the cache (page-aligned, counted live while held).
    @Test func largeTensorsComeFromTheCache() {
        let held = Tensor.zeros([1 << 18])
        #expect(Int(bitPattern: held.storage.address) % Self.page == 0)
        #expect(TensorMemory.hostBlocks.liveBytes >= 1 << 20)
        _ = held.sum().item()
    }

    /// The real mapper: a block of a huge page and more starts on a huge-page boundary and is advised MADV_HUGEPAGE
    /// (smaps' VmFlags "hg"), a smaller one is a plain mapping, and a small block grown past a huge page by remap gets
    /// the advice. Skipped on a kernel without transparent huge pages.
    @Test func largeBlocksAreHugePageAlignedAndAdvised() throws {
        let huge = Int(haste_huge_page_size())
        guard huge > 0 else { return }
        let mapper = SystemHostMapper()
        /// The VmFlags of the mapping holding `address`, from /proc/self/smaps.
        func flags(_ address: UnsafeMutableRawPointer) throws -> [Substring] {
            let file = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))   // st_size 0: read to the end
            let text = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
            file.closeFile()
            let a = UInt(bitPattern: Int(bitPattern: address))
            var inside = false
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                    let ends = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                    inside = ends.count == 2 && ends[0] <= a && a < ends[1]
                } else if inside && line.hasPrefix("VmFlags:") {
                    return Array(fields.dropFirst())
                }
            }
            Issue.record("no mapping holds \(address)")
            return []
        }
        let bigBytes = 2 * huge + 5 * Self.page, smallBytes = 4 * Self.page
        let (big, e1) = mapper.map(bigBytes), (small, e2) = mapper.map(smallBytes)
        let b = try #require(big, "mmap: \(e1)"), s = try #require(small, "mmap: \(e2)")
        b.initializeMemory(as: UInt8.self, repeating: 1, count: bigBytes)
        #expect(Int(bitPattern: b) % huge == 0, "a block of \(bigBytes) bytes at \(b): not on a \(huge)-byte boundary")
        #expect(try flags(b).contains("hg"), "a block of \(bigBytes) bytes is not advised MADV_HUGEPAGE")
        #expect(try !flags(s).contains("hg"), "a block of \(smallBytes) bytes is advised MADV_HUGEPAGE")
        let grown = try #require(mapper.remap(s, from: smallBytes, to: 2 * huge))
        #expect(try flags(grown).contains("hg"), "a block grown to \(2 * huge) bytes is not advised MADV_HUGEPAGE")
        #expect(UnsafeRawBufferPointer(start: b, count: bigBytes).allSatisfy { $0 == 1 })
        mapper.unmap(b, bigBytes)
        mapper.unmap(grown, 2 * huge)
    }
}
