import Foundation
@testable import HasteCUDA

/// NVRTC for the runtime tests: the standard search (`HASTE_CUDA_LIB_DIR`, which Scripts/test.sh points at the
/// NVRTC that Scripts/fetch_nvrtc.sh fetched, …) plus this checkout's `.cache/nvrtc/lib`. nil, with a printed
/// warning, when there is none (offline and no CUDA): the compile tests then skip.
enum RuntimeTestSupport {
    static let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let search: CUDALibrarySearch = {
        let standard = CUDALibrarySearch.standard()
        let fetched = checkout.appendingPathComponent(".cache/nvrtc/lib").path
        return CUDALibrarySearch(places: standard.places + [.init(directory: fetched, origin: "checkout .cache/nvrtc")].filter {
            CUDALibrarySearch.isDirectory($0.directory)
        }, useLoader: true, considered: standard.considered)
    }()

    static let nvrtc: NVRTC? = {
        do { return try NVRTC.load(search: search) } catch {
            print("warning: NVRTC not found, CUDA kernel-compile tests skipped (run Scripts/fetch_nvrtc.sh, or set HASTE_CUDA_LIB_DIR): \(error)")
            return nil
        }
    }()

    /// Whether this machine has an NVIDIA driver (then "no driver" tests do not apply).
    static let hasDriver: Bool = {
        if case .success = CUDALibrarySearch.standard().load(["libcuda.so.1"]) { return true }
        return false
    }()

    /// A fresh empty folder under the test process's scratch root (`TestScratch`, removed when the process exits).
    static func temporaryFolder(_ tag: String) -> String {
        let path = TestScratch.root + "/haste-\(tag)-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
