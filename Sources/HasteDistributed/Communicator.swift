#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The collective operations a data-parallel run needs (issue #13): every rank holds the whole model, computes
/// its share of each global batch and sums gradients with the others. CPU ranks talk through MPI
/// (`MPICommunicator`); one process uses `SingleProcess`; an NCCL communicator for CUDA ranks plugs in here.
/// Calls are collective: every rank makes the same calls in the same order, from the thread that opened it.
public protocol Communicator: AnyObject {
    /// This process's index in 0..<size; rank 0 is the one writer (checkpoints, logs, samples).
    var rank: Int { get }
    var size: Int { get }
    /// Index among the ranks on this machine (picks `cuda:localRank`), and their count (shares the cores).
    var localRank: Int { get }
    var localSize: Int { get }
    /// data[0..<count] = the sum of every rank's data[0..<count], in place; returns when done.
    func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int)
    /// The same over float64 scalars (loss terms).
    func allReduceSum(_ values: inout [Double])
    /// Starts an in-place sum that completes while this rank computes; the buffer must not be touched until
    /// the returned reduction's `wait()`.
    func startAllReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) -> Reduction
    /// Replaces `bytes` on every rank with root's (the length too).
    func broadcast(_ bytes: inout [UInt8], root: Int)
    func barrier()
    /// Ends every process of the job now with `code` (MPI_Abort): a failing rank must not leave the others
    /// waiting in a collective. The caller prints the reason first.
    func abort(code: Int32) -> Never
    /// Leaves the job cleanly (MPI_Finalize); the last call on a communicator.
    func finish()
}

/// A sum in flight.
public protocol Reduction: AnyObject {
    /// Lets the library progress the transfer; true once it is complete.
    func test() -> Bool
    func wait()
}

extension Communicator {
    public var isWriter: Bool { rank == 0 }

    /// Samples start..<end of a global batch of `count` that this rank computes: contiguous blocks in rank
    /// order whose sizes differ by at most one (the first `count % size` ranks take one more).
    public func share(of count: Int) -> Range<Int> {
        let base = count / size, extra = count % size
        let start = rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }

    /// Root's string on every rank.
    public func broadcast(_ text: String, root: Int = 0) -> String {
        var bytes = Array(text.utf8)
        broadcast(&bytes, root: root)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The whole job in one process: collectives are identities.
public final class SingleProcess: Communicator {
    public let rank = 0, size = 1, localRank = 0, localSize = 1
    public init() {}
    public func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) {}
    public func allReduceSum(_ values: inout [Double]) {}
    public func startAllReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) -> Reduction { Done() }
    public func broadcast(_ bytes: inout [UInt8], root: Int) {}
    public func barrier() {}
    /// Alone, stopping everything is exiting.
    public func abort(code: Int32) -> Never { exit(code) }
    public func finish() {}

    final class Done: Reduction {
        func test() -> Bool { true }
        func wait() {}
    }
}
