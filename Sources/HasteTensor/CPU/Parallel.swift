import CKernels

/// Lets a pointer into a parallel loop's closure (Parallel.forEach / chunks); sound because chunks are disjoint.
public struct SendablePointer<T>: @unchecked Sendable {
    public let base: UnsafeMutablePointer<T>
    @inlinable public init(_ base: UnsafeMutablePointer<T>) { self.base = base }
}

/// Thread policy for CPU kernels (STYLE R13, §4.9): work is split into fixed-size chunks, never by thread
/// count, so results are bitwise identical whatever `threads` is. `threads == 1` runs every chunk inline.
public enum Parallel {
    nonisolated(unsafe) public static var threads: Int = 2
    /// Elements per chunk for memory-bound loops.
    public static let defaultChunk = 1 << 15

    /// Calls `body` over fixed chunks of 0..<count, concurrently when there is more than one chunk.
    public static func chunks(_ count: Int, chunk: Int = defaultChunk, _ body: (Range<Int>) -> Void) {
        let n = (count + chunk - 1) / chunk
        if n <= 1 { body(0..<count); return }
        if threads <= 1 {
            for i in 0..<n { body(i * chunk ..< min(count, (i + 1) * chunk)) }
            return
        }
        forEach(n) { i in body(i * chunk ..< min(count, (i + 1) * chunk)) }
    }

    /// Calls `body(i)` for i in 0..<count in parallel (independent rows/items of coarse work), on the calling thread
    /// and at most `threads - 1` workers of haste's pool (CKernels/pool.c); calls may nest.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) { forEach(count, threads: threads, body) }

    /// `forEach` on at most `threads` threads (the caller's included), whatever `Parallel.threads` says.
    public static func forEach(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        if count <= 1 || threads <= 1 { for i in 0..<count { body(i) }; return }
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { p in
                haste_pool_run(count, Int32(clamping: threads), { ctx, i in
                    ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(i)
                }, p)
            }
        }
    }
}
