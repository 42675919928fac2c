import Foundation
import Testing
@testable import HasteTensor

/// haste's pool (CKernels/pool.c behind Parallel.forEach): every index runs exactly once, whatever the thread count,
/// nesting or number of concurrent callers; no more threads than asked run tasks at once; nothing hangs.
@Suite struct ParallelTests {
    /// Counts per index, written with atomic-free disjoint slots (each index owns its slot).
    final class Hits: @unchecked Sendable {
        let p: UnsafeMutablePointer<Int>, n: Int
        init(_ n: Int) { self.n = n; p = .allocate(capacity: n); p.initialize(repeating: 0, count: n) }
        deinit { p.deallocate() }
        var all: [Int] { Array(UnsafeBufferPointer(start: p, count: n)) }
    }

    /// Highest number of tasks seen running at once.
    final class Occupancy: @unchecked Sendable {
        private let lock = NSLock()
        private var now = 0
        private(set) var most = 0
        func enter() { lock.lock(); now += 1; most = max(most, now); lock.unlock() }
        func leave() { lock.lock(); now -= 1; lock.unlock() }
    }

    @Test(arguments: [2, 3, 8])
    func everyIndexRunsOnce(threads: Int) {
        for count in [2, 3, 7, 64, 1000] {
            let hits = Hits(count)
            Parallel.forEach(count, threads: threads) { hits.p[$0] += 1 }
            #expect(hits.all == Array(repeating: 1, count: count), "count \(count), threads \(threads)")
        }
    }

    @Test func manyQuickCallsInARow() {
        let hits = Hits(4)
        for _ in 0..<20_000 { Parallel.forEach(4, threads: 2) { hits.p[$0] += 1 } }
        #expect(hits.all == Array(repeating: 20_000, count: 4))
    }

    @Test func nestedJobsRunEveryInnerIndexOnce() {
        let outer = 6, inner = 40
        let hits = Hits(outer * inner)
        Parallel.forEach(outer, threads: 4) { i in
            Parallel.forEach(inner, threads: 4) { j in
                hits.p[i * inner + j] += 1
                usleep(50)
            }
        }
        #expect(hits.all == Array(repeating: 1, count: outer * inner))
    }

    /// A job's own tasks never run on more threads than it was given (other callers' jobs may use other workers).
    @Test func neverMoreThreadsThanAsked() {
        Parallel.forEach(16, threads: 8) { _ in usleep(100) }       // seven workers exist, more than this job may use
        let occupancy = Occupancy()
        let hits = Hits(48)
        Parallel.forEach(48, threads: 3) { i in
            occupancy.enter(); defer { occupancy.leave() }
            hits.p[i] += 1
            usleep(200)
        }
        #expect(hits.all == Array(repeating: 1, count: 48))
        #expect(occupancy.most <= 3)
    }

    /// Several threads outside the pool post jobs at once (a data loader beside the training loop).
    @Test func concurrentCallersEachGetTheirWholeJob() {
        let callers = 4, rounds = 300, count = 16
        let hits = (0..<callers).map { _ in Hits(count) }
        DispatchQueue.concurrentPerform(iterations: callers) { c in
            for _ in 0..<rounds { Parallel.forEach(count, threads: 2) { hits[c].p[$0] += 1 } }
        }
        for c in 0..<callers { #expect(hits[c].all == Array(repeating: rounds, count: count), "caller \(c)") }
    }

    /// chunks covers 0..<count with the fixed chunk size, each element once.
    @Test func chunksCoverTheRangeOnce() {
        let count = 5 * Parallel.defaultChunk + 17
        let hits = Hits(count)
        Parallel.chunks(count) { r in for i in r { hits.p[i] += 1 } }
        #expect(hits.all.allSatisfy { $0 == 1 })
    }
}
