#if canImport(Glibc)
import Glibc
#endif

/// How long OpenBLAS's idle workers spin before they sleep (STYLE §4.9).
///
/// After each GEMM an OpenBLAS worker polls for the next one for 2^`OPENBLAS_THREAD_TIMEOUT` cycles (default 2^28,
/// about 0.1 s), calling sched_yield between polls. haste runs its elementwise work on its own pool of as many
/// threads as cores between GEMMs, so those workers keep preempting ours: on 2 cores a SiT training step spent about
/// 20% of its samples in the kernel's scheduler (perf). haste asks for a shorter spin, unless the user set
/// `OPENBLAS_THREAD_TIMEOUT` (4…30) themselves. OpenBLAS reads the variable when it loads, before `main`, so the
/// value is set, OpenBLAS is told to read its environment again (`openblas_read_env`) and its idle pool is shut down
/// (`blas_thread_shutdown_`, what its fork handler does); the next GEMM starts the pool with the new timeout.
/// Both are exported by every OpenBLAS since 0.3.x; looked up at run time, so another BLAS simply keeps its own.
public enum OpenBLASSpin {
    /// 2^exponent cycles (~0.4 ms at 2.6 GHz): long enough to bridge the gap between consecutive GEMMs of a layer,
    /// short enough that workers sleep during elementwise stretches. Not yet tuned by measurement (issue #15): the
    /// float32 GEMMs of AVX-512 CPUs no longer go through OpenBLAS at all (CPUSgemm.swift).
    public static let defaultExponent = 20

    /// The exponent OpenBLAS uses now, or nil when the loaded BLAS has no such query.
    public static var current: Int? {
        guard let f = symbol("openblas_thread_timeout", as: (@convention(c) () -> Int32).self) else { return nil }
        return Int(f())
    }

    /// Applies `exponent` (clamped to OpenBLAS's 4…30) unless OPENBLAS_THREAD_TIMEOUT is set; returns what applies.
    /// Call with no GEMM in flight (start-up): the pool is stopped and restarts on the next call.
    @discardableResult
    public static func configure(exponent: Int = defaultExponent) -> Int? {
        return CPUBackend.withGemmMutex { // BLAS is idle
            let want = min(30, max(4, exponent))
            if getenv("OPENBLAS_THREAD_TIMEOUT") != nil && !configured { return current }   // the user's value
            if configured && current == want { return want }
            guard let read = symbol("openblas_read_env", as: (@convention(c) () -> Void).self),
                  let shutdown = symbol("blas_thread_shutdown_", as: (@convention(c) () -> Int32).self) else { return current }
            setenv("OPENBLAS_THREAD_TIMEOUT", "\(want)", 1)
            configured = true
            read()
            _ = shutdown()
            return current
        }
    }

    /// Whether the user set OPENBLAS_THREAD_TIMEOUT (haste then leaves the spin alone).
    public static var userSet: Bool {
        CPUBackend.withGemmMutex { getenv("OPENBLAS_THREAD_TIMEOUT") != nil && !configured }
    }

    /// Whether OPENBLAS_THREAD_TIMEOUT is haste's (guarded by the GEMM mutex).
    nonisolated(unsafe) private static var configured = false

    private static func symbol<F>(_ name: String, as: F.Type) -> F? {
        guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(p, to: F.self)
    }
}
