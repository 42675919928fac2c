import Foundation
import ArgumentParser
import HasteCUDA

/// `haste selftest --compile-only`: every CUDA kernel source (`CUDABackend.allSources`) compiled by NVRTC to CUBIN
/// for sm_75 (T4: the prelude's pre-sm_80 branches), sm_80 (A100) and sm_90 (H100/H200), with no GPU and no driver: NVRTC alone is loaded (the same search as
/// `--device cuda`). Throws NVRTC's log for every family that fails; prints what compiled. With `HASTE_CUDA_DUMP_DIR`
/// (an existing folder) every image is also written there (`<family>-sm_<arch>.cubin`), for `cuobjdump -res-usage`
/// (registers, local memory) and `nvdisasm` (SASS) from the CUDA toolkit.
enum SelftestCompile {
    static let architectures = [75, 80, 90]

    static func run(json: Bool) throws {
        let compiler = try KernelCompiler.open()
        let sources = CUDABackend.allSources
        let dump = ProcessInfo.processInfo.environment["HASTE_CUDA_DUMP_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        if let dump, !FileManager.default.fileExists(atPath: dump) {
            throw ValidationError("HASTE_CUDA_DUMP_DIR=\(dump): no such folder (create it, or unset HASTE_CUDA_DUMP_DIR)")
        }
        let compiled = try compiler.compileAll(sources, architectures: architectures, dumpDirectory: dump)
        let kernels = sources.reduce(0) { $0 + $1.kernels.count }
        let bytes = compiled.reduce(0) { $0 + $1.bytes }
        if json {
            let object: [String: Any] = [
                "nvrtc": "\(compiler.nvrtc.version)", "nvrtc_path": compiler.nvrtc.path, "architectures": architectures,
                "families": sources.count, "kernels": kernels, "images": compiled.count, "cubin_bytes": bytes,
                "passed": true,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("NVRTC \(compiler.nvrtc.version) (\(compiler.nvrtc.path))")
        for family in sources {
            let images = compiled.filter { $0.family == family.family }
            print("  \(family.family): \(family.kernels.count) kernels, "
                  + images.map { "sm_\($0.arch) \($0.bytes) B" }.joined(separator: ", "))
        }
        print("PASS: \(kernels) kernels in \(sources.count) families compiled for "
              + architectures.map { "sm_\($0)" }.joined(separator: " and ") + " (\(compiled.count) CUBIN images, \(bytes) bytes)")
    }
}
