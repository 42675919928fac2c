#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import HasteTensor

/// Where haste looks for the CUDA libraries (STYLE §2.5), in this order:
/// 1. `HASTE_CUDA_LIB_DIR` (one folder, or several separated by `:`);
/// 2. the folders of `LD_LIBRARY_PATH`;
/// 3. the `nvidia/*/lib` folders of Python environments, where PyTorch's CUDA wheels put cuBLAS and NVRTC:
///    `VIRTUAL_ENV`, `CONDA_PREFIX` (and its `lib`), the prefix of every `python3` on `PATH` (the link's own
///    folder and where it points), `~/.local` (pip --user) — found by globbing
///    `<prefix>/lib/python3*/{site,dist}-packages/nvidia/*/lib`, Python itself is never run;
/// 4. `/usr/local/cuda/lib64`, then `/usr/local/cuda-*/lib64`, newest first;
/// 5. the plain soname through the system loader (ld.so.cache: where the NVIDIA driver installs `libcuda.so.1`).
/// Only folders that exist are kept; `considered` says what each step found, for error messages and `haste doctor`.
public struct CUDALibrarySearch: Sendable {
    /// A folder to look in and why (`HASTE_CUDA_LIB_DIR`, `LD_LIBRARY_PATH`, `python env /opt/venv` …).
    public struct Place: Sendable, Equatable {
        public let directory: String
        public let origin: String
        public init(directory: String, origin: String) { self.directory = directory; self.origin = origin }
    }

    public var places: [Place]
    /// Whether step 5 (the system loader) runs; tests turn it off to see the folders alone.
    public var useLoader: Bool
    /// One line per search step, also when it found nothing ("LD_LIBRARY_PATH unset").
    public var considered: [String]

    public init(places: [Place], useLoader: Bool = true, considered: [String] = []) {
        var seen = Set<String>()
        self.places = places.filter { seen.insert(URL(fileURLWithPath: $0.directory).standardizedFileURL.path).inserted }
        self.useLoader = useLoader
        self.considered = considered
    }

    /// The standard search for this process's environment (`home` for `~/.local`).
    public static func standard(environment: [String: String] = ProcessInfo.processInfo.environment) -> CUDALibrarySearch {
        var places: [Place] = [], considered: [String] = []
        func add(_ dirs: [String], _ origin: String) -> Int {
            let existing = dirs.filter(isDirectory)
            places += existing.map { Place(directory: $0, origin: origin) }
            return existing.count
        }
        func list(_ key: String) -> [String] {
            (environment[key] ?? "").split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        let override = list("HASTE_CUDA_LIB_DIR")
        considered.append(override.isEmpty ? "HASTE_CUDA_LIB_DIR unset"
                          : "HASTE_CUDA_LIB_DIR=\(override.joined(separator: ":"))" + (add(override, "HASTE_CUDA_LIB_DIR") == 0 ? " (no such folder)" : ""))
        let ld = list("LD_LIBRARY_PATH")
        considered.append(ld.isEmpty ? "LD_LIBRARY_PATH unset" : "LD_LIBRARY_PATH (\(add(ld, "LD_LIBRARY_PATH")) folders)")

        var python = 0
        for (prefix, origin) in pythonPrefixes(environment) {
            python += add(nvidiaLibraryFolders(prefix: prefix), "python env \(prefix) (\(origin))")
            if origin == "CONDA_PREFIX" { python += add(["\(prefix)/lib"], "conda env \(prefix)") }
        }
        considered.append(python == 0 ? "no Python environment with nvidia/*/lib (VIRTUAL_ENV, CONDA_PREFIX, python3 on PATH, ~/.local)"
                          : "\(python) Python environment folders (nvidia/*/lib)")
        let toolkits = ["/usr/local/cuda/lib64"] + expand("/usr/local/cuda-*/lib64").sorted { versionOrder($0, $1) }
        let found = add(toolkits, "CUDA toolkit")
        considered.append(found == 0 ? "no /usr/local/cuda*/lib64" : "\(found) CUDA toolkit folders (/usr/local/cuda*/lib64)")
        considered.append("the system loader (ld.so.cache, /etc/ld.so.conf)")
        return CUDALibrarySearch(places: places, useLoader: true, considered: considered)
    }

    /// Python installation prefixes worth globbing, with where each came from; no Python is run.
    static func pythonPrefixes(_ environment: [String: String]) -> [(String, String)] {
        var out: [(String, String)] = []
        for key in ["VIRTUAL_ENV", "CONDA_PREFIX"] { if let p = environment[key], !p.isEmpty { out.append((p, key)) } }
        for dir in (environment["PATH"] ?? "").split(separator: ":").map(String.init) where !dir.isEmpty {
            let exe = "\(dir)/python3"
            guard access(exe, X_OK) == 0 else { continue }
            let prefix = URL(fileURLWithPath: dir).deletingLastPathComponent().path
            out.append((prefix, "python3 on PATH"))
            if prefix == "/usr" { out.append(("/usr/local", "python3 on PATH")) }   // Debian: pip installs into /usr/local
            let real = URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent().path
            if real != prefix { out.append((real, "python3 on PATH, resolved")) }
        }
        if let home = environment["HOME"], !home.isEmpty { out.append(("\(home)/.local", "pip --user")) }
        return out
    }

    /// `<prefix>/lib/python3*/{site,dist}-packages/nvidia/*/lib`, sorted.
    public static func nvidiaLibraryFolders(prefix: String) -> [String] {
        (expand("\(prefix)/lib/python3*/site-packages/nvidia/*/lib") + expand("\(prefix)/lib/python3*/dist-packages/nvidia/*/lib")).sorted()
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    static func expand(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(pattern, 0, nil, &g) == 0 else { return [] }
        return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }
    }

    /// `/usr/local/cuda-12.10` before `-12.9`: numeric parts compared as numbers, descending.
    static func versionOrder(_ a: String, _ b: String) -> Bool {
        func parts(_ s: String) -> [Int] { s.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) } }
        return parts(b).lexicographicallyPrecedes(parts(a))
    }

    /// A loaded library: where it came from and its `dlopen` handle (never closed: symbols stay in use).
    public struct Loaded: @unchecked Sendable {
        public let path: String
        public let origin: String
        public let handle: UnsafeMutableRawPointer
    }

    /// Opens the first of `names` found, folder by folder (each folder tries every name), then through the loader.
    /// On failure returns every attempt that got as far as `dlopen` (a file present but unloadable says why).
    public func load(_ names: [String], global: Bool = false) -> Result<Loaded, LibraryNotFound> {
        let flags = RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL)
        var failures: [String] = []
        for place in places {
            for name in names {
                let path = "\(place.directory)/\(name)"
                guard FileManager.default.fileExists(atPath: path) else { continue }
                if let h = dlopen(path, flags) { return .success(Loaded(path: path, origin: place.origin, handle: h)) }
                failures.append("\(path): \(String(cString: dlerror()))")
            }
        }
        if useLoader {
            for name in names {
                if let h = dlopen(name, flags) { return .success(Loaded(path: CUDALibrarySearch.loadedPath(name) ?? name, origin: "system loader", handle: h)) }
                failures.append("loader: \(String(cString: dlerror()))")
            }
        }
        return .failure(LibraryNotFound(names: names, places: places, considered: considered, failures: failures))
    }

    /// The file the loader mapped for soname `name` (from /proc/self/maps: `libcuda.so.1` → `/usr/lib/…/libcuda.so.550.54.15`), for messages.
    static func loadedPath(_ name: String) -> String? {
        let stem = name.components(separatedBy: ".so").first! + ".so"
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return nil }
        for line in maps.split(separator: "\n") {
            guard let slash = line.firstIndex(of: "/") else { continue }
            let path = String(line[slash...])
            if (path.split(separator: "/").last.map(String.init) ?? "").hasPrefix(stem) { return path }
        }
        return nil
    }
}

/// What a failed search tried: the names, the folders looked in (with why), and every `dlopen` error.
public struct LibraryNotFound: Error, Sendable, CustomStringConvertible {
    public let names: [String]
    public let places: [CUDALibrarySearch.Place]
    public let considered: [String]
    public let failures: [String]

    /// Where haste looked and what failed, one indented line each.
    public var detail: String {
        var lines = ["  searched: " + considered.joined(separator: "; "),
                     "  folders: " + (places.isEmpty ? "none of those exist" : places.map { "\($0.directory) (\($0.origin))" }.joined(separator: ", "))]
        let real = failures.filter { !$0.hasSuffix("cannot open shared object file: No such file or directory") }
        if !real.isEmpty { lines.append("  could not load: " + real.joined(separator: "; ")) }
        return lines.joined(separator: "\n")
    }

    public var description: String { "\(names.joined(separator: " or ")) not found\n\(detail)" }
}

/// One CUDA library haste loads, with its file names (newest major first) and how to get it.
public enum CUDALibraryKind: String, Sendable, CaseIterable {
    case driver = "the CUDA driver", nvrtc = "NVRTC", cublas = "cuBLAS", cublasLt = "cuBLASLt", nccl = "NCCL"

    /// Majors haste knows, newest first.
    public static let majors = [13, 12]

    /// File names to try; `maxMajor` (the driver's CUDA major) drops libraries the driver cannot run.
    public func names(maxMajor: Int? = nil) -> [String] {
        let majors = CUDALibraryKind.majors.filter { $0 <= (maxMajor ?? Int.max) }
        switch self {
        case .driver: return ["libcuda.so.1"]
        case .nvrtc: return majors.map { "libnvrtc.so.\($0)" }
        case .cublas: return majors.map { "libcublas.so.\($0)" }
        case .cublasLt: return majors.map { "libcublasLt.so.\($0)" }
        case .nccl: return ["libnccl.so.2"]
        }
    }

    /// What to do when it is missing.
    public var fix: String {
        switch self {
        case .driver:
            return "install the NVIDIA driver (it provides libcuda.so.1; check with nvidia-smi), or point HASTE_CUDA_LIB_DIR at the folder holding libcuda.so.1"
        case .nvrtc:
            return "install PyTorch with CUDA (pip install torch) or NVRTC alone (pip install nvidia-cuda-nvrtc-cu12) and activate that environment, "
                + "install the CUDA toolkit, or set HASTE_CUDA_LIB_DIR to the folder holding libnvrtc.so.12"
        case .cublas, .cublasLt:
            return "install PyTorch with CUDA (pip install torch) or cuBLAS alone (pip install nvidia-cublas-cu12) and activate that environment, "
                + "install the CUDA toolkit, or set HASTE_CUDA_LIB_DIR to the folder holding libcublas.so.12 and libcublasLt.so.12"
        case .nccl:
            return "install PyTorch with CUDA (pip install torch) or NCCL alone (pip install nvidia-nccl-cu12) and activate that environment, "
                + "install NVIDIA's libnccl2 package, or set HASTE_CUDA_LIB_DIR to the folder holding libnccl.so.2"
        }
    }

    /// The thrown error for a failed search: library, where haste looked, how to fix it, and the CPU way out.
    public func unavailable(_ miss: LibraryNotFound) -> HasteError {
        .unsupported("haste could not find \(rawValue) (\(miss.names.joined(separator: " or "))), which \(neededBy) needs.\n\(miss.detail)\n"
                     + "hint: \(fix); \(wayOut)")
    }

    /// What needs the library, and the way around it.
    var neededBy: String { self == .nccl ? "--dist-backend nccl" : "--device cuda" }
    var wayOut: String { self == .nccl ? "or sum GPU gradients through host memory with --dist-backend mpi" : "or run with --device cpu" }

    /// The thrown error for a library that lacks a function haste calls.
    public func missingSymbol(_ symbol: String, in path: String) -> HasteError {
        .unsupported("\(rawValue) at \(path) has no function \(symbol): too old, or not the real library (a stub?).\n"
                     + "hint: \(fix); \(wayOut)")
    }
}
