#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Ranks of an MPI job (`mpirun -np N haste …`, or `srun` through Open MPI's PMIx support) over
/// MPI_COMM_WORLD, with MPI_THREAD_FUNNELED: only the thread that opened it calls MPI (the data prefetcher and
/// the compute pool never do).
public final class MPICommunicator: Communicator {
    let mpi: MPILibrary
    public let rank: Int, size: Int, localRank: Int, localSize: Int
    /// e.g. "Open MPI v4.1.4".
    public let libraryVersion: String
    private var finished = false

    init(_ mpi: MPILibrary) {
        self.mpi = mpi
        var provided: Int32 = 0
        mpi.check(mpi.initThread(nil, nil, MPILibrary.threadFunneled, &provided), "MPI_Init_thread")
        var r: Int32 = 0, s: Int32 = 0
        mpi.check(mpi.commRank(mpi.commWorld, &r), "MPI_Comm_rank")
        mpi.check(mpi.commSize(mpi.commWorld, &s), "MPI_Comm_size")
        var node: MPILibrary.Handle?
        mpi.check(mpi.commSplitType(mpi.commWorld, MPILibrary.commTypeShared, r, mpi.infoNull, &node), "MPI_Comm_split_type")
        var lr: Int32 = 0, ls: Int32 = 0
        mpi.check(mpi.commRank(node!, &lr), "MPI_Comm_rank")
        mpi.check(mpi.commSize(node!, &ls), "MPI_Comm_size")
        (rank, size, localRank, localSize) = (Int(r), Int(s), Int(lr), Int(ls))
        libraryVersion = mpi.versionString
    }

    /// MPI counts are C ints: larger buffers go in pieces.
    static let maxCount = Int(Int32.max)

    public func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) {
        for start in stride(from: 0, to: count, by: Self.maxCount) {
            let n = Int32(min(Self.maxCount, count - start))
            mpi.check(mpi.allreduce(MPILibrary.inPlace, data + start, n, mpi.float, mpi.sum, mpi.commWorld), "MPI_Allreduce")
        }
    }

    public func allReduceSum(_ values: inout [Double]) {
        let n = Int32(values.count)
        values.withUnsafeMutableBytes { p in
            mpi.check(mpi.allreduce(MPILibrary.inPlace, p.baseAddress!, n, mpi.double, mpi.sum, mpi.commWorld), "MPI_Allreduce")
        }
    }

    public func startAllReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) -> Reduction {
        let pending = Pending(mpi)
        for start in stride(from: 0, to: count, by: Self.maxCount) {
            var request: MPILibrary.Handle?
            let n = Int32(min(Self.maxCount, count - start))
            mpi.check(mpi.iallreduce(MPILibrary.inPlace, data + start, n, mpi.float, mpi.sum, mpi.commWorld, &request), "MPI_Iallreduce")
            pending.requests.append(request)
        }
        return pending
    }

    public func broadcast(_ bytes: inout [UInt8], root: Int) {
        var length = Int64(bytes.count)
        mpi.check(mpi.bcast(&length, 8, mpi.byte, Int32(root), mpi.commWorld), "MPI_Bcast")
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(length)) }
        for start in stride(from: 0, to: bytes.count, by: Self.maxCount) {
            let n = Int32(min(Self.maxCount, bytes.count - start))
            bytes.withUnsafeMutableBytes { p in
                mpi.check(mpi.bcast(p.baseAddress! + start, n, mpi.byte, Int32(root), mpi.commWorld), "MPI_Bcast")
            }
        }
    }

    public func barrier() { mpi.check(mpi.barrier(mpi.commWorld), "MPI_Barrier") }

    public func abort(code: Int32) -> Never {
        _ = mpi.abort(mpi.commWorld, code)
        exit(code)                                   // MPI_Abort does not return; this satisfies Never
    }

    public func finish() {
        guard !finished else { return }
        finished = true
        mpi.check(mpi.finalize(), "MPI_Finalize")
    }

    /// MPI_Request handles of one started sum (one per 2³¹-element piece); MPI_Wait/MPI_Test reset each to
    /// MPI_REQUEST_NULL when it completes.
    final class Pending: Reduction {
        let mpi: MPILibrary
        var requests: [MPILibrary.Handle?] = []
        private var done = false
        init(_ mpi: MPILibrary) { self.mpi = mpi }

        func test() -> Bool {
            if done { return true }
            var all = true
            for i in requests.indices {
                var flag: Int32 = 0
                mpi.check(mpi.test(&requests[i], &flag, nil), "MPI_Test")
                all = all && flag != 0
            }
            done = all
            return all
        }

        func wait() {
            if done { return }
            for i in requests.indices { mpi.check(mpi.wait(&requests[i], nil), "MPI_Wait") }
            done = true
        }
    }
}
