#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import HasteTensor

/// NVRTC (`libnvrtc.so.<major>`), loaded at run time: compiles CUDA C++ to CUBIN without a GPU (nvrtc.h
/// signatures: `nvrtcResult` is a C enum (Int32), `nvrtcProgram` an opaque pointer, `size_t` Int).
public final class NVRTC: @unchecked Sendable {
    typealias Program = OpaquePointer
    let library: CUDALibrarySearch.Loaded
    let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
    let createProgram: @convention(c) (UnsafeMutablePointer<Program?>, UnsafePointer<CChar>, UnsafePointer<CChar>?, Int32,
                                       UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    let compileProgram: @convention(c) (Program?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    let getProgramLogSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Int32
    let getProgramLog: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Int32
    let getCUBINSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Int32
    let getCUBIN: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Int32
    let destroyProgram: @convention(c) (UnsafeMutablePointer<Program?>) -> Int32
    let getErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// Where it was loaded from, and its version (part of every kernel-cache key).
    public var path: String { library.path }
    public let major: Int, minor: Int
    public var version: String { "\(major).\(minor)" }

    init(_ lib: CUDALibrarySearch.Loaded) throws {
        library = lib
        let k = CUDALibraryKind.nvrtc
        nvrtcVersion = try lib.symbol("nvrtcVersion", k); createProgram = try lib.symbol("nvrtcCreateProgram", k)
        compileProgram = try lib.symbol("nvrtcCompileProgram", k)
        getProgramLogSize = try lib.symbol("nvrtcGetProgramLogSize", k); getProgramLog = try lib.symbol("nvrtcGetProgramLog", k)
        getCUBINSize = try lib.symbol("nvrtcGetCUBINSize", k); getCUBIN = try lib.symbol("nvrtcGetCUBIN", k)
        destroyProgram = try lib.symbol("nvrtcDestroyProgram", k); getErrorString = try lib.symbol("nvrtcGetErrorString", k)
        var ma: Int32 = 0, mi: Int32 = 0
        _ = nvrtcVersion(&ma, &mi)
        major = Int(ma); minor = Int(mi)
    }

    /// Finds and loads NVRTC (newest major first, none newer than `maxMajor`, the driver's CUDA major). The
    /// builtins library beside it (`libnvrtc-builtins.so.<major>.<minor>`, which NVRTC opens by name) is loaded
    /// first from the same folder, so a folder outside the loader's path works too.
    public static func load(search: CUDALibrarySearch = .standard(), maxMajor: Int? = nil) throws -> NVRTC {
        let names = CUDALibraryKind.nvrtc.names(maxMajor: maxMajor)
        guard !names.isEmpty else {
            throw HasteError.unsupported("--device cuda: the driver runs CUDA \(maxMajor ?? 0).x, older than any NVRTC haste knows "
                                                + "(\(CUDALibraryKind.majors.map { "\($0).x" }.joined(separator: ", "))).\nhint: update the NVIDIA driver, or run with --device cpu")
        }
        // Preload the builtins of whichever folder holds NVRTC (a miss is harmless: NVRTC then finds them itself).
        for place in search.places {
            for name in names where FileManager.default.fileExists(atPath: "\(place.directory)/\(name)") {
                let major = name.split(separator: ".").last!
                for b in CUDALibrarySearch.expand("\(place.directory)/libnvrtc-builtins.so.\(major).*").sorted() where !b.contains(".alt.") {
                    _ = dlopen(b, RTLD_NOW | RTLD_GLOBAL)
                }
                return try NVRTC(load(names, search))
            }
        }
        return try NVRTC(load(names, search))
    }

    private static func load(_ names: [String], _ search: CUDALibrarySearch) throws -> CUDALibrarySearch.Loaded {
        switch search.load(names) {
        case .success(let l): return l
        case .failure(let miss): throw CUDALibraryKind.nvrtc.unavailable(miss)
        }
    }

    private func message(_ r: Int32) -> String { getErrorString(r).map { String(cString: $0) } ?? "nvrtcResult \(r)" }

    /// Compiles `text` to a CUBIN with `options`; the error carries NVRTC's whole log (STYLE §2.5). `name` is the
    /// file name the log's messages use.
    public func compile(_ text: String, name: String, options: [String]) throws -> [UInt8] {
        var program: Program?
        let created = createProgram(&program, text, name, 0, nil, nil)
        guard created == 0, program != nil else { throw CUDAError("nvrtcCreateProgram(\(name)) failed: \(message(created))") }
        defer { _ = destroyProgram(&program) }
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let result = cOptions.map { UnsafePointer($0) }.withUnsafeBufferPointer {
            compileProgram(program, Int32(options.count), $0.baseAddress)
        }
        var logSize = 0
        _ = getProgramLogSize(program, &logSize)
        var log = [CChar](repeating: 0, count: max(logSize, 1))
        if logSize > 1 { _ = getProgramLog(program, &log) }
        let logText = String(cString: log).trimmingCharacters(in: .whitespacesAndNewlines)
        guard result == 0 else {
            throw CUDAError("NVRTC \(version) (\(path)) could not compile \(name) with \(options.joined(separator: " ")): \(message(result))\n"
                            + (logText.isEmpty ? "(empty log)" : logText))
        }
        var size = 0
        let sized = getCUBINSize(program, &size)
        guard sized == 0, size > 0 else {
            throw CUDAError("nvrtcGetCUBINSize(\(name)) failed: \(message(sized)) (a virtual compute_XY architecture yields PTX, not CUBIN)\n\(logText)")
        }
        var image = [UInt8](repeating: 0, count: size)
        let got = image.withUnsafeMutableBytes { getCUBIN(program, $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
        guard got == 0 else { throw CUDAError("nvrtcGetCUBIN(\(name)) failed: \(message(got))\n\(logText)") }
        return image
    }
}
