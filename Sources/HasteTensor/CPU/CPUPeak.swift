import COpenBLAS
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// This CPU's float32 FMA peak in GFLOP/s (issue #15): on paper, from /proc/cpuinfo and sysfs, and measured, as
/// the rate of a large sgemm on the kernel CPUBackend.gemm uses (haste's AVX-512 one, or OpenBLAS). `haste doctor` prints both; `haste bench train --sweep` quotes each row's
/// GFLOP/s as a share of the measured one (what this machine's BLAS reaches is the ceiling that matters).
public enum CPUPeak {
    /// One input of the paper peak: its value and where it came from.
    public struct Input: Sendable, Equatable {
        public let value: Double
        public let source: String
        public init(_ value: Double, _ source: String) { (self.value, self.source) = (value, source) }
    }

    /// cores × clock × float32 lanes per FMA × FMA units per core × 2 (an FMA is a multiply and an add).
    public struct Theoretical: Sendable, Equatable {
        public let cores: Input, clockGHz: Input, lanes: Input, fmaUnits: Input
        public var gflops: Double { cores.value * clockGHz.value * lanes.value * fmaUnits.value * 2 }
    }

    /// The best rate of repeated n×n×n sgemm calls on `threads` threads.
    public struct Measured: Sendable, Equatable {
        /// "haste AVX-512 sgemm" or "OpenBLAS sgemm": the float32 GEMM that CPUBackend.gemm runs here.
        public let kernel: String
        public let gflops: Double
        public let size: Int, threads: Int, calls: Int
        public let seconds: Double
    }

    /// The paper peak of this machine; nil where /proc/cpuinfo lists no processor or no clock is known.
    public static func theoretical() -> Theoretical? {
        let maxKHz = try? String(contentsOfFile: "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding: .utf8)
        return theoretical(CPUInfo.current(), maxFrequencyKHz: maxKHz)
    }

    /// The paper peak from a parsed /proc/cpuinfo and the text of sysfs `cpuinfo_max_freq` (kHz; nil when absent,
    /// as in most VMs: then the "cpu MHz" line, the current clock, is used and said so).
    public static func theoretical(_ info: CPUInfo, maxFrequencyKHz: String?) -> Theoretical? {
        guard !info.processors.isEmpty else { return nil }
        let cores = info.physicalCores.map { Input(Double($0), "/proc/cpuinfo: distinct physical id/core id pairs") }
            ?? Input(Double(info.processors.count), "/proc/cpuinfo: processor entries (no core ids; SMT siblings counted)")
        let clock: Input
        if let khz = maxFrequencyKHz.flatMap({ Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }), khz > 0 {
            clock = Input(khz / 1e6, "sysfs cpufreq cpuinfo_max_freq of cpu0")
        } else if let mhz = info.mhz, mhz > 0 {
            clock = Input(mhz / 1e3, "/proc/cpuinfo cpu MHz (the current clock: sysfs has no cpufreq here)")
        } else {
            return nil
        }
        let lanes: Input
        if info.flags.contains("avx512f") {
            lanes = info.vendor == "AuthenticAMD" && info.family == 25
                ? Input(8, "avx512f, but AMD family 25 (Zen 4) runs a 512-bit FMA as two 256-bit halves")
                : Input(16, "avx512f in /proc/cpuinfo flags: 512-bit vectors")
        } else if info.flags.contains("avx2") || info.flags.contains("avx") {
            lanes = Input(8, "avx2/avx in /proc/cpuinfo flags: 256-bit vectors")
        } else {
            lanes = Input(4, "no avx in /proc/cpuinfo flags: 128-bit SSE vectors")
        }
        let units = info.flags.contains("fma")
            ? Input(2, "assumed (not in /proc/cpuinfo): 2 FMA pipes per core as Haswell-or-later Intel and Zen cores have; some AVX-512 Xeons have 1")
            : Input(1, "no fma flag: one multiply and one add per cycle, counted as 1 FMA")
        return Theoretical(cores: cores, clockGHz: clock, lanes: lanes, fmaUnits: units)
    }

    /// n×n×n sgemm on `threads` OpenBLAS threads: n doubles from 512 until one call takes a quarter of `seconds`
    /// (or n reaches `maxSize`), where OpenBLAS is at its plateau; then calls of that size for `seconds`
    /// (at least 2), and the best call's rate. OpenBLAS's thread count is restored after.
    public static func measure(threads: Int, seconds: Double = 0.2, maxSize: Int = 4096) -> Measured {
        return CPUBackend.withGemmMutex {
            let previous = openblas_get_num_threads()
            openblas_set_num_threads(Int32(max(1, threads)))
            defer { openblas_set_num_threads(previous) }
            var n = min(512, maxSize)
            while true {
                if let result = timed(n: n, seconds: seconds, threads: threads, last: n * 2 > maxSize) { return result }
                n *= 2
            }
        }
    }

    /// Warm-up, one probe call, and (when it was long enough, or `last`) the timed calls at size n.
    private static func timed(n: Int, seconds: Double, threads: Int, last: Bool) -> Measured? {
        let count = n * n
        let a = UnsafeMutablePointer<Float>.allocate(capacity: count), b = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        for i in 0..<count { (a[i], b[i], c[i]) = (Float(i % 7) * 0.125, Float(i % 5) * 0.25, 0) }
        func call() -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            if CPUKernels.level == 2 {
                AVX512Sgemm(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: a, lda: n, b: b, ldb: n, beta: 0, c: c, ldc: n)
                    .run(parts: AVX512Sgemm.parts(threads: threads))
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, c, Int32(n))
            }
            return Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        }
        _ = call()
        let probe = call()
        guard last || probe >= seconds / 4 else { return nil }
        var times = [probe]
        while times.count < 2 || times.reduce(0, +) < seconds { times.append(call()) }
        let flops = 2 * Double(n) * Double(n) * Double(n)
        return Measured(kernel: CPUKernels.level == 2 ? "haste AVX-512 sgemm" : "OpenBLAS sgemm", gflops: flops / times.min()! / 1e9,
                        size: n, threads: threads, calls: times.count, seconds: times.reduce(0, +))
    }
}
