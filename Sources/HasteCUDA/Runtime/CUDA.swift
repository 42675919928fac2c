import Foundation
import HasteTensor

/// Opening CUDA devices (STYLE §2.5): `CUDA.open(index:allowTF32:)` loads the driver, NVRTC and cuBLAS at run time,
/// creates the device's `CUDADriver` and registers a `CUDABackend` for `.cuda(index)`; `CUDA.probe()` reports
/// for `haste doctor` what was found and what is missing, and never fails.
public enum CUDA {
    /// The libraries, loaded once per process by the first successful `open`.
    struct Libraries {
        let api: DriverAPI
        let nvrtc: NVRTC
        let blas: CuBLASAPI
        let driverVersion: Int32
        let deviceCount: Int
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var libraries: Libraries?
    nonisolated(unsafe) private static var drivers: [Int: CUDADriver] = [:]

    /// Opens `cuda:<index>` (idempotent: a second call returns the same device, with `allowTF32` applied) and
    /// registers its backend. Throws, never traps, when a library, a symbol or the device is missing: the error
    /// names what, where haste looked, and how to fix it.
    public static func open(index: Int, allowTF32: Bool = false,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Device {
        lock.lock(); defer { lock.unlock() }
        if let d = drivers[index] {
            try d.setTF32(allowTF32)
            return .cuda(index)
        }
        let stagingBytes = PinnedUploads.configuredBytes(environment[PinnedUploads.environmentKey])
        if environment["HASTE_CUDA_HOST_ONLY"] == "1" {        // a diagnostic: HostOnlyDriver.swift
            if !(Backends.registered(.cuda(index)) is CUDABackend) {
                fputs("haste: HASTE_CUDA_HOST_ONLY=1: cuda:\(index) queues nothing and reads zeros; only host-side times and counts mean anything\n", stderr)
                Backends.register(CUDABackend(driver: HostOnlyDriver(asynchronousUploads: stagingBytes > 0), device: .cuda(index)),
                                  for: .cuda(index))
            }
            ((Backends.registered(.cuda(index)) as? CUDABackend)?.driver as? HostOnlyDriver)?.allowTF32 = allowTF32
            return .cuda(index)
        }
        let libs = try libraries ?? load(environment)
        libraries = libs
        try checkIndex(index, libs, environment)
        let compiler = KernelCompiler(nvrtc: libs.nvrtc, cacheDirectory: KernelCompiler.defaultCacheDirectory(environment: environment))
        let profile = environment["HASTE_CUDA_PROFILE"] == "1"
        let driver = try CUDADriver(api: libs.api, blas: libs.blas, compiler: compiler, index: index, allowTF32: allowTF32, profile: profile,
                                    stagingBytes: stagingBytes)
        if profile { fputs("haste: HASTE_CUDA_PROFILE=1: cuda:\(index) times every kernel, GEMM and copy with CUDA events\n", stderr) }
        drivers[index] = driver
        Backends.register(CUDABackend(driver: driver, device: .cuda(index)), for: .cuda(index))
        return .cuda(index)
    }

    /// The driver of an opened device (nil before `open`).
    public static func driver(index: Int) -> CUDADriver? {
        lock.lock(); defer { lock.unlock() }
        return drivers[index]
    }

    /// Throws for an index beyond the devices, listing them.
    static func checkIndex(_ index: Int, _ libs: Libraries, _ environment: [String: String]) throws {
        guard index < 0 || index >= libs.deviceCount else { return }
        let list = (0..<libs.deviceCount).map { "cuda:\($0) \(describeDevice(libs.api, Int32($0)))" }
        throw HasteError.unsupported("--device cuda:\(index): this machine has \(libs.deviceCount) CUDA device\(libs.deviceCount == 1 ? "" : "s")"
                                     + (list.isEmpty ? "" : ": " + list.joined(separator: ", ")) + visibleDevicesNote(environment)
                                     + "\nhint: pick one of those, or run with --device cpu")
    }

    static func visibleDevicesNote(_ environment: [String: String]) -> String {
        environment["CUDA_VISIBLE_DEVICES"].map { " (CUDA_VISIBLE_DEVICES=\($0) limits what this process sees)" } ?? ""
    }

    /// Loads the driver and initializes it, then NVRTC and cuBLAS no newer than the driver's CUDA major.
    static func load(_ environment: [String: String]) throws -> Libraries {
        let search = CUDALibrarySearch.standard(environment: environment)
        let api: DriverAPI
        switch search.load(CUDALibraryKind.driver.names()) {
        case .success(let lib): api = try DriverAPI(lib)
        case .failure(let miss): throw CUDALibraryKind.driver.unavailable(miss)
        }
        var version: Int32 = 0
        _ = api.cuDriverGetVersion(&version)
        let initialized = api.cuInit(0)
        guard initialized == DriverAPI.success else {
            let what = initialized == DriverAPI.noDevice ? "no CUDA device is visible" : "the CUDA driver did not initialize"
            throw HasteError.unsupported("--device cuda: \(what): cuInit returned \(api.describe(initialized)) "
                                         + "(driver \(api.library.path), CUDA \(DriverAPI.versionString(version)))\(visibleDevicesNote(environment)).\n"
                                         + "hint: check the GPU with nvidia-smi (a driver/kernel-module mismatch needs a reboot or a driver reinstall), "
                                         + "or run with --device cpu")
        }
        var count: Int32 = 0
        try api.check(api.cuDeviceGetCount(&count), "cuDeviceGetCount")
        let major = Int(version / 1000)
        let nvrtc = try NVRTC.load(search: search, maxMajor: major)
        let blas = try CuBLASAPI.load(search: search, maxMajor: major)
        return Libraries(api: api, nvrtc: nvrtc, blas: blas, driverVersion: version, deviceCount: Int(count))
    }

    /// "NVIDIA H200 (sm_90, 139.8 GiB)" without creating a context.
    static func describeDevice(_ api: DriverAPI, _ ordinal: Int32) -> String {
        var dev: Int32 = 0, ma: Int32 = 0, mi: Int32 = 0, bytes = 0
        guard api.cuDeviceGet(&dev, ordinal) == 0 else { return "(cuDeviceGet failed)" }
        _ = api.cuDeviceGetAttribute(&ma, DriverAPI.attributeCCMajor, dev)
        _ = api.cuDeviceGetAttribute(&mi, DriverAPI.attributeCCMinor, dev)
        _ = api.cuDeviceTotalMem(&bytes, dev)
        return "\(CUDADriver.name(api, dev)) (sm_\(ma)\(mi), \(String(format: "%.1f", Double(bytes) / 1_073_741_824)) GiB)"
    }

    /// A doctor line for a library not found: its names, the fix, and any file present that would not load.
    static func missing(_ kind: CUDALibraryKind, _ miss: LibraryNotFound) -> String {
        let label = ["the CUDA driver": "driver", "NVRTC": "nvrtc", "cuBLAS": "cublas", "cuBLASLt": "cublasLt", "NCCL": "nccl"][kind.rawValue]!
        let real = miss.failures.filter { !$0.hasSuffix("cannot open shared object file: No such file or directory") }
        return "\(label): not found (\(miss.names.joined(separator: " or "))); to fix: \(kind.fix)"
            + (real.isEmpty ? "" : "; could not load: " + real.joined(separator: "; "))
    }

    /// `haste doctor`'s CUDA section, one line per item: each library (where found, version) or what is missing
    /// and how to fix it, the devices, the kernel cache. Never throws and never ends the process.
    public static func probe(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        let search = CUDALibrarySearch.standard(environment: environment)
        var lines = ["search: " + search.considered.joined(separator: "; ")]
        var maxMajor: Int? = nil, api: DriverAPI? = nil
        switch search.load(CUDALibraryKind.driver.names()) {
        case .success(let lib):
            do {
                let a = try DriverAPI(lib)
                var version: Int32 = 0
                _ = a.cuDriverGetVersion(&version)
                maxMajor = Int(version / 1000)
                api = a
                lines.append("driver: \(lib.path) (\(lib.origin)), CUDA \(DriverAPI.versionString(version))")
            } catch { lines.append("driver: \(lib.path): \(error)") }
        case .failure(let miss):
            lines.append(missing(.driver, miss))
        }
        switch search.load(CUDALibraryKind.nvrtc.names(maxMajor: maxMajor)) {
        case .failure(let miss): lines.append(missing(.nvrtc, miss))
        case .success:
            do {
                let n = try NVRTC.load(search: search, maxMajor: maxMajor)
                lines.append("nvrtc: \(n.path) (\(n.library.origin)), NVRTC \(n.version)")
            } catch { lines.append("nvrtc: unusable — \(error)") }
        }
        switch search.load(CUDALibraryKind.cublas.names(maxMajor: maxMajor)) {
        case .failure(let miss): lines.append(missing(.cublas, miss))
        case .success:
            do {
                let b = try CuBLASAPI.load(search: search, maxMajor: maxMajor)
                lines.append("cublas: \(b.library.path) (\(b.library.origin)), cuBLAS \(b.version); cublasLt: \(b.lt.path)")
            } catch { lines.append("cublas: unusable — \(error)") }
        }
        lines.append(NCCL.probe(environment: environment))
        if let api {
            let initialized = api.cuInit(0)
            var count: Int32 = 0
            if initialized != DriverAPI.success {
                lines.append("devices: none (cuInit: \(api.describe(initialized)))\(visibleDevicesNote(environment))")
            } else if api.cuDeviceGetCount(&count) == 0 {
                lines.append("devices: \(count == 0 ? "none" : (0..<count).map { "cuda:\($0) \(describeDevice(api, $0))" }.joined(separator: ", "))")
            }
        } else {
            lines.append("devices: none (no driver)")
        }
        let cache = KernelCompiler.defaultCacheDirectory(environment: environment)
        let images = ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).filter { $0.hasSuffix(".cubin") }.count
        lines.append("kernel cache: \(cache) (\(images) image\(images == 1 ? "" : "s"))")
        return lines
    }
}
