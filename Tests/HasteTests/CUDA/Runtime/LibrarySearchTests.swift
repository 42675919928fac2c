import Foundation
import HasteTensor
import Testing
@testable import HasteCUDA

@Test func anEmptyFolderSearchNamesTheLibraryWhereItLookedAndTheFix() throws {
    let empty = RuntimeTestSupport.temporaryFolder("empty")
    defer { try? FileManager.default.removeItem(atPath: empty) }
    let search = CUDALibrarySearch(places: [.init(directory: empty, origin: "HASTE_CUDA_LIB_DIR")], useLoader: false,
                                   considered: ["HASTE_CUDA_LIB_DIR=\(empty)"])
    guard case .failure(let miss) = search.load(CUDALibraryKind.driver.names()) else {
        Issue.record("libcuda.so.1 found in an empty folder"); return
    }
    let text = "\(CUDALibraryKind.driver.unavailable(miss))"
    for part in ["the CUDA driver (libcuda.so.1)", "\(empty) (HASTE_CUDA_LIB_DIR)", "searched: HASTE_CUDA_LIB_DIR=\(empty)",
                 "install the NVIDIA driver", "--device cpu"] {
        #expect(text.contains(part), "'\(part)' missing from: \(text)")
    }
    let nvrtc = "\(CUDALibraryKind.nvrtc.unavailable(miss))"
    #expect(nvrtc.contains("pip install torch") && nvrtc.contains("HASTE_CUDA_LIB_DIR"), "\(nvrtc)")
}

@Test func aFileThatIsNotALibraryIsReportedWithTheLoadersReason() throws {
    let dir = RuntimeTestSupport.temporaryFolder("garbage")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try Data("not an ELF file".utf8).write(to: URL(fileURLWithPath: "\(dir)/libcuda.so.1"))
    let search = CUDALibrarySearch(places: [.init(directory: dir, origin: "test")], useLoader: false)
    guard case .failure(let miss) = search.load(["libcuda.so.1"]) else { Issue.record("a text file loaded as libcuda.so.1"); return }
    #expect(miss.failures.count == 1 && miss.failures[0].hasPrefix("\(dir)/libcuda.so.1: "), "\(miss.failures)")
    #expect(miss.detail.contains("could not load: \(dir)/libcuda.so.1"), "\(miss.detail)")
}

@Test func theStandardSearchOrderIsOverrideLibraryPathPythonEnvironmentsThenToolkits() throws {
    let root = RuntimeTestSupport.temporaryFolder("order")
    defer { try? FileManager.default.removeItem(atPath: root) }
    let fm = FileManager.default
    func mkdir(_ p: String) -> String { try! fm.createDirectory(atPath: "\(root)/\(p)", withIntermediateDirectories: true); return "\(root)/\(p)" }
    let override = mkdir("override"), ld1 = mkdir("ld1"), ld2 = mkdir("ld2")
    let venvBlas = mkdir("venv/lib/python3.11/site-packages/nvidia/cublas/lib")
    let venvNvrtc = mkdir("venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib")
    let condaLib = mkdir("conda/lib")
    let pathPython = mkdir("py/lib/python3.12/dist-packages/nvidia/cu13/lib")
    let userSite = mkdir("home/.local/lib/python3.10/site-packages/nvidia/cublas/lib")
    _ = mkdir("py/bin")
    _ = fm.createFile(atPath: "\(root)/py/bin/python3", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
    let env = ["HASTE_CUDA_LIB_DIR": override, "LD_LIBRARY_PATH": "\(ld1):\(root)/missing:\(override):\(ld2)",
               "VIRTUAL_ENV": "\(root)/venv", "CONDA_PREFIX": "\(root)/conda", "PATH": "\(root)/nowhere:\(root)/py/bin",
               "HOME": "\(root)/home"]
    let search = CUDALibrarySearch.standard(environment: env)
    let ours = search.places.filter { $0.directory.hasPrefix(root) }
    #expect(ours.map(\.directory) == [override, ld1, ld2, venvBlas, venvNvrtc, condaLib, pathPython, userSite], "\(ours)")
    #expect(ours.first?.origin == "HASTE_CUDA_LIB_DIR" && ours[1].origin == "LD_LIBRARY_PATH")
    #expect(ours[3].origin.contains("VIRTUAL_ENV") && ours[6].origin.contains("python3 on PATH") && ours[7].origin.contains("pip --user"))
    // Toolkits come after every Python environment, and the system loader last.
    if let toolkit = search.places.firstIndex(where: { $0.origin == "CUDA toolkit" }) {
        #expect(toolkit > search.places.firstIndex(where: { $0.directory == userSite })!)
    }
    #expect(search.considered.last?.contains("system loader") == true && search.useLoader)
    #expect(CUDALibrarySearch.versionOrder("/usr/local/cuda-12.10/lib64", "/usr/local/cuda-12.9/lib64"))

    let bare = CUDALibrarySearch.standard(environment: ["PATH": "\(root)/nowhere"])
    #expect(bare.considered.starts(with: ["HASTE_CUDA_LIB_DIR unset", "LD_LIBRARY_PATH unset"]), "\(bare.considered)")
}

@Test func libraryNamesFollowTheDriversCUDAMajor() throws {
    #expect(CUDALibraryKind.nvrtc.names() == ["libnvrtc.so.13", "libnvrtc.so.12"])
    #expect(CUDALibraryKind.cublas.names(maxMajor: 12) == ["libcublas.so.12"])
    #expect(CUDALibraryKind.cublasLt.names(maxMajor: 13) == ["libcublasLt.so.13", "libcublasLt.so.12"])
    #expect(CUDALibraryKind.driver.names(maxMajor: 11) == ["libcuda.so.1"])
    #expect(DriverAPI.versionString(12080) == "12.8" && DriverAPI.versionString(13000) == "13.0")
    #expect(throws: HasteError.self) { _ = try NVRTC.load(search: RuntimeTestSupport.search, maxMajor: 11) }
}

@Test func theFirstFolderHoldingALibraryWins() throws {
    guard let nvrtc = RuntimeTestSupport.nvrtc else { return }
    let a = RuntimeTestSupport.temporaryFolder("first"), b = RuntimeTestSupport.temporaryFolder("second")
    defer { for d in [a, b] { try? FileManager.default.removeItem(atPath: d) } }
    for d in [a, b] { try FileManager.default.createSymbolicLink(atPath: "\(d)/libnvrtc.so.12", withDestinationPath: nvrtc.path) }
    let search = CUDALibrarySearch(places: [.init(directory: a, origin: "first"), .init(directory: b, origin: "second")], useLoader: false)
    guard case .success(let hit) = search.load(CUDALibraryKind.nvrtc.names()) else { Issue.record("not found"); return }
    #expect(hit.path == "\(a)/libnvrtc.so.12" && hit.origin == "first")
    let loaded = try NVRTC.load(search: search)
    #expect(loaded.path == "\(a)/libnvrtc.so.12" && loaded.major >= 12, "\(loaded.path) \(loaded.version)")
}
