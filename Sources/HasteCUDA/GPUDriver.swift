import HasteTensor

/// A device address (`CUdeviceptr`). Storage keeps it in `Storage.address` as pointer bits; only this module
/// converts between the two (`CUDABackend.address(_:)`).
public typealias DevicePointer = UInt64

/// A launch dimension (grid or block), CUDA's `dim3`.
public struct Dim3: Sendable, Equatable, CustomStringConvertible {
    public var x: Int, y: Int, z: Int
    public init(_ x: Int, _ y: Int = 1, _ z: Int = 1) { self.x = x; self.y = y; self.z = z }
    public var description: String { "(\(x), \(y), \(z))" }
}

/// One kernel argument, as the kernel's C signature declares it (`const float*` → `.pointer`, `long long` →
/// `.int64`, `int` → `.int32`, `float` → `.float`, `unsigned long long` → `.uint64`).
public enum KernelArgument: Sendable, Equatable {
    case pointer(DevicePointer)
    case int32(Int32)
    case int64(Int64)
    case uint64(UInt64)
    case float(Float)
    case double(Double)
}

/// CUDA C++ source of one kernel family: the `prelude` (`KernelSource.prelude`) is prepended when compiled.
/// Kernels are written in the subset both NVRTC and the test emulator accept (documented in `Prelude.swift`):
/// every entry point is `extern "C" __global__ void name(...)` (or made by the prelude's `HASTE_FLASH_ENTRIES`) and listed in `kernels`.
public struct KernelSource: Sendable, Hashable {
    public let family: String
    public let code: String
    public let kernels: [String]
    /// The oldest GPU architecture (major·10 + minor) the backend launches this family on: the bf16 tensor-core
    /// families need sm_80, so `compileAll` does not build them for older ones (whose fallback branches would
    /// take NVRTC minutes for code that never runs there).
    public let minimumArchitecture: Int
    public init(family: String, kernels: [String], code: String, minimumArchitecture: Int = 0) {
        self.family = family; self.kernels = kernels; self.code = code; self.minimumArchitecture = minimumArchitecture
    }
    /// What the compiler sees: the prelude, then the family's code.
    public var fullText: String { KernelSource.prelude + "\n" + code }
}

/// A loaded kernel entry point: a `CUfunction` on a GPU, a host trampoline in the emulator.
public struct GPUFunction: @unchecked Sendable {
    public let name: String
    public let handle: UnsafeMutableRawPointer
    public init(name: String, handle: UnsafeMutableRawPointer) { self.name = name; self.handle = handle }
}

/// A strided-batched GEMM in cuBLAS's column-major convention (`cublasSgemmStridedBatched`): for i < batch,
/// C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i], op(A) m×k, op(B) k×n, C m×n, leading dimensions and strides in
/// elements, addresses already offset. `CUDABackend.gemm` turns haste's row-major call into this one.
/// `inputs`/`output` are the operand and C dtypes: float32/float32 (`cublasSgemmStridedBatched`), or bfloat16
/// A and B with float32 or bfloat16 C (`cublasGemmStridedBatchedEx`, float32 compute: bf16 widens exactly, the
/// sums accumulate in float32, a bf16 C is rounded to nearest even once, after alpha and beta).
public struct GemmDescriptor: Sendable, Equatable {
    public var transA: Bool, transB: Bool
    public var m: Int, n: Int, k: Int
    public var alpha: Float, beta: Float
    public var a: DevicePointer, lda: Int, strideA: Int
    public var b: DevicePointer, ldb: Int, strideB: Int
    public var c: DevicePointer, ldc: Int, strideC: Int
    public var batch: Int
    public var inputs: DType, output: DType
    public init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, beta: Float,
                a: DevicePointer, lda: Int, strideA: Int, b: DevicePointer, ldb: Int, strideB: Int,
                c: DevicePointer, ldc: Int, strideC: Int, batch: Int, inputs: DType = .float32, output: DType = .float32) {
        self.transA = transA; self.transB = transB; self.m = m; self.n = n; self.k = k; self.alpha = alpha; self.beta = beta
        self.a = a; self.lda = lda; self.strideA = strideA; self.b = b; self.ldb = ldb; self.strideB = strideB
        self.c = c; self.ldc = ldc; self.strideC = strideC; self.batch = batch; self.inputs = inputs; self.output = output
    }

    /// "bfloat16→bfloat16 1152×16384×4608" (× batch when > 1): how the profile and the host-only counts name it.
    public var label: String { "\(inputs)→\(output) \(m)×\(n)×\(k)" + (batch > 1 ? " ×\(batch)" : "") }

    /// The dtype combinations the driver seam takes.
    public static func supports(inputs: DType, output: DType) -> Bool {
        (inputs == .float32 && output == .float32) || (inputs == .bfloat16 && (output == .float32 || output == .bfloat16))
    }
}

/// What a GEMM's epilogue does with its float32 result acc = alpha·op(A)·op(B) (m×n, column-major, batch 1,
/// beta 0) before D's one rounding to `output` (cuBLASLt's `cublasLtEpilogue_t`; a "row" is one of D's m rows,
/// a linear layer's output feature in haste's calls). geluTanh(u) = u/2·(1 + tanh(√(2/π)(u + 0.044715u³))), the
/// GELU of cuBLASLt's epilogues (PyTorch's `_addmm_activation` falls back to `gelu(approximate="tanh")`).
public enum GemmEpilogue: Sendable, Equatable {
    /// D = acc + bias[i] (`CUBLASLT_EPILOGUE_BIAS`, as PyTorch's `addmm`); bias of D's dtype.
    case bias(DevicePointer)
    /// u = acc + bias[i]; D = geluTanh(u) of the float32 u; where `preActivation` is given, u rounded to D's dtype
    /// is written there too, ld = ldc (`GELU_AUX_BIAS`; `GELU_BIAS` without it).
    case geluBias(bias: DevicePointer, preActivation: DevicePointer?)
    /// D = acc·geluTanh′(h), h the rounded pre-activation at `preActivation` (ld = ldc) read as float32; where
    /// `biasGradient` is given, its m elements (D's dtype) are the rounded float32 sums of each row's unrounded
    /// D values (`DGELU_BGRAD`; `DGELU` without it).
    case dgelu(preActivation: DevicePointer, biasGradient: DevicePointer?)
    /// D = acc, and the n elements at `biasGradient` (D's dtype) the rounded float32 sums of op(B)'s columns over
    /// k (`BGRADB`: a weight gradient dW = dYᵀ·X whose B is dY gives the bias gradient Σ_rows dY with it).
    case biasGradientB(DevicePointer)

    /// How the profile and the host-only counts name it: "+bias", "+gelu+bias(+aux)", "+dgelu(+bgrad)", "+bgradb".
    public var label: String {
        switch self {
        case .bias: return "+bias"
        case let .geluBias(_, aux): return "+gelu+bias" + (aux == nil ? "" : "+aux")
        case let .dgelu(_, bg): return "+dgelu" + (bg == nil ? "" : "+bgrad")
        case .biasGradientB: return "+bgradb"
        }
    }
}

/// The seam under `CUDABackend`: one device, one stream. `CUDADriver` implements it over the CUDA driver API,
/// NVRTC and cuBLAS loaded at run time; the tests' emulator implements it on the host (kernels compiled by
/// clang, run block by block), so every kernel and the backend's bookkeeping are tested without a GPU.
/// Work is queued in call order on the one stream; only `copy(from:toHost:)` and `synchronize` wait.
public protocol GPUDriver: AnyObject {
    /// For messages and `haste doctor`: "NVIDIA H200 (sm_90, 139.8 GiB)", "emulator".
    var deviceDescription: String { get }
    /// Compute capability as major·10 + minor (90 for sm_90): NVRTC compiles for it.
    var computeCapability: Int { get }
    /// Bytes of device memory in total.
    var totalMemory: Int { get }
    /// The most dynamic shared memory one block may use (the device's opt-in limit).
    var maxSharedBytes: Int { get }
    /// Streaming multiprocessors (132 on an H100 SXM or an H200): how many blocks run at once, for grid choices.
    var multiprocessors: Int { get }
    /// Whether float32 products may use TF32 tensor cores (`--tf32`, train's `--allow-tf32`): the GEMMs and the
    /// float32 flash forward without a gradient (CUDAFlashAttentionTF32.swift).
    var allowTF32: Bool { get }
    /// Raw allocation (the backend's caching allocator fronts it); nil when the device is out of memory.
    func allocate(byteCount: Int) -> DevicePointer?
    func free(_ address: DevicePointer)
    /// Host → device; the host buffer may be reused when this returns.
    func copy(fromHost host: UnsafeRawPointer, to dst: DevicePointer, byteCount: Int)
    /// Device → host after all queued work: the one place the host waits (with `synchronize`).
    func copy(from src: DevicePointer, toHost host: UnsafeMutableRawPointer, byteCount: Int)
    /// Device → device, queued.
    func copy(from src: DevicePointer, to dst: DevicePointer, byteCount: Int)
    /// Compiles (through the on-disk cache where there is one) and loads a family; returns its entry points by name.
    func load(_ source: KernelSource) throws -> [String: GPUFunction]
    /// Queues a kernel.
    func launch(_ function: GPUFunction, grid: Dim3, block: Dim3, sharedBytes: Int, arguments: [KernelArgument])
    /// Queues a strided-batched GEMM: float32 (TF32 tensor cores only when the driver was opened with them
    /// allowed), or bf16 operands with fp32 accumulation (`GemmDescriptor.inputs`/`output`).
    func gemm(_ g: GemmDescriptor)
    /// Queues a GEMM with a cuBLASLt epilogue (`batch` 1, `beta` 0, C written, not read; see `GemmEpilogue`).
    /// Returns false, with nothing queued, where the driver has no such GEMM for this problem: the caller then
    /// computes the same thing its other way (the plain GEMM and kernels).
    func gemm(_ g: GemmDescriptor, epilogue: GemmEpilogue) -> Bool
    /// Waits for the stream; throws the first asynchronous error since the last call.
    func synchronize() throws
    /// The stream, for a library that queues work on it itself (NCCL): a `CUstream`; nil in the emulator, whose
    /// calls run at once.
    var streamHandle: OpaquePointer? { get }
    /// Makes the device's context current on the calling thread, before such a library's calls.
    func makeCurrent()
    /// Runs `body`, which queues work, and gives the GPU's milliseconds from the first of that work to the end of the
    /// last, waiting for it; nil where the driver cannot time (the emulator, the host-only device), `body` run all the
    /// same. For `LaunchTuner`.
    func timed(_ body: () -> Void) -> Double?
}

extension GPUDriver {
    public var allowTF32: Bool { false }
    public var multiprocessors: Int { 132 }
    public func gemm(_ g: GemmDescriptor, epilogue: GemmEpilogue) -> Bool { false }
    public var streamHandle: OpaquePointer? { nil }
    public func makeCurrent() {}
    public func timed(_ body: () -> Void) -> Double? { body(); return nil }
}
