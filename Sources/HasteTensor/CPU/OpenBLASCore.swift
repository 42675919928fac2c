import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Which OpenBLAS kernel set runs the GEMMs (STYLE §4.9, issue #15).
///
/// Debian's OpenBLAS (DYNAMIC_ARCH) picks its kernels from the CPU's family when it loads. 0.3.21 knows AVX-512 only
/// on Intel: on AMD Zen 4/5 it picks its Haswell (AVX2) kernels although the CPU has AVX-512, and Zen 5 executes
/// 512-bit FMAs at full width. On such a CPU the SkylakeX kernels run sgemm up to ~1.8× faster (`haste doctor`'s
/// measured peak: 60 → 111 GFLOP/s on a 2-core Zen 5 VM), and PyTorch's oneDNN GEMMs already use AVX-512 there.
/// So when OpenBLAS chose Haswell or Zen kernels and /proc/cpuinfo lists every AVX-512 subset the SkylakeX kernels
/// use (F, CD, BW, DQ, VL), haste switches OpenBLAS to them once, at start-up, before any GEMM: it sets
/// `OPENBLAS_CORETYPE=SkylakeX` and re-runs OpenBLAS's own core selection (`gotoblas_dynamic_quit` then
/// `gotoblas_dynamic_init`, both exported by DYNAMIC_ARCH builds), exactly as if the variable had been set before
/// the process started. A user's `OPENBLAS_CORETYPE` is left alone, and so is a CPU without those flags (AVX2-only
/// parts keep Haswell): the choice is made at run time, never at build time.
public enum OpenBLASCore {
    /// The AVX-512 subsets OpenBLAS's SkylakeX kernels are built for.
    public static let skylakeXFlags = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]

    /// What `configure()` did: the core OpenBLAS uses now and why.
    public struct Choice: Sendable, Equatable {
        /// The core OpenBLAS chose when it loaded, and the one it uses now.
        public let before: String, core: String
        public let reason: String
    }

    /// Whether haste should move OpenBLAS from `core` to SkylakeX on a CPU with `flags`, given the user's
    /// OPENBLAS_CORETYPE (nil: unset). Pure, for tests.
    public static func shouldSwitch(core: String, flags: Set<String>, userCoreType: String?) -> Bool {
        guard userCoreType == nil else { return false }
        let avx2Kernels = ["haswell", "zen"].contains(core.lowercased())
        return avx2Kernels && skylakeXFlags.allSatisfy(flags.contains)
    }

    /// Runs once per process (the first CPU backend use); later calls return the same choice.
    @discardableResult
    public static func configure() -> Choice { choice }

    private static let choice: Choice = {
        let before = corename()
        let user = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        if let user { return Choice(before: before, core: before, reason: "OPENBLAS_CORETYPE=\(user) (the user's)") }
        guard shouldSwitch(core: before, flags: CPUInfo.current().flags, userCoreType: nil) else {
            return Choice(before: before, core: before, reason: "OpenBLAS's own choice")
        }
        guard let quit = symbol("gotoblas_dynamic_quit"), let initialize = symbol("gotoblas_dynamic_init") else {
            return Choice(before: before, core: before, reason: "OpenBLAS's own choice (this OpenBLAS cannot change its kernels at run time)")
        }
        pthread_mutex_lock(CPUBackend.gemmMutex); defer { pthread_mutex_unlock(CPUBackend.gemmMutex) }
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1)
        quit()
        initialize()
        unsetenv("OPENBLAS_CORETYPE")               // child processes make their own choice, as this one did
        let after = corename()
        return Choice(before: before, core: after, reason: "switched from \(before): the CPU has AVX-512 (\(skylakeXFlags.joined(separator: ", "))) that OpenBLAS 0.3.21 does not use on this vendor")
    }()

    private static func corename() -> String {
        openblas_get_corename().map { String(cString: $0) } ?? "?"
    }

    private static func symbol(_ name: String) -> (@convention(c) () -> Void)? {
        guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(p, to: (@convention(c) () -> Void).self)
    }
}
