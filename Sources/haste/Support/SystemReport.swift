#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS
import Foundation
import HasteCUDA
import HasteDistributed
import HasteIO

/// Everything `haste doctor` reports, gathered once. Probes never fail: what is missing is reported as such,
/// with the package that provides it.
struct SystemReport {
    struct Library { let name: String; let purpose: String; let package: String }

    var version = HasteVersion.current
    var swift = SystemReport.compilerVersion
    var os = ""
    var cpu = ""
    var cpuFlags: [(String, Bool)] = []
    var blasCore = "", blasConfig = "", blasThreads = 0
    var libraries: [Library] = []
    var cuda: [String] = [], mpi = ""

    static func collect() -> SystemReport {
        var r = SystemReport()
        r.os = osDescription()
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = field("model name", in: info) ?? "unknown CPU"
        r.cpu = "\(model), \(ProcessInfo.processInfo.activeProcessorCount) logical cores available"
        let flags = Set((field("flags", in: info) ?? "").split(separator: " ").map(String.init))
        r.cpuFlags = ["avx2", "fma", "avx512f"].map { ($0, flags.contains($0)) }
        r.blasCore = openblas_get_corename().map { String(cString: $0) } ?? "?"
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
                     "cpu features: " + cpuFlags.map { "\($0.0) \($0.1 ? "yes" : "no")" }.joined(separator: ", "),
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

    /// The first `key : value` line of /proc/cpuinfo.
    static func field(_ key: String, in text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == key {
                return parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
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
