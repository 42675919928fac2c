#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import CNCCL
import Foundation
import HasteDistributed
import HasteTensor

/// The NCCL functions haste calls, resolved by name from `libnccl.so.2` at run time (STYLE §2.5; nccl.h
/// signatures: `ncclResult_t` a C enum (Int32), `ncclComm_t` an opaque pointer, `ncclUniqueId` a 128-byte struct
/// passed by value (declared by CNCCL), `cudaStream_t` the driver's `CUstream`, `size_t` Int). Found by the
/// same search as the other CUDA libraries: HASTE_CUDA_LIB_DIR, LD_LIBRARY_PATH, Python environments'
/// nvidia/nccl/lib (PyTorch's CUDA wheels bring it), the CUDA toolkit, the system loader.
struct NCCLAPI {
    typealias Comm = OpaquePointer
    typealias UniqueID = haste_nccl_unique_id

    static let success: Int32 = 0
    static let float32: Int32 = 7                  // ncclFloat32
    static let sum: Int32 = 0                      // ncclSum

    let library: CUDALibrarySearch.Loaded
    let getVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let getUniqueId: @convention(c) (UnsafeMutablePointer<UniqueID>) -> Int32
    /// (comm, nranks, id, rank)
    let commInitRank: @convention(c) (UnsafeMutablePointer<Comm?>, Int32, UniqueID, Int32) -> Int32
    /// (sendbuff, recvbuff, count, datatype, op, comm, stream)
    let allReduce: @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int, Int32, Int32, Comm?, OpaquePointer?) -> Int32
    let commGetAsyncError: @convention(c) (Comm?, UnsafeMutablePointer<Int32>) -> Int32
    let commAbort: @convention(c) (Comm?) -> Int32
    let commDestroy: @convention(c) (Comm?) -> Int32
    let getErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// The first `libnccl.so.2` of `search`; throws `CUDALibraryKind.nccl`'s errors (where haste looked, the fix).
    static func load(search: CUDALibrarySearch) throws -> NCCLAPI {
        switch search.load(CUDALibraryKind.nccl.names()) {
        case .success(let lib): return try NCCLAPI(lib)
        case .failure(let miss): throw NCCLNotFound(error: CUDALibraryKind.nccl.unavailable(miss), miss: miss)
        }
    }

    init(_ lib: CUDALibrarySearch.Loaded) throws {
        library = lib
        let k = CUDALibraryKind.nccl
        getVersion = try lib.symbol("ncclGetVersion", k); getUniqueId = try lib.symbol("ncclGetUniqueId", k)
        commInitRank = try lib.symbol("ncclCommInitRank", k); allReduce = try lib.symbol("ncclAllReduce", k)
        commGetAsyncError = try lib.symbol("ncclCommGetAsyncError", k); commAbort = try lib.symbol("ncclCommAbort", k)
        commDestroy = try lib.symbol("ncclCommDestroy", k); getErrorString = try lib.symbol("ncclGetErrorString", k)
    }

    /// "2.21.5" from ncclGetVersion's 22105 (NCCL_VERSION_CODE: major·10000 + minor·100 + patch since 2.9).
    var version: String {
        var v: Int32 = 0
        guard getVersion(&v) == NCCLAPI.success else { return "unknown" }
        return v >= 10000 ? "\(v / 10000).\((v % 10000) / 100).\(v % 100)" : "\(v / 1000).\((v % 1000) / 100).\(v % 100)"
    }

    /// "unhandled cuda error (run with NCCL_DEBUG=INFO for details) (1)".
    func describe(_ r: Int32) -> String {
        (getErrorString(r).map { String(cString: $0) } ?? "ncclResult_t") + " (\(r))"
    }
}

/// `libnccl.so.2` is not there (as opposed to there but unusable): `--dist-backend auto` then sums through host memory.
public struct NCCLNotFound: Error, CustomStringConvertible {
    let error: HasteError
    let miss: LibraryNotFound
    public var description: String { "\(error)" }
}

/// How GPU ranks sum gradients (`--dist-backend`).
public enum DistributedBackend: String, CaseIterable, Sendable {
    /// NCCL on CUDA ranks when every rank finds libnccl.so.2, else MPI through host memory (said once); MPI on the CPU.
    case auto
    /// NCCL, or an error; also for one process (a 1-rank communicator: the whole NCCL path, nothing to sum).
    case nccl
    /// MPI through a host mirror of the gradients (the CPU path), never NCCL.
    case mpi
}

/// Opening NCCL for a job (`NCCLCollectives`), and `haste doctor`'s line.
public enum NCCL {
    /// NCCL for this job's gradient sums on `device`, or nil where gradients go through MPI (the CPU, `.mpi`, one
    /// process under `.auto`, or `.auto` with NCCL missing on some rank: rank 0 then `note`s it once). Collective:
    /// every rank calls it. Throws for `.nccl` off CUDA or without NCCL, and when NCCL is found but fails.
    public static func collectives(_ mode: DistributedBackend, comm: Communicator, device: Device,
                                   environment: [String: String] = ProcessInfo.processInfo.environment,
                                   note: (String) -> Void) throws -> DeviceCollectives? {
        guard case .cuda = device, let backend = Backends.registered(device) as? CUDABackend else {
            if mode == .nccl {
                throw HasteError.unsupported("--dist-backend nccl sums gradients on GPUs: it needs --device cuda (CPU ranks sum with MPI; drop the flag)")
            }
            return nil
        }
        switch mode {
        case .mpi: return nil
        case .nccl: return try NCCLCollectives(api: NCCLAPI.load(search: .standard(environment: environment)), backend: backend, comm: comm)
        case .auto:
            guard comm.size > 1 else { return nil }
            let api = Result { try NCCLAPI.load(search: .standard(environment: environment)) }
            // Every rank must take the same path: one without NCCL would wait in MPI while the others wait in NCCL.
            var missing = [0.0]
            if case .failure = api { missing[0] = 1 }
            comm.allReduceSum(&missing)
            guard missing[0] == 0 else {
                if comm.isWriter {
                    let why: String
                    if case .failure(let e) = api, let nf = e as? NCCLNotFound { why = "libnccl.so.2 not found (\(nf.miss.considered.joined(separator: "; ")))" }
                    else if case .failure(let e) = api { why = "\(e)" } else { why = "libnccl.so.2 missing on \(Int(missing[0])) of \(comm.size) ranks" }
                    note("NCCL is not available: \(why). GPU ranks sum gradients through host memory with MPI instead (slower).\n"
                         + "hint: \(CUDALibraryKind.nccl.fix); --dist-backend mpi chooses MPI without this note")
                }
                return nil
            }
            return try NCCLCollectives(api: api.get(), backend: backend, comm: comm)
        }
    }

    /// `haste doctor`'s NCCL line: where libnccl.so.2 was found and its version, or what is missing and the fix.
    public static func probe(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        do {
            let api = try NCCLAPI.load(search: .standard(environment: environment))
            return "nccl: \(api.library.path) (\(api.library.origin)), NCCL \(api.version); GPU ranks sum gradients with it"
        } catch let nf as NCCLNotFound {
            return CUDA.missing(.nccl, nf.miss) + "; without it GPU ranks sum through host memory with MPI"
        } catch {
            return "nccl: unusable — \(error)"
        }
    }
}
