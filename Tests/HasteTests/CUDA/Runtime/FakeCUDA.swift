import Foundation
import HasteTensor
import Testing
@testable import HasteCUDA

/// Builds the fake libraries into a fresh folder with the system C compiler; nil (and a warning) without one.
func buildFakeCUDA() throws -> String? {
    let dir = RuntimeTestSupport.temporaryFolder("fakecuda")
    let builds = [("libcuda.so.1", fakeDriverSource + fakeStagingSource), ("libcublas.so.12", fakeBLASSource), ("libcublasLt.so.12", "int fake_lt;\n")]
    for (name, source) in builds { guard try compileStandIn(name, source, in: dir) else { return nil } }
    return dir
}

/// Compiles C `source` into the shared library `dir/name` with the system C compiler; false (and a warning) when
/// there is none or it fails: the stand-in's tests then skip.
func compileStandIn(_ name: String, _ source: String, in dir: String) throws -> Bool {
    try source.write(toFile: "\(dir)/\(name).c", atomically: true, encoding: .utf8)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["cc", "-shared", "-fPIC", "-O1", "-pthread", "-o", "\(dir)/\(name)", "\(dir)/\(name).c"]
    p.standardOutput = FileHandle.nullDevice
    do { try p.run() } catch { print("warning: no C compiler (cc): tests of the stand-in \(name) skipped"); return false }
    p.waitUntilExit()
    if p.terminationStatus != 0 { print("warning: cc could not build the stand-in \(name): its tests skipped"); return false }
    return true
}

/// The fake libraries, NVRTC, and one `CUDADriver` (cuda:1 of the fake's two devices) over them, built once.
final class FakeCUDA {
    let folder: String, env: [String: String]
    let libs: CUDA.Libraries
    let driver: CUDADriver

    /// nil (with a printed warning) without NVRTC or a C compiler.
    static let shared: FakeCUDA? = {
        guard let nvrtc = RuntimeTestSupport.nvrtc else { return nil }
        do {
            guard let folder = try buildFakeCUDA() else { return nil }
            return try FakeCUDA(folder: folder, nvrtcFolder: (nvrtc.path as NSString).deletingLastPathComponent)
        } catch { Issue.record("fake CUDA: \(error)"); return nil }
    }()

    /// A private copy of the fake libraries (built and loaded anew: their own globals), for a test whose recording
    /// globals must not see other suites' calls through `shared`; nil (with a printed warning) without NVRTC or cc.
    static func fresh() throws -> FakeCUDA? {
        guard let nvrtc = RuntimeTestSupport.nvrtc, let folder = try buildFakeCUDA() else { return nil }
        return try FakeCUDA(folder: folder, nvrtcFolder: (nvrtc.path as NSString).deletingLastPathComponent)
    }
    init(folder: String, nvrtcFolder: String) throws {
        self.folder = folder
        env = ["HASTE_CUDA_LIB_DIR": "\(folder):\(nvrtcFolder)", "PATH": "/nonexistent"]
        defer { try? FileManager.default.removeItem(atPath: folder) }   // loaded: the files are no longer needed
        libs = try CUDA.load(env)
        driver = try CUDADriver(api: libs.api, blas: libs.blas, compiler: KernelCompiler(nvrtc: libs.nvrtc, cacheDirectory: nil),
                                index: 1, allowTF32: false)
    }

    /// A recording global of the fake libraries.
    func global<T>(_ name: String, _: T.Type) -> UnsafeMutablePointer<T> {
        let blas = name.hasPrefix("fake_ex_") || ["fake_math_mode", "fake_gemms", "fake_blas_stream"].contains(name)
        return dlsym(blas ? libs.blas.library.handle : libs.api.library.handle, name)!.assumingMemoryBound(to: T.self)
    }

    /// Device memory holding `values`.
    func upload(_ values: [Float]) throws -> DevicePointer {
        let p = try #require(driver.allocate(byteCount: values.count * 4))
        values.withUnsafeBytes { driver.copy(fromHost: $0.baseAddress!, to: p, byteCount: values.count * 4) }
        return p
    }

    func download(_ p: DevicePointer, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBytes { driver.copy(from: p, toHost: $0.baseAddress!, byteCount: count * 4) }
        return out
    }
}

