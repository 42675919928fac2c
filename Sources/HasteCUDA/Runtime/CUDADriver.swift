#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import HasteTensor

/// `GPUDriver` over the CUDA driver API, NVRTC and cuBLAS loaded at run time (STYLE §2.5): the device's primary
/// context, one non-blocking stream for every copy, kernel and GEMM, CUBIN images from `KernelCompiler`.
///
/// Errors: a failed launch, queued copy or GEMM cannot throw through `GPUDriver`; the first one is kept and thrown
/// by the next `synchronize()` (later work is still queued: the stream's own error state stops it). A failed
/// device → host copy ends the process through `CUDABackend.fail`, since the host would read garbage.
public final class CUDADriver: GPUDriver {
    let api: DriverAPI
    let blas: CuBLASAPI
    public let compiler: KernelCompiler
    /// `cuda:<index>`'s ordinal, its primary context, the stream, the cuBLAS handle.
    public let index: Int
    let device: Int32
    let context: OpaquePointer
    let stream: OpaquePointer
    let blasHandle: OpaquePointer
    public let deviceDescription: String
    public let computeCapability: Int
    public let totalMemory: Int
    /// The most dynamic shared memory one block may opt into (CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN).
    public let maxSharedBytes: Int
    /// CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT.
    public let multiprocessors: Int
    /// Whether float32 GEMMs may use TF32 tensor cores (`--allow-tf32`).
    public private(set) var allowTF32: Bool

    private let lock = NSLock()
    private var pendingError: String?
    /// Dynamic shared memory each function is opted into beyond the default 48 KiB.
    private var sharedOptIn: [UnsafeMutableRawPointer: Int] = [:]
    /// `HASTE_CUDA_PROFILE=1`: GPU time per kernel, GEMM and copy (Runtime/KernelProfiler.swift).
    let profiler: KernelProfiler?
    /// `HASTE_CUDA_SHARED_CARVEOUT=<0…100>`: the shared-memory share of the L1/shared array (percent; 100 the most
    /// shared memory) asked for each kernel opted into more than 48 KiB of dynamic shared memory (the flash
    /// kernels), a hint the driver may override. Unset: no preference (the driver's choice), as before. For
    /// comparisons: the profile's occupancy column says how many blocks a multiprocessor then runs (a test sets
    /// it for its own task: `$sharedCarveout.withValue`).
    @TaskLocal static var sharedCarveout: Int? = carveout(ProcessInfo.processInfo.environment["HASTE_CUDA_SHARED_CARVEOUT"])

    /// `HASTE_CUDA_SHARED_CARVEOUT`'s value: nil unset or empty; a percent 0…100; anything else is refused with a
    /// message (once, on stderr) and ignored.
    static func carveout(_ text: String?) -> Int? {
        guard let text, !text.isEmpty else { return nil }
        if let v = Int(text), (0...100).contains(v) { return v }
        fputs("haste: HASTE_CUDA_SHARED_CARVEOUT=\(text) ignored: give a percent from 0 to 100 (100: the most shared memory), or unset it\n", stderr)
        return nil
    }
    /// The epilogue GEMMs (cuBLASLt), made on first use; `epilogueUnavailable` says why not where they cannot be
    /// (then every linear adds its bias by copy and beta 1, GELU and bias gradients run as kernels).
    private var epilogueGemms: EpilogueGemms?
    /// Host → device copies' pinned staging (`HASTE_CUDA_STAGING_MB`, Runtime/PinnedUploads.swift); nil where it is
    /// off or could not be made (`stagingNote` says why): each upload then waits for the stream.
    let staging: PinnedUploads?
    /// "asynchronous, through 64 MiB of pinned staging", or why uploads wait for the stream (the report's last line).
    public let stagingNote: String
    private var epilogueUnavailable: String?
    /// `timed`'s events, made at its first call (nil for good where they cannot be).
    private lazy var timer: StreamTimer? = try? StreamTimer(library: api.library)

    init(api: DriverAPI, blas: CuBLASAPI, compiler: KernelCompiler, index: Int, allowTF32: Bool, profile: Bool = false,
         stagingBytes: Int = PinnedUploads.defaultMiB << 20) throws {
        self.api = api; self.blas = blas; self.compiler = compiler; self.index = index; self.allowTF32 = allowTF32
        profiler = profile ? try KernelProfiler(library: api.library) : nil
        var dev: Int32 = 0
        try api.check(api.cuDeviceGet(&dev, Int32(index)), "cuDeviceGet(\(index))")
        device = dev
        func attribute(_ a: Int32, _ name: String) throws -> Int {
            var v: Int32 = 0
            try api.check(api.cuDeviceGetAttribute(&v, a, dev), "cuDeviceGetAttribute(\(name))")
            return Int(v)
        }
        computeCapability = try attribute(DriverAPI.attributeCCMajor, "compute capability major") * 10
            + attribute(DriverAPI.attributeCCMinor, "compute capability minor")
        maxSharedBytes = try attribute(DriverAPI.attributeSharedOptIn, "max shared memory per block opt-in")
        multiprocessors = Swift.max(1, try attribute(DriverAPI.attributeMultiprocessors, "multiprocessor count"))
        var bytes = 0
        try api.check(api.cuDeviceTotalMem(&bytes, dev), "cuDeviceTotalMem_v2")
        totalMemory = bytes
        deviceDescription = "\(CUDADriver.name(api, dev)) (sm_\(computeCapability), \(String(format: "%.1f", Double(bytes) / 1_073_741_824)) GiB)"
        var ctx: OpaquePointer?
        try api.check(api.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain(\(index))",
                      hint: "another process may hold the GPU in exclusive mode (nvidia-smi -q | grep 'Compute Mode')")
        context = ctx!
        try api.check(api.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        var s: OpaquePointer?
        try api.check(api.cuStreamCreate(&s, DriverAPI.streamNonBlocking), "cuStreamCreate")
        stream = s!
        var h: OpaquePointer?
        let created = blas.create(&h)
        guard created == 0, let handle = h else { throw CUDAError("cublasCreate_v2 failed: \(blas.describe(created)) (\(blas.library.path))") }
        blasHandle = handle
        let set = blas.setStream(handle, stream)
        guard set == 0 else { throw CUDAError("cublasSetStream_v2 failed: \(blas.describe(set))") }
        if stagingBytes == 0 {
            (staging, stagingNote) = (nil, "each waits for the GPU (\(PinnedUploads.environmentKey)=0)")
        } else {
            do {
                let ring = try PinnedUploads(library: api.library, bytes: stagingBytes, describe: api.describe)
                let size = ring.capacity >= 1 << 20 ? "\(ring.capacity >> 20) MiB" : "\(ring.capacity >> 10) KiB"
                (staging, stagingNote) = (ring, "asynchronous, through \(size) of pinned staging")
            } catch {
                (staging, stagingNote) = (nil, "each waits for the GPU: no pinned staging (\(error))")
            }
        }
        try setTF32(allowTF32)
    }

    static func name(_ api: DriverAPI, _ dev: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        return api.cuDeviceGetName(&buffer, Int32(buffer.count), dev) == 0 ? String(cString: buffer) : "CUDA device \(dev)"
    }

    /// TF32 tensor cores for float32 GEMMs (CUBLAS_TF32_TENSOR_OP_MATH) or plain float32 (CUBLAS_DEFAULT_MATH).
    public func setTF32(_ allowed: Bool) throws {
        let status = blas.setMathMode(blasHandle, allowed ? CuBLASAPI.tf32TensorOpMath : CuBLASAPI.defaultMath)
        guard status == 0 else { throw CUDAError("cublasSetMathMode failed: \(blas.describe(status))") }
        allowTF32 = allowed
    }

    /// Makes the context current on the calling thread (the backend may be used from several threads).
    @inline(__always) private func bind() { _ = api.cuCtxSetCurrent(context) }

    public var streamHandle: OpaquePointer? { stream }
    public func makeCurrent() { bind() }

    /// Keeps the first asynchronous error for `synchronize()`.
    private func record(_ message: String) {
        lock.lock(); defer { lock.unlock() }
        if pendingError == nil { pendingError = message }
    }

    private func takePending() -> String? {
        lock.lock(); defer { lock.unlock() }
        defer { pendingError = nil }
        return pendingError
    }

    // MARK: memory

    public func allocate(byteCount: Int) -> DevicePointer? {
        bind()
        var p: UInt64 = 0
        let r = api.cuMemAlloc(&p, byteCount)
        if r == DriverAPI.outOfMemory { return nil }
        guard r == DriverAPI.success else { CUDABackend.fail("cuda:\(index): cuMemAlloc_v2(\(byteCount) bytes) failed: \(api.describe(r))") }
        return p
    }

    public func free(_ address: DevicePointer) {
        bind()
        let r = api.cuMemFree(address)
        if r != DriverAPI.success { record("cuMemFree_v2 failed: \(api.describe(r))") }
    }

    /// Through the pinned staging ring where there is one (`PinnedUploads`: queued, not waited for); otherwise
    /// queued, then waited for: the host buffer is pageable memory, which the driver may still be reading after an
    /// asynchronous call returns, and the caller may reuse it at once.
    public func copy(fromHost host: UnsafeRawPointer, to dst: DevicePointer, byteCount: Int) {
        guard byteCount > 0 else { return }
        bind()
        if let staging {
            let failure = staging.upload(host, to: dst, byteCount: byteCount, stream: stream,
                                         copy: { api.cuMemcpyHtoDAsync($0, $1, $2, stream) },
                                         synchronize: { api.cuStreamSynchronize(stream) })
            if let failure { record(failure) }
            return
        }
        let r = api.cuMemcpyHtoDAsync(dst, host, byteCount, stream)
        if r != DriverAPI.success { record("cuMemcpyHtoDAsync_v2(\(byteCount) bytes) failed: \(api.describe(r))"); return }
        let w = api.cuStreamSynchronize(stream)
        if w != DriverAPI.success { record("cuStreamSynchronize after a host → device copy failed: \(api.describe(w))") }
    }

    public func copy(from src: DevicePointer, toHost host: UnsafeMutableRawPointer, byteCount: Int) {
        guard byteCount > 0 else { return }
        bind()
        let mark = staging?.mark
        var r = api.cuMemcpyDtoHAsync(host, src, byteCount, stream)
        if r == DriverAPI.success { r = api.cuStreamSynchronize(stream) }
        if r == DriverAPI.success, let mark { staging?.streamDrained(before: mark) }
        profiler?.collect()
        if r != DriverAPI.success {
            let earlier = takePending().map { " (after an earlier error: \($0))" } ?? ""
            CUDABackend.fail("cuda:\(index): device → host copy of \(byteCount) bytes failed: \(api.describe(r))\(earlier)")
        }
    }

    public func copy(from src: DevicePointer, to dst: DevicePointer, byteCount: Int) {
        guard byteCount > 0 else { return }
        bind()
        let start = profiler?.begin(stream)
        let r = api.cuMemcpyDtoDAsync(dst, src, byteCount, stream)
        profiler?.end("copy device → device", start, stream, .copy)
        if r != DriverAPI.success { record("cuMemcpyDtoDAsync_v2(\(byteCount) bytes) failed: \(api.describe(r))") }
    }

    // MARK: kernels

    public func load(_ source: KernelSource) throws -> [String: GPUFunction] {
        bind()
        let image = try compiler.image(for: source, arch: computeCapability)
        var module: OpaquePointer?
        try image.withUnsafeBytes {
            try api.check(api.cuModuleLoadData(&module, $0.baseAddress!), "cuModuleLoadData(\(source.family), sm_\(computeCapability))",
                          hint: "the NVIDIA driver may be older than NVRTC \(compiler.nvrtc.version) (\(compiler.nvrtc.path)); update the driver "
                          + "or use an NVRTC of the driver's CUDA version (HASTE_CUDA_LIB_DIR)")
        }
        var out: [String: GPUFunction] = [:]
        for name in source.kernels {
            var f: OpaquePointer?
            try api.check(api.cuModuleGetFunction(&f, module, name), "cuModuleGetFunction(\(source.family).\(name))")
            out[name] = GPUFunction(name: name, handle: UnsafeMutableRawPointer(f!))
        }
        return out
    }

    public func launch(_ function: GPUFunction, grid: Dim3, block: Dim3, sharedBytes: Int, arguments: [KernelArgument]) {
        bind()
        let what = "\(function.name) grid \(grid) block \(block) shared \(sharedBytes) B"
        let dims = [grid.x, grid.y, grid.z, block.x, block.y, block.z, sharedBytes]
        guard dims.allSatisfy({ $0 >= 0 && $0 <= Int(UInt32.max) }) else { record("launch of \(what): a dimension is out of range"); return }
        if sharedBytes > 48 * 1024 && (sharedOptIn[function.handle] ?? 0) < sharedBytes {
            guard sharedBytes <= maxSharedBytes else {
                record("launch of \(what): asks for more shared memory than \(deviceDescription) allows per block (\(maxSharedBytes) B)"); return
            }
            let r = api.cuFuncSetAttribute(OpaquePointer(function.handle), DriverAPI.functionMaxDynamicShared, Int32(sharedBytes))
            if r != DriverAPI.success { record("cuFuncSetAttribute(\(function.name), max dynamic shared \(sharedBytes) B) failed: \(api.describe(r))"); return }
            sharedOptIn[function.handle] = sharedBytes
            if let carveout = CUDADriver.sharedCarveout {
                let c = api.cuFuncSetAttribute(OpaquePointer(function.handle), DriverAPI.functionPreferredCarveout, Int32(carveout))
                if c != DriverAPI.success { record("cuFuncSetAttribute(\(function.name), shared carveout \(carveout) %) failed: \(api.describe(c))"); return }
            }
        }
        profiler?.noteOccupancy(function.name, OpaquePointer(function.handle), threads: block.x * block.y * block.z, sharedBytes: sharedBytes)
        let start = profiler?.begin(stream)
        let r = KernelArgumentPack.withParameters(arguments) { params in
            api.cuLaunchKernel(OpaquePointer(function.handle), UInt32(grid.x), UInt32(grid.y), UInt32(grid.z),
                               UInt32(block.x), UInt32(block.y), UInt32(block.z), UInt32(sharedBytes), stream, params, nil)
        }
        profiler?.end(function.name, start, stream, .kernel)
        if r != DriverAPI.success { record("launch of \(what) failed: \(api.describe(r))") }
    }

    public func gemm(_ g: GemmDescriptor) {
        guard g.m > 0 && g.n > 0 && g.batch > 0 else { return }   // nothing to compute (cuBLAS may reject lda 0 here)
        bind()
        let ints = [g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch]
        guard ints.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else {
            record("GEMM \(g.m)×\(g.n)×\(g.k) batch \(g.batch): a size exceeds cuBLAS's 32-bit int"); return
        }
        func ptr(_ a: DevicePointer) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(a)) }
        var alpha = g.alpha, beta = g.beta
        let ta = g.transA ? CuBLASAPI.opT : CuBLASAPI.opN, tb = g.transB ? CuBLASAPI.opT : CuBLASAPI.opN
        let status: Int32, name: String
        let start = profiler?.begin(stream)
        defer { profiler?.end("GEMM " + g.label, start, stream, .gemm) }
        if g.inputs == .float32 && g.output == .float32 {
            name = "cublasSgemmStridedBatched"
            status = blas.sgemmStridedBatched(blasHandle, ta, tb, Int32(g.m), Int32(g.n), Int32(g.k), &alpha,
                                              ptr(g.a), Int32(g.lda), Int64(g.strideA), ptr(g.b), Int32(g.ldb), Int64(g.strideB),
                                              &beta, ptr(g.c), Int32(g.ldc), Int64(g.strideC), Int32(g.batch))
        } else {
            guard GemmDescriptor.supports(inputs: g.inputs, output: g.output) else {
                record("GEMM \(g.inputs) × \(g.inputs) → \(g.output): not a combination cuBLAS is called with here"); return
            }
            name = "cublasGemmStridedBatchedEx(\(g.inputs) → \(g.output))"
            let ab = CuBLASAPI.dataType(g.inputs), c = CuBLASAPI.dataType(g.output)
            status = blas.gemmStridedBatchedEx(blasHandle, ta, tb, Int32(g.m), Int32(g.n), Int32(g.k), &alpha,
                                               ptr(g.a), ab, Int32(g.lda), Int64(g.strideA), ptr(g.b), ab, Int32(g.ldb), Int64(g.strideB),
                                               &beta, ptr(g.c), c, Int32(g.ldc), Int64(g.strideC), Int32(g.batch),
                                               CuBLASAPI.compute32F, CuBLASAPI.gemmDefault)
        }
        if status != 0 {
            record("\(name)(m \(g.m), n \(g.n), k \(g.k), batch \(g.batch), lda \(g.lda), ldb \(g.ldb), ldc \(g.ldc)) "
                   + "failed: \(blas.describe(status))")
        }
    }

    public func gemm(_ g: GemmDescriptor, epilogue: GemmEpilogue) -> Bool {
        guard g.batch == 1 && g.beta == 0 && g.m > 0 && g.n > 0 && g.k > 0 && GemmDescriptor.supports(inputs: g.inputs, output: g.output),
              [g.m, g.n, g.k, g.lda, g.ldb, g.ldc].allSatisfy({ $0 <= Int(Int32.max) }) else { return false }
        lock.lock(); defer { lock.unlock() }
        if epilogueUnavailable != nil { return false }
        bind()
        if epilogueGemms == nil {
            var p: UInt64 = 0
            do {
                let lt = try CuBLASLtAPI(blas.lt)
                let r = api.cuMemAlloc(&p, EpilogueGemms.workspaceBytes)
                guard r == DriverAPI.success else { p = 0; throw CUDAError("cuMemAlloc_v2 of the cuBLASLt workspace: \(api.describe(r))") }
                epilogueGemms = try EpilogueGemms(api: lt, workspace: p)
            } catch {
                if p != 0 { _ = api.cuMemFree(p) }
                epilogueUnavailable = "\(error)"
                return false
            }
        }
        let start = profiler?.begin(stream)
        let ran = epilogueGemms!.run(g, epilogue: epilogue, tf32: allowTF32, stream: stream)
        profiler?.end("GEMM " + g.label + " " + epilogue.label + (ran ? "" : " (refused)"), start, stream, ran ? .gemm : .copy)
        return ran
    }

    /// Why epilogue GEMMs were not used, where one was turned down ("…: no algorithm"), for the profile's
    /// readers (`report(steps:)`); nil where every one ran.
    public var epilogueNote: String? {
        lock.lock(); defer { lock.unlock() }
        return epilogueUnavailable ?? epilogueGemms?.firstRefusal
    }

    /// The work `body` queues, timed by a pair of events (`StreamTimer`); nil where they cannot be made.
    public func timed(_ body: () -> Void) -> Double? {
        bind()
        lock.lock()
        let t = timer
        lock.unlock()
        guard let t else { body(); return nil }
        return t.time(stream, body)
    }

    public func synchronize() throws {
        bind()
        let mark = staging?.mark
        let r = api.cuStreamSynchronize(stream)
        if r == DriverAPI.success, let mark { staging?.streamDrained(before: mark) }
        profiler?.collect()
        if let first = takePending() { throw CUDAError(first) }
        if r != DriverAPI.success {
            throw CUDAError("cuStreamSynchronize failed: \(api.describe(r)) (a kernel faulted: run with --device cpu to compare, "
                            + "or with CUDA_LAUNCH_BLOCKING=1 to find which)")
        }
    }
}

extension CUDADriver: LaunchStatistics {
    public var isCounting: Bool { profiler != nil }
    public func resetCounts() { profiler?.reset() }
    public var launchTotal: Int { profiler?.launches ?? 0 }
    public var gemmTotal: Int { profiler?.gemms ?? 0 }
    public func report(steps: Int) -> String {
        (profiler?.report(steps: steps) ?? "not profiled (HASTE_CUDA_PROFILE=1 times each kernel)")
            + (epilogueNote.map { "\nsome GEMM epilogues ran as separate kernels instead (cuBLASLt turned one down): \($0)" } ?? "")
            + "\nhost → device copies: \(stagingNote)"
    }
}
