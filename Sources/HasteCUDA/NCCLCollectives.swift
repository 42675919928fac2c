import CNCCL
import HasteDistributed
import HasteTensor

/// NCCL's all-reduce over the gradient arena of a CUDA rank (issue #13): rank 0 makes the unique id
/// (ncclGetUniqueId), the host `Communicator` (MPI) broadcasts it, every rank joins with ncclCommInitRank on its
/// own device; each bucket's sum is queued with ncclAllReduce (float32, sum, in place) on haste's one CUDA stream,
/// so it runs after the backward kernels that wrote the bucket and before the clipping and AdamW kernels queued
/// later, with no host copy. `wait()` synchronizes the stream and asks NCCL for an asynchronous error.
///
/// Failure: a call that fails is kept and thrown by `wait()` after ncclCommAbort (which never waits for peers);
/// the thrown error then ends the job through MPI_Abort (`Job.run`), so every rank stops. The end of a job
/// destroys the communicator (ncclCommDestroy).
public final class NCCLCollectives: DeviceCollectives {
    let api: NCCLAPI
    let backend: CUDABackend
    public let ranks: Int, rank: Int
    public let summary: String
    private var comm: NCCLAPI.Comm?
    private var failure: String?

    init(api: NCCLAPI, backend: CUDABackend, comm host: Communicator) throws {
        self.api = api
        self.backend = backend
        (ranks, rank) = (host.size, host.rank)
        var id = NCCLAPI.UniqueID()
        var bytes: [UInt8] = []
        if host.rank == 0 {
            let r = api.getUniqueId(&id)
            guard r == NCCLAPI.success else { throw NCCLCollectives.failed("ncclGetUniqueId", api.describe(r)) }
            bytes = withUnsafeBytes(of: &id) { Array($0) }
        }
        host.broadcast(&bytes, root: 0)
        guard bytes.count == MemoryLayout<NCCLAPI.UniqueID>.size else {
            throw NCCLCollectives.failed("the NCCL unique id broadcast", "rank \(host.rank) received \(bytes.count) bytes, not \(MemoryLayout<NCCLAPI.UniqueID>.size)")
        }
        withUnsafeMutableBytes(of: &id) { $0.copyBytes(from: bytes) }
        backend.driver.makeCurrent()
        var c: NCCLAPI.Comm?
        let r = api.commInitRank(&c, Int32(host.size), id, Int32(host.rank))
        guard r == NCCLAPI.success, let c else {
            throw NCCLCollectives.failed("ncclCommInitRank(\(host.size) ranks, rank \(host.rank), \(backend.device))", api.describe(r))
        }
        comm = c
        summary = "NCCL \(api.version) (\(api.library.path)), \(host.size) rank\(host.size == 1 ? "" : "s")"
    }

    static func failed(_ call: String, _ reason: String) -> CUDAError {
        CUDAError("\(call) failed: \(reason)\nhint: NCCL_DEBUG=WARN prints NCCL's own reason; --dist-backend mpi sums through host memory instead")
    }

    public func queueSum(_ buffer: Buffer, count: Int) {
        guard failure == nil, count > 0 else { return }
        guard let comm else { failure = "ncclAllReduce after the communicator was closed"; return }
        backend.driver.makeCurrent()
        let p = UnsafeMutableRawPointer(bitPattern: UInt(backend.address(buffer)))
        let r = api.allReduce(p, p, count, NCCLAPI.float32, NCCLAPI.sum, comm, backend.driver.streamHandle)
        if r != NCCLAPI.success { failure = "ncclAllReduce(\(count) floats on \(backend.device)): \(api.describe(r))" }
    }

    public func wait() throws {
        if failure == nil {
            do { try backend.driver.synchronize() } catch { failure = "the stream of the gradient sums: \(error)" }
        }
        if failure == nil, let comm {
            var async: Int32 = 0
            let r = api.commGetAsyncError(comm, &async)
            if r != NCCLAPI.success || async != NCCLAPI.success { failure = "ncclCommGetAsyncError: \(api.describe(r != NCCLAPI.success ? r : async))" }
        }
        guard let f = failure else { return }
        close(abort: true)
        throw NCCLCollectives.failed("rank \(rank) of \(ranks): NCCL", f)
    }

    public func close(abort: Bool) {
        guard let c = comm else { return }
        comm = nil
        backend.driver.makeCurrent()
        _ = abort ? api.commAbort(c) : api.commDestroy(c)
    }
}
