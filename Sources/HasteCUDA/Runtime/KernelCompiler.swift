#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import HasteIO
import HasteTensor

/// One family compiled for one architecture (`compileAll`'s report line).
public struct CompiledFamily: Sendable, Equatable {
    public let family: String
    /// Compute capability, e.g. 90 for sm_90.
    public let arch: Int
    /// Entry points the family lists (each checked to be defined in the image).
    public let kernels: Int
    /// Size of the CUBIN image.
    public let bytes: Int
}

/// Kernel sources → CUBIN images through NVRTC alone (no GPU, no driver: usable for `haste selftest --device cuda
/// --compile-only` and the CI test), with an on-disk cache of images keyed by SHA-256 of (full source text,
/// architecture, NVRTC version, options) in `$HASTE_CACHE/cuda-kernels` (STYLE §2.5 [MLX `MLX_PTX_CACHE_DIR`]).
/// Cache files carry their image's SHA-256: a damaged one is recompiled and rewritten, never loaded.
public final class KernelCompiler: @unchecked Sendable {
    public let nvrtc: NVRTC
    /// nil: no disk cache.
    public let cacheDirectory: String?
    private let lock = NSLock()
    private var hits = 0, compilations = 0, warnedUnwritable = false

    public init(nvrtc: NVRTC, cacheDirectory: String? = KernelCompiler.defaultCacheDirectory()) {
        self.nvrtc = nvrtc
        self.cacheDirectory = cacheDirectory
    }

    /// Loads NVRTC through the standard search (`CUDALibrarySearch.standard`) and caches in the default folder.
    public static func open(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KernelCompiler {
        KernelCompiler(nvrtc: try NVRTC.load(search: .standard(environment: environment)),
                       cacheDirectory: defaultCacheDirectory(environment: environment))
    }

    /// `$HASTE_CACHE/cuda-kernels` (else `~/.cache/haste/cuda-kernels`).
    public static func defaultCacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        CacheDirectory.path(environment: environment) + "/cuda-kernels"
    }

    /// Disk-cache hits and NVRTC compilations so far.
    public var statistics: (hits: Int, compilations: Int) { lock.lock(); defer { lock.unlock() }; return (hits, compilations) }

    /// NVRTC options for `sm_<arch>`: a real architecture, so the output is CUBIN (not PTX, which a driver older
    /// than the NVRTC rejects, STYLE §2.5).
    public static func options(arch: Int) -> [String] { ["--gpu-architecture=sm_\(arch)", "--std=c++17"] }

    /// The cache key: SHA-256 of everything that changes the image.
    public func key(_ source: KernelSource, arch: Int) -> String {
        var h = SHA256()
        h.update(Array("haste-cubin-v1\nnvrtc \(nvrtc.version)\narch sm_\(arch)\noptions \(KernelCompiler.options(arch: arch).joined(separator: " "))\n".utf8))
        h.update(Array(source.fullText.utf8))
        return h.finalizeHex()
    }

    /// Where `source`'s image for `arch` is cached (nil without a cache folder).
    public func cachePath(_ source: KernelSource, arch: Int) -> String? {
        cacheDirectory.map { "\($0)/\(source.family.filter { $0.isLetter || $0.isNumber })-sm_\(arch)-\(key(source, arch: arch)).cubin" }
    }

    /// The CUBIN of `source` for `arch`: from the cache when a valid entry exists, else compiled (and cached).
    public func image(for source: KernelSource, arch: Int) throws -> [UInt8] {
        let path = cachePath(source, arch: arch)
        if let path, let image = KernelCompiler.readCacheFile(path) {
            lock.lock(); hits += 1; lock.unlock()
            return image
        }
        let image = try compile(source, arch: arch)
        if let path, let dir = cacheDirectory { store(image, at: path, in: dir) }
        return image
    }

    /// Compiles `source` for `arch` with NVRTC (no cache) and checks that every listed kernel is defined.
    public func compile(_ source: KernelSource, arch: Int) throws -> [UInt8] {
        let image = try nvrtc.compile(source.fullText, name: "\(source.family).cu", options: KernelCompiler.options(arch: arch))
        lock.lock(); compilations += 1; lock.unlock()
        if let defined = CUBINImage.functionNames(image) {
            let missing = source.kernels.filter { !defined.contains($0) }
            if !missing.isEmpty {
                throw CUDAError("the \(source.family) family lists \(missing.joined(separator: ", ")), not defined in its code for sm_\(arch) "
                                + "(entry points are `extern \"C\" __global__ void name(...)`)")
            }
        }
        return image
    }

    /// Compiles every source for every architecture with NVRTC (the cache is neither read nor written: this is
    /// the check that the sources compile). Throws one error listing every failure with its NVRTC log.
    /// `dumpDirectory` (`haste selftest --compile-only` passes `HASTE_CUDA_DUMP_DIR`): each image is also written
    /// there as `<family>-sm_<arch>.cubin`, for the CUDA toolkit's binary tools.
    public func compileAll(_ sources: [KernelSource], architectures: [Int], dumpDirectory: String? = nil) throws -> [CompiledFamily] {
        var out: [CompiledFamily] = [], failures: [String] = []
        for source in sources {
            for arch in architectures where arch >= source.minimumArchitecture {
                do {
                    let image = try compile(source, arch: arch)
                    if let dir = dumpDirectory {   // for cuobjdump -res-usage / nvdisasm: registers, local memory, SASS
                        try Data(image).write(to: URL(fileURLWithPath: "\(dir)/\(source.family)-sm_\(arch).cubin"))
                    }
                    out.append(CompiledFamily(family: source.family, arch: arch, kernels: source.kernels.count, bytes: image.count))
                } catch {
                    failures.append("\(source.family) for sm_\(arch): \(error)")
                }
            }
        }
        if !failures.isEmpty {
            throw CUDAError("\(failures.count) kernel famil\(failures.count == 1 ? "y" : "ies") did not compile with NVRTC \(nvrtc.version):\n"
                            + failures.joined(separator: "\n"))
        }
        return out
    }

    // MARK: cache files: "HASTE-CUBIN 1\n", the image's SHA-256 (64 hex digits), "\n", the image.

    static let magic = Array("HASTE-CUBIN 1\n".utf8)

    static func cacheFile(_ image: [UInt8]) -> [UInt8] { magic + Array((SHA256.hex(image) + "\n").utf8) + image }

    /// The image in a cache file, or nil when it is missing, truncated or damaged.
    static func readCacheFile(_ path: String) -> [UInt8]? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let bytes = [UInt8](data), header = magic.count + 65
        guard bytes.count > header, Array(bytes[0..<magic.count]) == magic, bytes[header - 1] == 0x0a else { return nil }
        let digest = String(decoding: bytes[magic.count..<(header - 1)], as: UTF8.self)
        let image = Array(bytes[header...])
        return SHA256.hex(image) == digest ? image : nil
    }

    private func store(_ image: [UInt8], at path: String, in dir: String) {
        do {
            try CacheDirectory.create(dir)
            try AtomicFile.write(KernelCompiler.cacheFile(image), to: path)
        } catch {
            lock.lock(); defer { lock.unlock() }
            if !warnedUnwritable {
                warnedUnwritable = true
                fputs("haste: warning: kernel cache not written (\(error)); kernels are recompiled next run. Set HASTE_CACHE to a writable folder.\n", stderr)
            }
        }
    }
}
