import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Which CKernels variant this CPU runs (STYLE §4.11: chosen at run time): 2 AVX-512F, 1 AVX2+FMA, 0 none (the
/// portable Swift loops). `HASTE_CPU_KERNELS=portable` forces 0 (benchmarks and tests compare the two).
public enum CPUKernels {
    public static let level: Int = {
        if let v = getenv("HASTE_CPU_KERNELS"), String(cString: v) == "portable" { return 0 }
        return hardware
    }()
    /// What the CPU supports, whatever HASTE_CPU_KERNELS says (tests of a variant check this).
    public static let hardware = Int(haste_cpu_level())
}
