#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import HasteTensor

/// The MPI functions haste uses, resolved once from Open MPI's `libmpi.so.40` at run time (STYLE R14), so haste
/// builds without MPI and a single process runs without it. Open MPI's handles (`MPI_COMM_WORLD`, `MPI_FLOAT`,
/// `MPI_SUM` …) are macros over the addresses of exported globals (`&ompi_mpi_comm_world` …; mpi.h
/// `OMPI_PREDEFINED_GLOBAL`), so `dlsym` of those names yields the handles themselves. Constants below are
/// Open MPI 4.1's mpi.h values (ABI stable across libmpi.so.40).
struct MPILibrary {
    typealias Handle = OpaquePointer
    typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?,
                                           Int32, UnsafeMutablePointer<Int32>) -> Int32
    typealias CommInt = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    typealias SplitType = @convention(c) (Handle, Int32, Int32, Handle, UnsafeMutablePointer<Handle?>) -> Int32
    typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, Handle, Handle, Handle) -> Int32
    typealias Iallreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, Handle, Handle, Handle,
                                           UnsafeMutablePointer<Handle?>) -> Int32
    typealias Wait = @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeMutableRawPointer?) -> Int32
    typealias Test = @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
    typealias Bcast = @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Handle) -> Int32
    typealias Barrier = @convention(c) (Handle) -> Int32
    typealias Abort = @convention(c) (Handle, Int32) -> Int32
    typealias Finalize = @convention(c) () -> Int32
    typealias Version = @convention(c) (UnsafeMutablePointer<CChar>, UnsafeMutablePointer<Int32>) -> Int32

    static let threadFunneled: Int32 = 1            // MPI_THREAD_FUNNELED: MPI calls come from the main thread only
    static let commTypeShared: Int32 = 0            // MPI_COMM_TYPE_SHARED: the ranks sharing this node's memory
    static let inPlace = UnsafeRawPointer(bitPattern: 1)   // MPI_IN_PLACE ((void *) 1)

    let path: String
    let initThread: InitThread, commRank: CommInt, commSize: CommInt, commSplitType: SplitType
    let allreduce: Allreduce, iallreduce: Iallreduce, wait: Wait, test: Test, bcast: Bcast, barrier: Barrier
    let abort: Abort, finalize: Finalize, version: Version
    let commWorld: Handle, float: Handle, double: Handle, byte: Handle, sum: Handle, infoNull: Handle

    /// `HASTE_MPI_LIB` overrides the library (a path, or another soname).
    static var defaultPath: String { getenv("HASTE_MPI_LIB").map { String(cString: $0) } ?? "libmpi.so.40" }

    init(path: String = MPILibrary.defaultPath) throws {
        self.path = path
        // RTLD_GLOBAL: Open MPI's plugins (mca_*.so, loaded by libmpi itself) resolve libmpi's symbols globally.
        guard let lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL) else {
            throw MPILibrary.unavailable(path, String(cString: dlerror()))
        }
        func symbol<F>(_ name: String, as _: F.Type = F.self) throws -> F {
            guard let raw = dlsym(lib, name) else {
                throw MPILibrary.unavailable(path, "missing symbol \(name)")
            }
            return unsafeBitCast(raw, to: F.self)
        }
        func global(_ name: String) throws -> Handle {
            guard let raw = dlsym(lib, name) else {
                throw MPILibrary.unavailable(path, "missing \(name): not Open MPI (haste uses Open MPI's handles)")
            }
            return Handle(raw)
        }
        initThread = try symbol("MPI_Init_thread"); commRank = try symbol("MPI_Comm_rank"); commSize = try symbol("MPI_Comm_size")
        commSplitType = try symbol("MPI_Comm_split_type"); allreduce = try symbol("MPI_Allreduce")
        iallreduce = try symbol("MPI_Iallreduce"); wait = try symbol("MPI_Wait"); test = try symbol("MPI_Test")
        bcast = try symbol("MPI_Bcast"); barrier = try symbol("MPI_Barrier"); abort = try symbol("MPI_Abort")
        finalize = try symbol("MPI_Finalize"); version = try symbol("MPI_Get_library_version")
        commWorld = try global("ompi_mpi_comm_world"); float = try global("ompi_mpi_float"); double = try global("ompi_mpi_double")
        byte = try global("ompi_mpi_byte"); sum = try global("ompi_mpi_op_sum"); infoNull = try global("ompi_mpi_info_null")
    }

    static func unavailable(_ path: String, _ reason: String) -> HasteError {
        .unsupported("this process was started as one rank of several (mpirun/srun), but haste could not load MPI from \(path): "
                     + "\(reason).\nhint: install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev), or point HASTE_MPI_LIB "
                     + "at its libmpi.so.40; run without mpirun/srun for one process")
    }

    /// The library's own version line, e.g. "Open MPI v4.1.4, …".
    var versionString: String {
        var buffer = [CChar](repeating: 0, count: 8192)   // MPI_MAX_LIBRARY_VERSION_STRING is 256 in 4.1
        var length: Int32 = 0
        _ = version(&buffer, &length)
        return String(cString: buffer).split(separator: "\n").first.map(String.init) ?? "unknown"
    }

    /// MPI's default error handler (MPI_ERRORS_ARE_FATAL) already ends the job on a failed call; a non-zero
    /// return can only come from a changed handler, and is equally unrecoverable.
    func check(_ result: Int32, _ call: StaticString) {
        guard result != 0 else { return }
        fatalError("MPI \(call) failed with error \(result)")
    }
}
