import ArgumentParser
import HasteTensor

/// `haste selftest --compile-only`: NVRTC compilation of every CUDA kernel source for sm_80 and sm_90, no GPU.
/// WIRING PENDING: the runtime's `KernelCompiler.compileAll(_:architectures:)` is not on main yet; the commit
/// "selftest --compile-only: NVRTC compile of CUDABackend.allSources" replaces this body.
enum SelftestCompile {
    static let architectures = [80, 90]

    static func run(json: Bool) throws {
        throw HasteError.unsupported("selftest --compile-only: this build has no NVRTC kernel compiler yet")
    }
}
