import Foundation
import Testing
@testable import HasteCUDA

/// Every kernel family the backend declares compiles with NVRTC to CUBIN for sm_75 (T4: the prelude's pre-sm_80
/// branches), sm_80 (A100) and sm_90 (H100/H200), and every kernel a family lists is defined in its image: CI fails
/// when a kernel does not compile.
@Test func everyKernelSourceCompilesForSm75Sm80AndSm90() throws {
    guard let nvrtc = RuntimeTestSupport.nvrtc else { return }
    let compiler = KernelCompiler(nvrtc: nvrtc, cacheDirectory: nil)
    let sources = CUDABackend.allSources
    let archs = [75, 80, 90]
    let compiled = try compiler.compileAll(sources, architectures: archs)
    #expect(compiled.count == sources.reduce(0) { n, s in n + archs.filter { $0 >= s.minimumArchitecture }.count })
    #expect(compiled.count > sources.count * 2)
    #expect(Set(compiled.map(\.family)) == Set(sources.map(\.family)))
    #expect(compiled.allSatisfy { $0.bytes > 0 })
    let kernels = compiled.reduce(0) { $0 + $1.kernels }
    print("NVRTC \(nvrtc.version) (\(nvrtc.path)): \(sources.count) families, \(kernels) kernels, each compiled for sm_75 (the bf16 tensor-core families from sm_80), sm_80 and sm_90: "
          + "\(compiled.reduce(0) { $0 + $1.bytes }) bytes")
}

let probeSource = KernelSource(family: "cacheprobe", kernels: ["haste_cache_probe"], code: #"""
extern "C" __global__ void haste_cache_probe(float* x, i64 n, float s) {
    HASTE_GRID_STRIDE_LOOP(i, n) x[i] = x[i] * s + haste_bf16_to_float(haste_float_to_bf16(1.0f));
}
"""#)

@Test func theDiskCacheHitsOnASecondCompileAndRecompilesADamagedFile() throws {
    guard let nvrtc = RuntimeTestSupport.nvrtc else { return }
    let dir = RuntimeTestSupport.temporaryFolder("kernels") + "/cuda-kernels"
    defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
    let compiler = KernelCompiler(nvrtc: nvrtc, cacheDirectory: dir)
    let first = try compiler.image(for: probeSource, arch: 90)
    #expect(compiler.statistics == (hits: 0, compilations: 1))
    let path = try #require(compiler.cachePath(probeSource, arch: 90))
    #expect(FileManager.default.fileExists(atPath: path) && path.hasPrefix(dir + "/cacheprobe-sm_90-"))
    #expect(try compiler.image(for: probeSource, arch: 90) == first)
    #expect(compiler.statistics == (hits: 1, compilations: 1))

    // One flipped byte in the image: the digest no longer matches, so it is compiled again and the file rewritten.
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    bytes[bytes.count - 100] ^= 0x40
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    #expect(KernelCompiler.readCacheFile(path) == nil)
    #expect(try compiler.image(for: probeSource, arch: 90) == first)
    #expect(compiler.statistics == (hits: 1, compilations: 2))
    #expect(KernelCompiler.readCacheFile(path) == first)
    // A truncated file likewise.
    try Data(bytes.prefix(30)).write(to: URL(fileURLWithPath: path))
    #expect(try compiler.image(for: probeSource, arch: 90) == first)
    #expect(compiler.statistics == (hits: 1, compilations: 3))

    // The key covers the architecture and the full text; a new compiler over the same folder hits.
    #expect(compiler.key(probeSource, arch: 80) != compiler.key(probeSource, arch: 90))
    let edited = KernelSource(family: probeSource.family, kernels: probeSource.kernels, code: probeSource.code + "\n")
    #expect(compiler.key(edited, arch: 90) != compiler.key(probeSource, arch: 90))
    let again = KernelCompiler(nvrtc: nvrtc, cacheDirectory: dir)
    #expect(try again.image(for: probeSource, arch: 90) == first && again.statistics == (hits: 1, compilations: 0))
    #expect(CUBINImage.functionNames(first)?.contains("haste_cache_probe") == true)
}

@Test func compileErrorsCarryNVRTCsLogAndAListedKernelMustBeDefined() throws {
    guard let nvrtc = RuntimeTestSupport.nvrtc else { return }
    let compiler = KernelCompiler(nvrtc: nvrtc, cacheDirectory: nil)
    let broken = KernelSource(family: "broken", kernels: ["k"], code: #"""
    extern "C" __global__ void k(float* x) { x[0] = undeclared_thing; }
    """#)
    let misnamed = KernelSource(family: "misnamed", kernels: ["listed_kernel"], code: #"""
    extern "C" __global__ void defined_kernel(float* x) { x[0] = 1.0f; }
    """#)
    do {
        _ = try compiler.compileAll([broken, probeSource, misnamed], architectures: [90])
        Issue.record("broken sources compiled")
    } catch {
        let text = "\(error)"
        #expect(text.contains("2 kernel families did not compile"), "\(text)")
        #expect(text.contains("broken for sm_90") && text.contains("broken.cu") && text.contains("undeclared_thing"), "\(text)")
        #expect(text.contains("misnamed for sm_90") && text.contains("listed_kernel"), "\(text)")
        #expect(!text.contains("cacheprobe"), "\(text)")
    }
    #expect(CUBINImage.functionNames(Array("not an ELF file at all, but long enough to pass the size check for sure....".utf8)) == nil)
}
