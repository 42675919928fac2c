#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import HasteTensor

/// The cuBLAS functions haste calls, resolved once from `libcublas.so.<major>` (cublas_api.h signatures:
/// `cublasStatus_t` and the enums are C enums (Int32), the handle and `cudaStream_t` opaque pointers, strides
/// `long long`). `libcublasLt.so.<major>` (its dependency) is loaded first from the same folder, so that
/// libcublas's `DT_NEEDED` entry resolves to it by soname wherever the folder is.
struct CuBLASAPI {
    typealias Handle = OpaquePointer
    static let opN: Int32 = 0, opT: Int32 = 1                 // CUBLAS_OP_N, CUBLAS_OP_T
    static let defaultMath: Int32 = 0                         // CUBLAS_DEFAULT_MATH: float32 GEMMs compute in float32
    static let tf32TensorOpMath: Int32 = 3                    // CUBLAS_TF32_TENSOR_OP_MATH: float32 GEMMs may use TF32
    static let r32F: Int32 = 0, r16BF: Int32 = 14              // cudaDataType CUDA_R_32F, CUDA_R_16BF
    static let compute32F: Int32 = 68                         // CUBLAS_COMPUTE_32F
    static let gemmDefault: Int32 = -1                        // CUBLAS_GEMM_DEFAULT
    static let propertyMajor: Int32 = 0, propertyMinor: Int32 = 1, propertyPatch: Int32 = 2   // libraryPropertyType

    let library: CUDALibrarySearch.Loaded
    let lt: CUDALibrarySearch.Loaded
    let create: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    let setStream: @convention(c) (Handle?, OpaquePointer?) -> Int32
    let setMathMode: @convention(c) (Handle?, Int32) -> Int32
    /// (handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batchCount)
    let sgemmStridedBatched: @convention(c) (Handle?, Int32, Int32, Int32, Int32, Int32, UnsafePointer<Float>,
                                             UnsafeRawPointer?, Int32, Int64, UnsafeRawPointer?, Int32, Int64,
                                             UnsafePointer<Float>, UnsafeMutableRawPointer?, Int32, Int64, Int32) -> Int32
    /// (handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc,
    /// strideC, batchCount, computeType, algo); alpha and beta are float for CUBLAS_COMPUTE_32F.
    let gemmStridedBatchedEx: @convention(c) (Handle?, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer,
                                              UnsafeRawPointer?, Int32, Int32, Int64, UnsafeRawPointer?, Int32, Int32, Int64,
                                              UnsafeRawPointer, UnsafeMutableRawPointer?, Int32, Int32, Int64, Int32, Int32, Int32) -> Int32
    let getStatusString: @convention(c) (Int32) -> UnsafePointer<CChar>?
    let getProperty: @convention(c) (Int32, UnsafeMutablePointer<Int32>) -> Int32

    /// Finds cuBLASLt and cuBLAS of one major (none newer than `maxMajor`), Lt first, in the same folder when
    /// the folder search finds cuBLAS.
    static func load(search: CUDALibrarySearch, maxMajor: Int?) throws -> CuBLASAPI {
        let blasNames = CUDALibraryKind.cublas.names(maxMajor: maxMajor)
        guard !blasNames.isEmpty else {
            throw HasteError.unsupported("--device cuda: the driver runs CUDA \(maxMajor ?? 0).x, older than any cuBLAS haste knows."
                                                + "\nhint: update the NVIDIA driver, or run with --device cpu")
        }
        for place in search.places {
            for name in blasNames where FileManager.default.fileExists(atPath: "\(place.directory)/\(name)") {
                let major = String(name.split(separator: ".").last!)
                let one = CUDALibrarySearch(places: [place], useLoader: true, considered: search.considered)
                let lt = try loaded(one.load(["libcublasLt.so.\(major)"], global: true), .cublasLt)
                return try CuBLASAPI(library: loaded(one.load([name]), .cublas), lt: lt)
            }
        }
        // Through the loader alone: the Lt of the cuBLAS found.
        let lt = try loaded(search.load(CUDALibraryKind.cublasLt.names(maxMajor: maxMajor), global: true), .cublasLt)
        let major = String(lt.path.split(separator: "/").last!.split(separator: ".").last!)
        return try CuBLASAPI(library: loaded(search.load(["libcublas.so.\(major)"]), .cublas), lt: lt)
    }

    private static func loaded(_ r: Result<CUDALibrarySearch.Loaded, LibraryNotFound>, _ kind: CUDALibraryKind) throws -> CUDALibrarySearch.Loaded {
        switch r {
        case .success(let l): return l
        case .failure(let miss): throw kind.unavailable(miss)
        }
    }

    init(library lib: CUDALibrarySearch.Loaded, lt: CUDALibrarySearch.Loaded) throws {
        library = lib; self.lt = lt
        let k = CUDALibraryKind.cublas
        create = try lib.symbol("cublasCreate_v2", k); setStream = try lib.symbol("cublasSetStream_v2", k)
        setMathMode = try lib.symbol("cublasSetMathMode", k); sgemmStridedBatched = try lib.symbol("cublasSgemmStridedBatched", k)
        gemmStridedBatchedEx = try lib.symbol("cublasGemmStridedBatchedEx", k)
        getStatusString = try lib.symbol("cublasGetStatusString", k); getProperty = try lib.symbol("cublasGetProperty", k)
    }

    /// "12.8.4" (no handle or GPU needed).
    var version: String {
        var ma: Int32 = 0, mi: Int32 = 0, pa: Int32 = 0
        _ = getProperty(CuBLASAPI.propertyMajor, &ma); _ = getProperty(CuBLASAPI.propertyMinor, &mi); _ = getProperty(CuBLASAPI.propertyPatch, &pa)
        return "\(ma).\(mi).\(pa)"
    }

    /// The cudaDataType of a GEMM operand dtype (float32 or bfloat16: `GemmDescriptor.supports`).
    static func dataType(_ d: DType) -> Int32 { d == .bfloat16 ? r16BF : r32F }

    func describe(_ status: Int32) -> String {
        (getStatusString(status).map { String(cString: $0) } ?? "cublasStatus_t") + " (\(status))"
    }
}
