#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS
import Foundation
import HasteCUDA
import HasteDistributed
import HasteIO
import HasteTensor

/// Everything `haste doctor` reports, gathered once. Probes never fail: what is missing is reported as such,
/// with the package that provides it.
struct SystemReport {
    struct Library { let name: String; let purpose: String; let package: String }

    var version = HasteVersion.current
    var swift = SystemReport.compilerVersion
    var os = ""
    var cpu = "", cpuModel = ""
    var cpuFlags: [(String, Bool)] = []
    /// The float32 FMA peak on paper (nil: /proc/cpuinfo gives no processor or clock) and measured.
    var peakTheoretical: CPUPeak.Theoretical?
    var peakMeasured: CPUPeak.Measured?
    var blasCore = "", blasConfig = "", blasThreads = 0
    var libraries: [Library] = []
    var cuda: [String] = [], mpi = ""

    /// `threads`: the OpenBLAS threads of the measured peak (haste's thread count).
    static func collect(threads: Int) -> SystemReport {
        var r = SystemReport()
        r.os = osDescription()
        let info = CPUInfo.current()
        r.cpuModel = info.model ?? "unknown CPU"
        r.cpu = "\(r.cpuModel), \(ProcessInfo.processInfo.activeProcessorCount) logical cores available"
        r.cpuFlags = info.simdFlags.map { ($0.name, $0.present) }
        r.peakTheoretical = CPUPeak.theoretical()
        r.peakMeasured = CPUPeak.measure(threads: threads)
        r.blasCore = openblas_get_corename().map { String(cString: $0) } ?? "?"
        // Set by some machines' images (older OpenBLAS builds misdetect some CPUs); it decides the kernels.
        if let forced = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] {
            r.blasCore += " (OPENBLAS_CORETYPE=\(forced) in the environment chose it)"
        }
        r.blasConfig = openblas_get_config().map { String(cString: $0) } ?? "?"
        r.blasThreads = Int(openblas_get_num_threads())
        // Linked (DT_NEEDED): haste does not start without them, so they are listed, not probed.
        r.libraries = [
            Library(name: "libopenblas.so.0", purpose: "BLAS (every GEMM)", package: "libopenblas0"),
            Library(name: "libpng16.so.16", purpose: "PNG images", package: "libpng16-16"),
            Library(name: "libjpeg.so.62", purpose: "JPEG images", package: "libjpeg62-turbo"),
            Library(name: "libhdf5_serial.so.103", purpose: "HDF5 datasets", package: "libhdf5-103-1"),
            Library(name: "liblapacke.so.3", purpose: "LAPACK (FID matrix square root)", package: "liblapacke"),
        ]
        r.cuda = CUDA.probe()
        r.mpi = Launch.mpiDescription()
        return r
    }

    func render() -> String {
        var lines = ["haste \(version)", "swift: \(swift)", "os: \(os)", "cpu: \(cpu)",
                     "cpu features: " + cpuFlags.map { "\($0.0) \($0.1 ? "yes" : "no")" }.joined(separator: ", ")] + peakLines + [
                     "openblas: core \(blasCore), threads \(blasThreads)", "openblas config: \(blasConfig)",
                     "linked libraries (Debian packages):"]
        let width = libraries.map(\.name.count).max() ?? 0
        for l in libraries {
            lines.append("  " + l.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  \(l.purpose) (\(l.package))")
        }
        lines.append("mpi: \(mpi)")
        lines.append("cuda (libraries loaded at run time; --device cuda[:N]):")
        lines += cuda.map { "  " + $0 }
        return lines.joined(separator: "\n")
    }

    static var compilerVersion: String {
        #if compiler(>=6.4)
        return "6.4 or newer"
        #elseif compiler(>=6.3)
        return "6.3"
        #elseif compiler(>=6.2)
        return "6.2"
        #elseif compiler(>=6.1)
        return "6.1"
        #else
        return "6.0"
        #endif
    }

    /// The FMA peak on paper (each input with where it came from) and measured.
    var peakLines: [String] {
        var lines: [String] = []
        if let t = peakTheoretical {
            lines.append(String(format: "float32 FMA peak on paper: %.0f GFLOP/s = %g cores × %.2f GHz × %g lanes × %g FMA units × 2",
                                t.gflops, t.cores.value, t.clockGHz.value, t.lanes.value, t.fmaUnits.value))
            for (name, input) in [("cores", t.cores), ("clock", t.clockGHz), ("lanes", t.lanes), ("FMA units", t.fmaUnits)] {
                lines.append("  \(name): \(input.source)")
            }
        } else {
            lines.append("float32 FMA peak on paper: unknown (/proc/cpuinfo lists no processor or clock)")
        }
        if let m = peakMeasured {
            lines.append(String(format: "float32 FMA peak measured: %.0f GFLOP/s (\(m.kernel) %d×%d×%d, best of %d calls in %.2f s, %d threads)",
                                m.gflops, m.size, m.size, m.size, m.calls, m.seconds, m.threads))
        }
        return lines
    }

    /// `haste doctor --json`: the CPU, its SIMD flags and both peaks (Scripts/bench_compare.sh sweep reads it).
    func json() -> String {
        var d: [String: Any] = ["cpu": cpuModel, "cpu_flags": Dictionary(uniqueKeysWithValues: cpuFlags.map { ($0.0, $0.1) }),
                                "threads": blasThreads, "haste": version]
        if let m = peakMeasured {
            d["fma_peak_gflops"] = m.gflops
            d["fma_peak_sgemm_size"] = m.size
        }
        if let t = peakTheoretical {
            d["fma_peak_theoretical_gflops"] = t.gflops
            d["fma_peak_theoretical_inputs"] = ["cores": t.cores.value, "clock_ghz": t.clockGHz.value, "lanes": t.lanes.value, "fma_units": t.fmaUnits.value]
        }
        guard let data = try? JSONSerialization.data(withJSONObject: d, options: [.prettyPrinted, .sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func osDescription() -> String {
        let release = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let pretty = release.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { $0.dropFirst("PRETTY_NAME=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        var u = utsname()
        uname(&u)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return "\(pretty ?? "unknown"), \(text(u.sysname)) \(text(u.release)) \(text(u.machine))"
    }
}
