import Foundation
import HasteTensor
import Testing
@testable import HasteCUDA

/// A stand-in `libcuda.so.1`, `libcublas.so.12` and `libcublasLt.so.12`, compiled from C at test time: every
/// function `CUDADriver` resolves, with cuda.h's C signatures, "device memory" in host memory, and globals that
/// record what was called. It checks the real driver code on the CPU: symbol names, the C ABI of each call
/// (argument order, `void**` kernel parameters, cuBLAS's strided-batched GEMM computed here in column-major),
/// TF32 math mode, the stream every call goes to, and errors kept for `synchronize()`.
let fakeDriverSource = #"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef int CUresult;
#define STREAM ((void*)0x5157)
int fake_stream_flags = -1, fake_images = 0, fake_launches = 0, fake_attr_calls = 0, fake_attr = 0, fake_attr_value = 0;
int fake_fail_next_launch = 0, fake_sync_result = 0, fake_wrong_stream = 0, fake_param_count = 0, fake_stream_syncs = 0;
/* Pinned memory's asynchronous copies (fakeStagingSource, after this). */
static int fake_defer(uint64_t dst, const void* src, size_t n);
static void fake_run_all(void);
static void fake_note_event(void* e, int timing);
unsigned fake_dims[7];
uint64_t fake_params[16];
char fake_kernel[64];
CUresult cuInit(unsigned flags) { return flags == 0 ? 0 : 1; }
CUresult cuDriverGetVersion(int* v) { *v = 12080; return 0; }
CUresult cuDeviceGetCount(int* n) { *n = 2; return 0; }
CUresult cuDeviceGet(int* d, int ordinal) { if (ordinal < 0 || ordinal > 1) return 101; *d = ordinal; return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
    *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 97 ? 232448 : attr == 16 ? 132 : 0; return 0;
}
CUresult cuDeviceGetName(char* name, int len, int dev) { snprintf(name, len, "Fake H200 #%d", dev); return 0; }
CUresult cuDeviceTotalMem_v2(size_t* bytes, int dev) { *bytes = (size_t)150000000000ULL; return 0; }
CUresult cuDevicePrimaryCtxRetain(void** ctx, int dev) { *ctx = (void*)(0x1000 + (uintptr_t)dev); return 0; }
CUresult cuCtxSetCurrent(void* ctx) { return ctx ? 0 : 201; }
CUresult cuStreamCreate(void** s, unsigned flags) { *s = STREAM; fake_stream_flags = (int)flags; return 0; }
CUresult cuMemAlloc_v2(uint64_t* p, size_t n) { if (n > (1 << 20)) return 2; *p = (uint64_t)(uintptr_t)malloc(n); return 0; }
CUresult cuMemFree_v2(uint64_t p) { free((void*)(uintptr_t)p); return 0; }
static CUresult on(void* s) { if (s != STREAM) { fake_wrong_stream++; return 400; } return 0; }
CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t n, void* s) {
    if (on(s)) return 400;
    if (fake_defer(dst, src, n)) return 0;
    fake_run_all(); memcpy((void*)(uintptr_t)dst, src, n); return 0;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t n, void* s) { if (on(s)) return 400; fake_run_all(); memcpy(dst, (void*)(uintptr_t)src, n); return 0; }
CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void* s) { if (on(s)) return 400; fake_run_all(); memcpy((void*)(uintptr_t)dst, (void*)(uintptr_t)src, n); return 0; }
CUresult cuStreamSynchronize(void* s) { if (on(s)) return 400; fake_stream_syncs++; fake_run_all(); return fake_sync_result; }
CUresult cuModuleLoadData(void** m, const void* image) {
    if (memcmp(image, "\x7f" "ELF", 4) != 0) return 200;
    fake_images++; *m = (void*)0x3000; return 0;
}
CUresult cuModuleGetFunction(void** f, void* m, const char* name) { if (m != (void*)0x3000) return 400; *f = strdup(name); return 0; }
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void* s, void** params, void** extra) {
    if (on(s)) return 400;
    fake_run_all();
    if (fake_fail_next_launch) { fake_fail_next_launch = 0; return 701; }
    fake_launches++;
    snprintf(fake_kernel, sizeof fake_kernel, "%s", (const char*)f);
    unsigned d[7] = {gx, gy, gz, bx, by, bz, shared};
    memcpy(fake_dims, d, sizeof d);
    for (int i = 0; i < fake_param_count && i < 16; i++) memcpy(&fake_params[i], params[i], 8);
    return extra == 0 ? 0 : 1;
}
CUresult cuFuncSetAttribute(void* f, int attr, int value) { fake_attr_calls++; fake_attr = attr; fake_attr_value = value; return 0; }
CUresult cuFuncGetAttribute(int* v, int attr, void* f) { *v = attr == 4 ? 96 : attr == 3 ? 8 : -1; return f ? 0 : 400; }
/* Blocks a multiprocessor runs: 1 over 114 KiB of dynamic shared memory, else 2 with any, else 2 048 threads' worth. */
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, void* f, int threads, size_t shared) {
    *n = shared > 116736 ? 1 : shared > 0 ? 2 : 2048 / threads > 32 ? 32 : 2048 / threads; return f && threads > 0 ? 0 : 1;
}
/* fake_records: timing events' records (the profiler's); events without timing (CU_EVENT_DISABLE_TIMING, the staged
   copies') are counted by fake_staging_records. */
int fake_events = 0, fake_records = 0, fake_staging_records = 0;
static unsigned char fake_event_timing[1 << 16];
CUresult cuEventCreate(void** e, unsigned flags) {
    *e = (void*)(uintptr_t)(0xe0000 + ++fake_events);
    fake_event_timing[fake_events & 0xffff] = flags == 0;
    return flags == 0 || flags == 2 ? 0 : 1;
}
CUresult cuEventRecord(void* e, void* s) {
    if (on(s)) return 400;
    int timing = fake_event_timing[((uintptr_t)e - 0xe0000) & 0xffff];
    if (timing) fake_records++; else fake_staging_records++;
    fake_note_event(e, timing);
    return e ? 0 : 400;
}
/* Every kernel, GEMM or copy "takes" 0.25 ms. */
CUresult cuEventElapsedTime(float* ms, void* a, void* b) { *ms = 0.25f; return a && b && a != b ? 0 : 400; }
CUresult cuGetErrorString(CUresult r, const char** s) { *s = r == 701 ? "too many resources requested for launch" : "fake failure"; return 0; }
CUresult cuGetErrorName(CUresult r, const char** s) { *s = r == 701 ? "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES" : "CUDA_ERROR_FAKE"; return 0; }
"""#

let fakeBLASSource = #"""
#include <stddef.h>
#include <string.h>
int fake_math_mode = -1, fake_gemms = 0;
void* fake_blas_stream = 0;
int cublasCreate_v2(void** h) { *h = (void*)0xb1a5; return 0; }
int cublasSetStream_v2(void* h, void* s) { fake_blas_stream = s; return h == (void*)0xb1a5 ? 0 : 1; }
int cublasSetMathMode(void* h, int mode) { fake_math_mode = mode; return 0; }
/* Column-major C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i], as cuBLAS defines it. */
int cublasSgemmStridedBatched(void* h, int ta, int tb, int m, int n, int k, const float* alpha,
                              const float* A, int lda, long long sa, const float* B, int ldb, long long sb,
                              const float* beta, float* C, int ldc, long long sc, int batch) {
    if (h != (void*)0xb1a5 || m < 0 || n < 0 || k < 0) return 7;
    fake_gemms++;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float acc = 0;
                for (int l = 0; l < k; l++) {
                    float a = ta ? A[b * sa + l + (long long)i * lda] : A[b * sa + i + (long long)l * lda];
                    float x = tb ? B[b * sb + j + (long long)l * ldb] : B[b * sb + l + (long long)j * ldb];
                    acc += a * x;
                }
                float* c = &C[b * sc + i + (long long)j * ldc];
                *c = *alpha * acc + (*beta == 0 ? 0 : *beta * *c);
            }
    return 0;
}
/* GemmEx: records its types, leading dimensions and strides; computes with bf16 (14) or float (0) A/B/C, float sums. */
int fake_ex_gemms = 0, fake_ex_types[5] = {0}, fake_ex_ld[3] = {0}; long long fake_ex_strides[3] = {0};
static float fake_load(const void* p, int type, long long i) {
    if (type == 0) return ((const float*)p)[i];
    unsigned int bits = (unsigned int)((const unsigned short*)p)[i] << 16; float f; memcpy(&f, &bits, 4); return f;
}
int cublasGemmStridedBatchedEx(void* h, int ta, int tb, int m, int n, int k, const void* alpha, const void* A, int at, int lda,
                               long long sa, const void* B, int bt, int ldb, long long sb, const void* beta, void* C, int ct,
                               int ldc, long long sc, int batch, int compute, int algo) {
    if (h != (void*)0xb1a5 || m < 0 || n < 0 || k < 0) return 7;
    fake_ex_gemms++;
    int types[5] = {at, bt, ct, compute, algo}; memcpy(fake_ex_types, types, sizeof types);
    fake_ex_ld[0] = lda; fake_ex_ld[1] = ldb; fake_ex_ld[2] = ldc; fake_ex_strides[0] = sa; fake_ex_strides[1] = sb; fake_ex_strides[2] = sc;
    float al = *(const float*)alpha, be = *(const float*)beta;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float acc = 0;
                for (int l = 0; l < k; l++)
                    acc += fake_load(A, at, b * sa + (ta ? l + (long long)i * lda : i + (long long)l * lda))
                         * fake_load(B, bt, b * sb + (tb ? j + (long long)l * ldb : l + (long long)j * ldb));
                long long at_c = b * sc + i + (long long)j * ldc;
                float r = al * acc + (be == 0 ? 0 : be * fake_load(C, ct, at_c));
                if (ct == 0) { ((float*)C)[at_c] = r; continue; }
                unsigned int bits; memcpy(&bits, &r, 4);
                ((unsigned short*)C)[at_c] = (unsigned short)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
            }
    return 0;
}
const char* cublasGetStatusString(int s) { return "CUBLAS_STATUS_FAKE"; }
int cublasGetProperty(int type, int* v) { *v = type == 0 ? 12 : type == 1 ? 8 : 4; return 0; }
"""#

/// One driver, shared: run in order.
@Suite(.serialized) struct FakeCUDADriverTests {
    @Test func librariesLoadFromTheFoldersAndAnOutOfRangeIndexListsTheDevices() throws {
        guard let fake = FakeCUDA.shared else { return }
        let libs = fake.libs
        #expect(libs.api.library.path == "\(fake.folder)/libcuda.so.1" && libs.blas.library.path == "\(fake.folder)/libcublas.so.12")
        #expect(libs.blas.lt.path == "\(fake.folder)/libcublasLt.so.12" && libs.blas.version == "12.8.4")
        #expect(libs.deviceCount == 2 && libs.driverVersion == 12080)
        #expect(throws: HasteError.unsupported("--device cuda:5: this machine has 2 CUDA devices: cuda:0 Fake H200 #0 (sm_90, 139.7 GiB), "
                                               + "cuda:1 Fake H200 #1 (sm_90, 139.7 GiB)\nhint: pick one of those, or run with --device cpu")) {
            try CUDA.checkIndex(5, libs, fake.env)
        }
    }

    @Test func theDriverUsesOneNonBlockingStreamAndTF32OnlyWhenAllowed() throws {
        guard let fake = FakeCUDA.shared else { return }
        let driver = fake.driver
        #expect(driver.deviceDescription == "Fake H200 #1 (sm_90, 139.7 GiB)" && driver.computeCapability == 90 && driver.maxSharedBytes == 232448)
        #expect(fake.global("fake_stream_flags", Int32.self).pointee == 1)                    // CU_STREAM_NON_BLOCKING
        #expect(fake.global("fake_blas_stream", UnsafeRawPointer?.self).pointee == UnsafeRawPointer(bitPattern: 0x5157))
        #expect(fake.global("fake_math_mode", Int32.self).pointee == 0 && !driver.allowTF32)  // CUBLAS_DEFAULT_MATH
        try driver.setTF32(true)
        #expect(fake.global("fake_math_mode", Int32.self).pointee == 3 && driver.allowTF32)   // CUBLAS_TF32_TENSOR_OP_MATH
        try driver.setTF32(false)
        #expect(fake.global("fake_math_mode", Int32.self).pointee == 0)
    }

    @Test func copiesGoBothWaysAndOnTheDeviceAndTheBackendRunsOverTheDriver() throws {
        guard let fake = FakeCUDA.shared else { return }
        let driver = fake.driver
        let backend = CUDABackend(driver: driver, device: .cuda(1))   // not registered: only its error word and copies
        backend.synchronize()
        let values: [Float] = (0..<16).map { Float($0) * 0.5 - 3 }
        let a = try fake.upload(values), b = try #require(driver.allocate(byteCount: 64))
        driver.copy(from: a, to: b, byteCount: 64)
        #expect(fake.download(b, count: 16) == values)
        #expect(driver.allocate(byteCount: 2 << 20) == nil)                                   // CUDA_ERROR_OUT_OF_MEMORY → nil
        #expect(fake.global("fake_wrong_stream", Int32.self).pointee == 0)
        for p in [a, b] { driver.free(p) }
    }

    @Test func kernelsLoadFromCUBINAndReceiveTheirArgumentsAsCParameters() throws {
        guard let fake = FakeCUDA.shared else { return }
        let driver = fake.driver
        let f = try #require(try driver.load(probeSource)["haste_cache_probe"])
        #expect(fake.global("fake_images", Int32.self).pointee >= 1)
        let a = try fake.upload([1, 2])
        fake.global("fake_param_count", Int32.self).pointee = 3
        driver.launch(f, grid: Dim3(3, 2), block: Dim3(128), sharedBytes: 0, arguments: [.pointer(a), .int64(-3), .float(2.5)])
        try driver.synchronize()
        #expect(String(cString: UnsafePointer(fake.global("fake_kernel", CChar.self))) == "haste_cache_probe")
        #expect(Array(UnsafeBufferPointer(start: fake.global("fake_dims", UInt32.self), count: 7)) == [3, 2, 1, 128, 1, 1, 0])
        let params = fake.global("fake_params", UInt64.self)
        #expect(params[0] == a && Int64(bitPattern: params[1]) == -3 && Float(bitPattern: UInt32(truncatingIfNeeded: params[2])) == 2.5)
        // Over 48 KiB of dynamic shared memory: opted into once per function.
        let before = fake.global("fake_attr_calls", Int32.self).pointee
        for _ in 0..<2 { driver.launch(f, grid: Dim3(1), block: Dim3(32), sharedBytes: 100_000, arguments: [.pointer(a), .int64(1), .float(1)]) }
        try driver.synchronize()
        #expect(fake.global("fake_attr_calls", Int32.self).pointee == before + 1 && fake.global("fake_attr", Int32.self).pointee == 8
                && fake.global("fake_attr_value", Int32.self).pointee == 100_000)
        driver.free(a)
    }

    @Test func launchAndStreamErrorsAreKeptForSynchronizeThenCleared() throws {
        guard let fake = FakeCUDA.shared else { return }
        let driver = fake.driver
        let f = try #require(try driver.load(probeSource)["haste_cache_probe"])
        driver.launch(f, grid: Dim3(1), block: Dim3(32), sharedBytes: 300_000, arguments: [])   // beyond the device's 232 448 B
        do { try driver.synchronize(); Issue.record("too much shared memory was not reported") } catch {
            #expect("\(error)".contains("asks for more shared memory than Fake H200 #1"), "\(error)")
        }
        fake.global("fake_fail_next_launch", Int32.self).pointee = 1
        driver.launch(f, grid: Dim3(7), block: Dim3(256), sharedBytes: 0, arguments: [.pointer(0), .int64(1), .float(1)])
        do { try driver.synchronize(); Issue.record("the failed launch was not reported") } catch {
            #expect("\(error)".contains("launch of haste_cache_probe grid (7, 1, 1) block (256, 1, 1)")
                    && "\(error)".contains("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (701): too many resources requested for launch"), "\(error)")
        }
        try driver.synchronize()
        fake.global("fake_sync_result", Int32.self).pointee = 700
        #expect(throws: CUDAError.self) { try driver.synchronize() }
        fake.global("fake_sync_result", Int32.self).pointee = 0
        try driver.synchronize()
    }

    /// `HASTE_CUDA_PROFILE=1`: a pair of events on the stream around each launch, GEMM and device copy, their
    /// times gathered when the host waits, summed per name; the report divides by the steps.
    @Test func theProfilerTimesEachLaunchGemmAndCopyByName() throws {
        guard let fake = FakeCUDA.shared else { return }
        let driver = try CUDADriver(api: fake.libs.api, blas: fake.libs.blas, compiler: KernelCompiler(nvrtc: fake.libs.nvrtc, cacheDirectory: nil),
                                    index: 0, allowTF32: false, profile: true)
        #expect(driver.isCounting && !fake.driver.isCounting)
        let f = try #require(try driver.load(probeSource)["haste_cache_probe"])
        let a = try #require(driver.allocate(byteCount: 64)), b = try #require(driver.allocate(byteCount: 64))
        driver.launch(f, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(a), .int64(1), .float(1)])
        driver.resetCounts()                                                    // forgets that launch
        let records = fake.global("fake_records", Int32.self).pointee
        for _ in 0..<4 { driver.launch(f, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(a), .int64(1), .float(1)]) }
        driver.gemm(GemmDescriptor(transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, beta: 0, a: a, lda: 2, strideA: 0,
                                   b: a, ldb: 2, strideB: 0, c: b, ldc: 2, strideC: 0, batch: 1))
        driver.copy(from: a, to: b, byteCount: 64)
        try driver.synchronize()
        #expect(fake.global("fake_records", Int32.self).pointee == records + 12, "two events for each of 6 calls")
        #expect(driver.launchTotal == 4 && driver.gemmTotal == 1)
        let report = driver.report(steps: 2)
        #expect(report.hasPrefix("per step: 0.750 ms of GPU time in 2.0 kernel launches and 0.5 GEMMs (3 names); by time:"), "\(report)")
        #expect(report.contains("    0.500 ms  66.7 %      2.0 calls  haste_cache_probe  [96 regs, 8 B local, 0.0 KiB shared, 32 threads: 32 blocks/SM]"), "\(report)")
        #expect(report.contains("    0.125 ms  16.7 %      0.5 calls  GEMM float32→float32 2×2×2"), "\(report)")
        #expect(report.contains("    0.125 ms  16.7 %      0.5 calls  copy device → device"), "\(report)")
        for p in [a, b] { driver.free(p) }
    }

    /// `timed` (LaunchTuner's clock): a timing event recorded before and after the work, the end one waited for, the
    /// elapsed time between them (the stand-in's 0.25 ms); without profiling too.
    @Test func timedRecordsTwoEventsAroundTheWorkAndWaitsForTheEnd() throws {
        guard let fake = FakeCUDA.shared else { return }
        let driver = try CUDADriver(api: fake.libs.api, blas: fake.libs.blas, compiler: KernelCompiler(nvrtc: fake.libs.nvrtc, cacheDirectory: nil),
                                    index: 0, allowTF32: false)
        let f = try #require(try driver.load(probeSource)["haste_cache_probe"])
        let a = try #require(driver.allocate(byteCount: 64))
        let records = fake.global("fake_records", Int32.self).pointee, waits = fake.global("fake_event_waits", Int32.self).pointee
        let launches = fake.global("fake_launches", Int32.self).pointee
        let ms = driver.timed { driver.launch(f, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(a), .int64(1), .float(1)]) }
        #expect(ms == 0.25 && fake.global("fake_launches", Int32.self).pointee == launches + 1)
        #expect(fake.global("fake_records", Int32.self).pointee == records + 2 && fake.global("fake_event_waits", Int32.self).pointee == waits + 1)
        try driver.synchronize()
        driver.free(a)
    }

    /// The profile's occupancy column is taken at a kernel's first launch (its shared memory then), and
    /// `HASTE_CUDA_SHARED_CARVEOUT` asks each kernel opted into more than 48 KiB for that shared-memory share.
    @Test func theProfileSaysHowManyBlocksAMultiprocessorRunsAndTheCarveoutIsAskedFor() throws {
        guard let fake = FakeCUDA.shared else { return }
        let driver = try CUDADriver(api: fake.libs.api, blas: fake.libs.blas, compiler: KernelCompiler(nvrtc: fake.libs.nvrtc, cacheDirectory: nil),
                                    index: 0, allowTF32: false, profile: true)
        let f = try #require(try driver.load(probeSource)["haste_cache_probe"])
        let a = try #require(driver.allocate(byteCount: 64))
        let calls = fake.global("fake_attr_calls", Int32.self).pointee
        CUDADriver.$sharedCarveout.withValue(100) {
            driver.launch(f, grid: Dim3(1), block: Dim3(128), sharedBytes: 120_000, arguments: [.pointer(a), .int64(1), .float(1)])
            driver.launch(f, grid: Dim3(1), block: Dim3(128), sharedBytes: 60_000, arguments: [.pointer(a), .int64(1), .float(1)])
        }
        try driver.synchronize()
        // max dynamic shared, then the carveout (CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT = 9), once
        #expect(fake.global("fake_attr_calls", Int32.self).pointee == calls + 2 && fake.global("fake_attr", Int32.self).pointee == 9
                && fake.global("fake_attr_value", Int32.self).pointee == 100)
        let report = driver.report(steps: 1)
        #expect(report.contains("haste_cache_probe  [96 regs, 8 B local, 117.2 KiB shared, 128 threads: 1 blocks/SM]"), "\(report)")
        #expect(CUDADriver.carveout("100") == 100 && CUDADriver.carveout("0") == 0 && CUDADriver.carveout(nil) == nil)
        #expect(CUDADriver.carveout("max") == nil && CUDADriver.carveout("101") == nil && CUDADriver.carveout("") == nil)
        driver.free(a)
    }

    /// Batch 2 of C(2×2) = 2·Aᵀ·B with A stored k×m = 3×2 and B k×n = 3×2, column-major, strides 6, 6, 4.
    @Test func gemmsReachCuBLASWithTheirOperandsInOrder() throws {
        guard let fake = FakeCUDA.shared else { return }
        let A: [Float] = [1, 2, 3, 4, 5, 6, -1, 0, 1, 2, -2, 0.5], B: [Float] = [1, 0, 2, -1, 1, 1, 3, 1, 0, 0, 2, -1]
        let dA = try fake.upload(A), dB = try fake.upload(B), dC = try fake.upload([Float](repeating: 9, count: 8))
        let gemms = fake.global("fake_gemms", Int32.self).pointee      // the profiler's test queues one too
        fake.driver.gemm(GemmDescriptor(transA: true, transB: false, m: 2, n: 2, k: 3, alpha: 2, beta: 0, a: dA, lda: 3, strideA: 6,
                                        b: dB, ldb: 3, strideB: 6, c: dC, ldc: 2, strideC: 4, batch: 2))
        try fake.driver.synchronize()
        var expected = [Float](repeating: 0, count: 8)
        for batch in 0..<2 { for j in 0..<2 { for i in 0..<2 {
            expected[batch * 4 + i + j * 2] = 2 * (0..<3).reduce(Float(0)) { $0 + A[batch * 6 + $1 + i * 3] * B[batch * 6 + $1 + j * 3] }
        } } }
        #expect(fake.download(dC, count: 8) == expected)
        #expect(fake.global("fake_gemms", Int32.self).pointee == gemms + 1)
        // Nothing to compute (an empty batch or an empty output) never reaches cuBLAS.
        fake.driver.gemm(GemmDescriptor(transA: false, transB: false, m: 0, n: 2, k: 3, alpha: 1, beta: 0, a: dA, lda: 0, strideA: 0,
                                        b: dB, ldb: 3, strideB: 0, c: dC, ldc: 0, strideC: 0, batch: 1))
        try fake.driver.synchronize()
        #expect(fake.global("fake_gemms", Int32.self).pointee == gemms + 1)
        for p in [dA, dB, dC] { fake.driver.free(p) }
    }

    /// bf16 operands reach cublasGemmStridedBatchedEx with CUDA_R_16BF A/B, the C type asked for (CUDA_R_32F or
    /// CUDA_R_16BF), CUBLAS_COMPUTE_32F and the default algorithm, leading dimensions and strides in elements.
    @Test func bf16GemmsReachGemmStridedBatchedEx() throws {
        guard let fake = FakeCUDA.shared else { return }
        let A: [Float] = [1, 2, 3, 4, 5, 6, -1, 0, 1, 2, -2, 0.5], B: [Float] = [1, 0, 2, -1, 1, 1, 3, 1, 0, 0, 2, -1.5]
        func bf16(_ x: [Float]) throws -> DevicePointer {   // two bf16 values per uploaded float's bytes
            let bits = x.map { $0.bfloat16Bits }
            return try fake.upload(stride(from: 0, to: bits.count, by: 2).map { Float(bitPattern: UInt32(bits[$0]) | UInt32(bits[$0 + 1]) << 16) })
        }
        let dA = try bf16(A), dB = try bf16(B)
        var expected = [Float](repeating: 0, count: 8)
        for batch in 0..<2 { for j in 0..<2 { for i in 0..<2 {
            expected[batch * 4 + i + j * 2] = 2 * (0..<3).reduce(Float(0)) { $0 + A[batch * 6 + $1 + i * 3] * B[batch * 6 + $1 + j * 3] }
        } } }
        let ex = fake.global("fake_ex_gemms", Int32.self), sgemms = fake.global("fake_gemms", Int32.self).pointee
        for output in [DType.float32, .bfloat16] {
            let dC = try fake.upload([Float](repeating: 9, count: 8))
            fake.driver.gemm(GemmDescriptor(transA: true, transB: false, m: 2, n: 2, k: 3, alpha: 2, beta: 0, a: dA, lda: 3, strideA: 6,
                                            b: dB, ldb: 3, strideB: 6, c: dC, ldc: 2, strideC: 4, batch: 2, inputs: .bfloat16, output: output))
            try fake.driver.synchronize()
            let types = UnsafeBufferPointer(start: fake.global("fake_ex_types", Int32.self), count: 5)
            #expect(Array(types) == [14, 14, output == .bfloat16 ? 14 : 0, 68, -1])
            #expect(Array(UnsafeBufferPointer(start: fake.global("fake_ex_ld", Int32.self), count: 3)) == [3, 3, 2])
            #expect(Array(UnsafeBufferPointer(start: fake.global("fake_ex_strides", Int64.self), count: 3)) == [6, 6, 4])
            let raw = fake.download(dC, count: 8)
            let got = output == .float32 ? raw : raw.prefix(4).flatMap { f -> [Float] in
                let u = f.bitPattern; return [Float(bitPattern: (u & 0xffff) << 16), Float(bitPattern: u & 0xffff0000)]
            }
            #expect(got == (output == .float32 ? expected : expected.map { Float(bitPattern: UInt32($0.bfloat16Bits) << 16) }))
            fake.driver.free(dC)
        }
        #expect(ex.pointee == 2 && fake.global("fake_gemms", Int32.self).pointee == sgemms)
        for p in [dA, dB] { fake.driver.free(p) }
    }
}
