#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import HasteTensor

extension CUDALibrarySearch.Loaded {
    /// The exported function `name` as the C type `F` (STYLE §2.5: by exported name, `_v2` included: `dlsym` sees
    /// no header macros). A missing one names the library, the symbol and the likely cause.
    func symbol<F>(_ name: String, _ kind: CUDALibraryKind, as _: F.Type = F.self) throws -> F {
        guard let raw = dlsym(handle, name) else {
            throw kind.missingSymbol(name, in: path)
        }
        return unsafeBitCast(raw, to: F.self)
    }
}

/// The CUDA driver API functions haste calls, resolved once from `libcuda.so.1` (cuda.h signatures: `CUresult`
/// is a C enum (Int32), `CUdevice` an int, `CUdeviceptr` an unsigned long long, handles opaque pointers,
/// `size_t` Int).
struct DriverAPI {
    typealias Handle = OpaquePointer
    typealias Result = Int32

    static let success: Result = 0
    static let outOfMemory: Result = 2           // CUDA_ERROR_OUT_OF_MEMORY
    static let noDevice: Result = 100            // CUDA_ERROR_NO_DEVICE
    static let attributeMultiprocessors: Int32 = 16        // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    static let attributeCCMajor: Int32 = 75                // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    static let attributeCCMinor: Int32 = 76                // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    static let attributeSharedOptIn: Int32 = 97            // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    static let functionLocalBytes: Int32 = 3               // CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
    static let functionRegisters: Int32 = 4                // CU_FUNC_ATTRIBUTE_NUM_REGS
    static let functionMaxDynamicShared: Int32 = 8         // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    static let functionPreferredCarveout: Int32 = 9        // CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
    static let streamNonBlocking: UInt32 = 1               // CU_STREAM_NON_BLOCKING

    let library: CUDALibrarySearch.Loaded
    let cuInit: @convention(c) (UInt32) -> Result
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    let cuDeviceTotalMem: @convention(c) (UnsafeMutablePointer<Int>, Int32) -> Result
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle?>, Int32) -> Result
    let cuCtxSetCurrent: @convention(c) (Handle?) -> Result
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<Handle?>, UInt32) -> Result
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Result
    let cuMemFree: @convention(c) (UInt64) -> Result
    let cuMemcpyHtoDAsync: @convention(c) (UInt64, UnsafeRawPointer?, Int, Handle?) -> Result
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer?, UInt64, Int, Handle?) -> Result
    let cuMemcpyDtoDAsync: @convention(c) (UInt64, UInt64, Int, Handle?) -> Result
    let cuStreamSynchronize: @convention(c) (Handle?) -> Result
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeRawPointer) -> Result
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle?>, Handle?, UnsafePointer<CChar>) -> Result
    /// (f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, stream, kernelParams, extra)
    let cuLaunchKernel: @convention(c) (Handle?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result
    let cuFuncSetAttribute: @convention(c) (Handle?, Int32, Int32) -> Result
    let cuGetErrorString: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    let cuGetErrorName: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result

    init(_ lib: CUDALibrarySearch.Loaded) throws {
        library = lib
        let k = CUDALibraryKind.driver
        cuInit = try lib.symbol("cuInit", k); cuDriverGetVersion = try lib.symbol("cuDriverGetVersion", k)
        cuDeviceGetCount = try lib.symbol("cuDeviceGetCount", k); cuDeviceGet = try lib.symbol("cuDeviceGet", k)
        cuDeviceGetAttribute = try lib.symbol("cuDeviceGetAttribute", k); cuDeviceGetName = try lib.symbol("cuDeviceGetName", k)
        cuDeviceTotalMem = try lib.symbol("cuDeviceTotalMem_v2", k)
        cuDevicePrimaryCtxRetain = try lib.symbol("cuDevicePrimaryCtxRetain", k); cuCtxSetCurrent = try lib.symbol("cuCtxSetCurrent", k)
        cuStreamCreate = try lib.symbol("cuStreamCreate", k)
        cuMemAlloc = try lib.symbol("cuMemAlloc_v2", k); cuMemFree = try lib.symbol("cuMemFree_v2", k)
        cuMemcpyHtoDAsync = try lib.symbol("cuMemcpyHtoDAsync_v2", k); cuMemcpyDtoHAsync = try lib.symbol("cuMemcpyDtoHAsync_v2", k)
        cuMemcpyDtoDAsync = try lib.symbol("cuMemcpyDtoDAsync_v2", k); cuStreamSynchronize = try lib.symbol("cuStreamSynchronize", k)
        cuModuleLoadData = try lib.symbol("cuModuleLoadData", k); cuModuleGetFunction = try lib.symbol("cuModuleGetFunction", k)
        cuLaunchKernel = try lib.symbol("cuLaunchKernel", k); cuFuncSetAttribute = try lib.symbol("cuFuncSetAttribute", k)
        cuGetErrorString = try lib.symbol("cuGetErrorString", k); cuGetErrorName = try lib.symbol("cuGetErrorName", k)
    }

    /// "CUDA_ERROR_OUT_OF_MEMORY (2): out of memory".
    func describe(_ r: Result) -> String {
        var name: UnsafePointer<CChar>?, text: UnsafePointer<CChar>?
        _ = cuGetErrorName(r, &name); _ = cuGetErrorString(r, &text)
        return "\(name.map { String(cString: $0) } ?? "CUresult") (\(r))" + (text.map { ": " + String(cString: $0) } ?? "")
    }

    /// Throws `call` failed with the driver's own words and `hint`.
    func check(_ r: Result, _ call: String, hint: String = "") throws {
        guard r != DriverAPI.success else { return }
        throw CUDAError("\(call) failed: \(describe(r))" + (hint.isEmpty ? "" : "\nhint: \(hint)"))
    }

    /// "12.8" from cuDriverGetVersion's 12080 (the newest CUDA this driver runs).
    static func versionString(_ v: Int32) -> String { "\(v / 1000).\((v % 1000) / 10)" }
}

/// A CUDA call that failed (launch, copy, compile, cuBLAS): what was called and the library's message.
public struct CUDAError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
