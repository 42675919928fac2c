import Foundation
import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// Kernels that exercise the emulator's CUDA subset (the prelude's helpers included).
private let testSource = KernelSource(family: "emulator-tests", kernels: [
    "scale", "row_sum", "shuffles", "reverse_dynamic", "atomics", "skips_barrier", "divergent_shuffle", "indices_2d",
    "set_error", "read_slot", "write_at", "divergent_barriers", "divide", "big_stack", "local_index", "broadcast",
], code: #"""
extern "C" __global__ void scale(const float* __restrict__ x, float* __restrict__ y, float a, i64 n) {
    HASTE_GRID_STRIDE_LOOP(i, n) { y[i] = a * x[i]; }
}
/// One block a row: y[row] = Σ x[row, :], through haste_block_sum.
extern "C" __global__ void row_sum(const float* __restrict__ x, float* __restrict__ y, i64 cols) {
    __shared__ float scratch[32];
    const float* row = x + (i64)blockIdx.x * cols;
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += row[j];
    s = haste_block_sum(s, scratch);
    if (threadIdx.x == 0) y[blockIdx.x] = s;
}
extern "C" __global__ void shuffles(const float* v, float* xor3, float* down5, float* wmax, int* up1, unsigned* votes) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    float x = v[t];
    unsigned ballot = __ballot_sync(HASTE_FULL_MASK, x > 50.0f);
    votes[t] = ballot ^ (unsigned)__any_sync(HASTE_FULL_MASK, x > 99.0f) ^ ((unsigned)__all_sync(HASTE_FULL_MASK, x >= 0.0f) << 1);
    xor3[t] = __shfl_xor_sync(HASTE_FULL_MASK, x, 3);
    down5[t] = __shfl_down_sync(HASTE_FULL_MASK, x, 5);
    wmax[t] = haste_warp_max(x);
    up1[t] = __shfl_up_sync(HASTE_FULL_MASK, t * 10, 1);
}
/// Reverses each block's slice through dynamic shared memory.
extern "C" __global__ void reverse_dynamic(const float* x, float* y) {
    HASTE_DYNAMIC_SHARED(float, buffer);
    int t = threadIdx.x, n = blockDim.x;
    buffer[t] = x[blockIdx.x * n + t];
    __syncthreads();
    y[blockIdx.x * n + t] = buffer[n - 1 - t];
}
extern "C" __global__ void atomics(float* fsum, double* dsum, int* count, int* maxIndex, int* firstWriter) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(fsum, 0.5f);
    atomicAdd(dsum, (double)t);
    int before = atomicAdd(count, 1);
    atomicMax(maxIndex, t);
    if (atomicCAS(firstWriter, -1, t) == -1 && before != 0) atomicAdd(count, 1000000);
}
extern "C" __global__ void skips_barrier(float* y) {
    if (threadIdx.x >= 16) return;
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}
extern "C" __global__ void divergent_shuffle(float* y) {
    float v = 1.0f;
    if (threadIdx.x < 8) v = __shfl_xor_sync(HASTE_FULL_MASK, v, 1);
    y[threadIdx.x] = v;
}
extern "C" __global__ void indices_2d(int* out) {
    int bx = blockIdx.x, by = blockIdx.y, tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
    int block = by * gridDim.x + bx;
    int thread = (tz * blockDim.y + ty) * blockDim.x + tx;
    out[block * (blockDim.x * blockDim.y * blockDim.z) + thread] = bx + 10 * by + 100 * tx + 1000 * ty + 10000 * tz;
}
extern "C" __global__ void set_error(int* errorWord, int code) {
    if (blockIdx.x == 1 && threadIdx.x == 7) atomicCAS(errorWord, 0, code);
}
extern "C" __global__ void __launch_bounds__(64) read_slot(const u64* p, u64* out, unsigned k) { out[0] = p[k]; }
extern "C" __global__ void write_at(float* y, i64 index) { if (threadIdx.x == 3) y[index] = 1.0f; }
extern "C" __global__ void divergent_barriers(float* y) {
    if (threadIdx.x < 16) { __syncthreads(); y[threadIdx.x] = 1.0f; }
    else { __syncthreads(); y[threadIdx.x] = 2.0f; }
}
extern "C" __global__ void divide(int* y, int d) { y[threadIdx.x] = 100 / d; }
extern "C" __global__ void big_stack(float* y, int n) {
    volatile float local[40000];
    for (int i = 0; i < n; i++) local[i] = (float)i;
    y[0] = local[n - 1];
}
/// Thread 0 publishes a value to its block; without the barrier (sync = 0) other threads may read it first.
extern "C" __global__ void broadcast(const float* x, float* y, int sync) {
    __shared__ float value;
    if (threadIdx.x == 0) value = x[blockIdx.x];
    if (sync) __syncthreads();
    y[blockIdx.x * blockDim.x + threadIdx.x] = value;
}
extern "C" __global__ void local_index(int* y, int k) {
    int table[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float big = k < 0 ? 3e9f : 1.0f;
    y[threadIdx.x] = k >= 0 ? table[(threadIdx.x + k) & 15] : (int)big;
}
"""#)

/// A private emulated device whose findings are thrown by `synchronize()`.
private func makeDriver(totalMemory: Int = 1 << 30) -> EmulatedDriver {
    EmulatedDriver(totalMemory: totalMemory, recordsIssues: false)
}

private func upload<T>(_ d: EmulatedDriver, _ values: [T]) -> DevicePointer {
    let p = d.allocate(byteCount: values.count * MemoryLayout<T>.stride)!
    values.withUnsafeBytes { d.copy(fromHost: $0.baseAddress!, to: p, byteCount: $0.count) }
    return p
}

private func download<T>(_ d: EmulatedDriver, _ p: DevicePointer, _ count: Int, as _: T.Type = T.self) -> [T] {
    [T](unsafeUninitializedCapacity: count) { buffer, initialised in
        d.copy(from: p, toHost: UnsafeMutableRawPointer(buffer.baseAddress!), byteCount: count * MemoryLayout<T>.stride)
        initialised = count
    }
}

/// The first error the driver kept, as text ("" when none).
private func pendingError(_ d: EmulatedDriver) -> String {
    do { try d.synchronize(); return "" } catch { return "\(error)" }
}

@Suite struct EmulatorKernelTests {
    let d = makeDriver()
    let f: [String: GPUFunction]
    init() throws { f = try d.load(testSource) }

    @Test func gridStrideElementwise() throws {
        let n = 100_003
        let x = (0..<n).map { Float($0 % 97) - 40 }
        let px = upload(d, x), py = d.allocate(byteCount: 4 * n)!
        // 37 blocks of 128 threads cover n only through the grid-stride loop.
        d.launch(f["scale"]!, grid: Dim3(37), block: Dim3(128), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .float(-1.5), .int64(Int64(n))])
        try d.synchronize()
        #expect(download(d, py, n, as: Float.self) == x.map { -1.5 * $0 })
    }

    @Test func blockReductionWithSharedScratch() throws {
        let rows = 13, cols = 1000
        let x = (0..<rows * cols).map { Float(($0 * 7919) % 1001) / 1000 - 0.5 }
        let px = upload(d, x), py = d.allocate(byteCount: 4 * rows)!
        for threads in [32, 256, 1024] {
            d.launch(f["row_sum"]!, grid: Dim3(rows), block: Dim3(threads), sharedBytes: 0,
                     arguments: [.pointer(px), .pointer(py), .int64(Int64(cols))])
            try d.synchronize()
            let y = download(d, py, rows, as: Float.self)
            for r in 0..<rows {
                let reference = x[r * cols ..< (r + 1) * cols].reduce(0.0) { $0 + Double($1) }
                #expect(abs(Double(y[r]) - reference) <= 1e-4, "threads \(threads), row \(r): \(y[r]) vs \(reference)")
            }
        }
    }

    @Test func warpShuffles() throws {
        let n = 128
        let v = (0..<n).map { Float(($0 * 37) % 101) }
        let pv = upload(d, v)
        let outs = (0..<5).map { _ in d.allocate(byteCount: 4 * n)! }
        d.launch(f["shuffles"]!, grid: Dim3(2), block: Dim3(64), sharedBytes: 0,
                 arguments: [.pointer(pv)] + outs.map { .pointer($0) })
        try d.synchronize()
        let xor3 = download(d, outs[0], n, as: Float.self), down5 = download(d, outs[1], n, as: Float.self)
        let wmax = download(d, outs[2], n, as: Float.self), up1 = download(d, outs[3], n, as: Int32.self)
        let votes = download(d, outs[4], n, as: UInt32.self)
        for t in 0..<n {
            let lane = t % 32, warp = t - lane
            let ballot = (0..<32).reduce(UInt32(0)) { $0 | (v[warp + $1] > 50 ? 1 << UInt32($1) : 0) }
            let any: UInt32 = v[warp ..< warp + 32].contains { $0 > 99 } ? 1 : 0
            #expect(votes[t] == ballot ^ any ^ 2)
            #expect(xor3[t] == v[warp + (lane ^ 3)])
            #expect(down5[t] == (lane + 5 < 32 ? v[t + 5] : v[t]))
            #expect(wmax[t] == v[warp ..< warp + 32].max()!)
            #expect(up1[t] == Int32(lane >= 1 ? (t - 1) * 10 : t * 10))
        }
    }

    @Test func dynamicSharedMemory() throws {
        let threads = 200, blocks = 3
        let x = (0..<threads * blocks).map(Float.init)
        let px = upload(d, x), py = d.allocate(byteCount: 4 * x.count)!
        d.launch(f["reverse_dynamic"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 4 * threads,
                 arguments: [.pointer(px), .pointer(py)])
        try d.synchronize()
        let expected = (0..<blocks).flatMap { b in (0..<threads).map { Float(b * threads + threads - 1 - $0) } }
        #expect(download(d, py, x.count, as: Float.self) == expected)
    }

    @Test func atomics() throws {
        let pf = upload(d, [Float(0)]), pd = upload(d, [Double(0)]), pc = upload(d, [Int32(0)])
        let pm = upload(d, [Int32(-5)]), pw = upload(d, [Int32(-1)])
        d.launch(f["atomics"]!, grid: Dim3(5), block: Dim3(96), sharedBytes: 0,
                 arguments: [.pointer(pf), .pointer(pd), .pointer(pc), .pointer(pm), .pointer(pw)])
        try d.synchronize()
        let n = 5 * 96
        #expect(download(d, pf, 1, as: Float.self) == [Float(n) * 0.5])
        #expect(download(d, pd, 1, as: Double.self) == [Double(n * (n - 1) / 2)])
        #expect(download(d, pc, 1, as: Int32.self) == [Int32(n)])   // the first writer saw count 0
        #expect(download(d, pm, 1, as: Int32.self) == [Int32(n - 1)])
        #expect(download(d, pw, 1, as: Int32.self) == [95])   // block 0 starts its threads in reverse order
    }

    @Test func blockAndThreadIndicesIn2DAnd3D() throws {
        let grid = Dim3(3, 2), block = Dim3(4, 3, 2)
        let total = 6 * 24
        let p = d.allocate(byteCount: 4 * total)!
        d.launch(f["indices_2d"]!, grid: grid, block: block, sharedBytes: 0, arguments: [.pointer(p)])
        try d.synchronize()
        var expected: [Int32] = []
        for by in 0..<2 { for bx in 0..<3 { for tz in 0..<2 { for ty in 0..<3 { for tx in 0..<4 {
            expected.append(Int32(bx + 10 * by + 100 * tx + 1000 * ty + 10000 * tz))
        } } } } }
        #expect(download(d, p, total, as: Int32.self) == expected)
    }

    @Test func barrierSkippedBySomeThreadsIsAnError() throws {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["skips_barrier"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0, arguments: [.pointer(p)])
        let message = pendingError(d)
        #expect(message.contains("kernel skips_barrier"))
        #expect(message.contains("__syncthreads() was reached by 16 of the block's 64 threads"))
        // The emulator recovers: the next launch runs normally.
        let n = 1000, px = upload(d, [Float](repeating: 2, count: n)), py = d.allocate(byteCount: 4 * n)!
        d.launch(f["scale"]!, grid: Dim3(4), block: Dim3(256), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .float(3), .int64(Int64(n))])
        try d.synchronize()
        #expect(download(d, py, n, as: Float.self) == [Float](repeating: 6, count: n))
    }

    @Test func shuffleInDivergentCodeIsAnError() throws {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["divergent_shuffle"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p)])
        let message = pendingError(d)
        #expect(message.contains("kernel divergent_shuffle") && message.contains("warp shuffle"), "\(message)")
    }

    @Test func pointerArgumentsMustBeLiveDeviceMemory() throws {
        let n = 64
        var host = [Float](repeating: 1, count: n)
        let py = d.allocate(byteCount: 4 * n)!
        let hostAddress = host.withUnsafeMutableBytes { DevicePointer(UInt(bitPattern: $0.baseAddress!)) }
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0,
                 arguments: [.pointer(hostAddress), .pointer(py), .float(1), .int64(Int64(n))])
        let message = pendingError(d)
        #expect(message.contains("launch of scale: argument 0") && message.contains("not inside any live device allocation"),
                "\(message)")
        let freed = d.allocate(byteCount: 4 * n)!
        d.free(freed)
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0,
                 arguments: [.pointer(py), .pointer(freed), .float(1), .int64(Int64(n))])
        #expect(pendingError(d).contains("argument 1"))
        host[0] = 0
    }

    @Test func argumentKindsMustMatchTheCParameters() throws {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0,
                 arguments: [.pointer(p), .pointer(p), .float(1), .int32(4)])
        #expect(pendingError(d).contains("argument 3 (long long): passed as int32(4)"))
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .pointer(p), .float(1)])
        #expect(pendingError(d).contains("3 arguments for 4 parameters"))
        d.launch(f["read_slot"]!, grid: Dim3(1), block: Dim3(1), sharedBytes: 0, arguments: [.pointer(p + 4), .pointer(p), .int32(0)])
        #expect(pendingError(d).contains("not aligned to 8 bytes"))
        let slots = upload(d, [UInt64(10), 20, 30, 1 << 40])
        d.launch(f["read_slot"]!, grid: Dim3(1), block: Dim3(1), sharedBytes: 0, arguments: [.pointer(slots), .pointer(p), .int32(3)])
        try d.synchronize()
        #expect(download(d, p, 1, as: UInt64.self) == [1 << 40])
    }

    @Test func invalidMemoryAccessesEndTheLaunchNotTheProcess() throws {
        let p = d.allocate(byteCount: 4096)!
        d.launch(f["write_at"]!, grid: Dim3(2), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int64(1024 + 5)])
        let message = pendingError(d)
        #expect(message.contains("kernel write_at, block (0, 0, 0), thread (3, 0, 0): invalid memory access")
                && message.contains("20 bytes past the end of the allocation of 4096 bytes")
                && message.contains("\n  at emulator-tests kernels:59:"), "\(message)")
        d.launch(f["write_at"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(0), .int64(2)])
        #expect(pendingError(d).contains("a null pointer (plus 8 bytes)"))
        d.launch(f["divide"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(0)])
        let division = pendingError(d)
        #expect(division.contains("undefined behaviour: integer division by zero") && division.contains("emulator-tests kernels:64:"),
                "\(division)")
        d.launch(f["big_stack"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(40000)])
        #expect(pendingError(d).contains("stack overflow"))
        // Still usable afterwards.
        d.launch(f["divide"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(7)])
        try d.synchronize()
        #expect(download(d, p, 32, as: Int32.self) == [Int32](repeating: 14, count: 32))
    }

    @Test func undefinedBehaviourTrapsWithItsSourceLine() {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["local_index"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(8)])
        let bounds = pendingError(d)
        #expect(bounds.contains("undefined behaviour: index out of bounds of a fixed-size array")
                && bounds.contains("at emulator-tests kernels:80:"), "\(bounds)")
        d.launch(f["local_index"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(-8)])
        #expect(pendingError(d).contains("float to integer conversion out of range"))
    }

    @Test func alternatingThreadOrderExposesAMissingBarrier() throws {
        let blocks = 3, threads = 64
        let x: [Float] = [5, 7, 9], expected = x.flatMap { [Float](repeating: $0, count: threads) }
        let px = upload(d, x), py = d.allocate(byteCount: 4 * blocks * threads)!
        d.launch(f["broadcast"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .int32(1)])
        try d.synchronize()
        #expect(download(d, py, blocks * threads, as: Float.self) == expected)
        // Without the barrier, the reversed blocks (0 and 2) read the shared value before thread 0 writes it: poison.
        d.launch(f["broadcast"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .int32(0)])
        try d.synchronize()
        let racy = download(d, py, blocks * threads, as: Float.self)
        #expect(racy[0] == 5 && racy[1 ..< threads].allSatisfy { $0.isNaN } && Array(racy[threads ..< 2 * threads]) == [Float](repeating: 7, count: threads))
        // In index order only, the race goes unnoticed.
        let forward = EmulatedDriver(recordsIssues: false, alternatesThreadOrder: false)
        let g = try forward.load(testSource)
        let fx = upload(forward, x), fy = forward.allocate(byteCount: 4 * blocks * threads)!
        forward.launch(g["broadcast"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 0,
                       arguments: [.pointer(fx), .pointer(fy), .int32(0)])
        try forward.synchronize()
        #expect(download(forward, fy, blocks * threads, as: Float.self) == expected)
    }

    @Test func threadsMustWaitAtTheSameBarrier() {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["divergent_barriers"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p)])
        let message = pendingError(d)
        #expect(message.contains("reached __syncthreads() at emulator-tests kernels:6")
                && message.contains("while 16 threads of the block wait at the one at"), "\(message)")
    }

    @Test func launchLimits() {
        let p = d.allocate(byteCount: 256)!
        for (grid, block) in [(Dim3(1), Dim3(2048)), (Dim3(1), Dim3(32, 32, 2)), (Dim3(0), Dim3(32)), (Dim3(1, 70_000), Dim3(32))] {
            d.launch(f["skips_barrier"]!, grid: grid, block: block, sharedBytes: 0, arguments: [.pointer(p)])
            #expect(pendingError(d).contains("launch of skips_barrier with grid \(grid), block \(block)"))
        }
    }

    @Test func newMemoryIsPoisoned() {
        let p = d.allocate(byteCount: 40)!
        let floats = download(d, p, 10, as: Float.self)
        #expect(floats.allSatisfy { $0.isNaN })
        #expect(download(d, p, 10, as: Int32.self) == [Int32](repeating: -1, count: 10))
        #expect(p % 256 == 0)
    }

    @Test func copiesAreChecked() throws {
        let a = upload(d, (0..<100).map(Float.init)), b = d.allocate(byteCount: 400)!
        d.copy(from: a + 40, to: b, byteCount: 360)
        try d.synchronize()
        #expect(download(d, b, 90, as: Float.self) == (10..<100).map(Float.init))
        d.copy(from: a + 8, to: b, byteCount: 400)
        #expect(pendingError(d).contains("copy device → device: source 0x"))
        d.copy(from: a, to: a + 8, byteCount: 100)
        #expect(pendingError(d).contains("overlap"))
        var host = [Float](repeating: 0, count: 200)
        d.copy(from: a, toHost: &host, byteCount: 800)
        #expect(pendingError(d).contains("runs past the end of its allocation (400 bytes"))
        d.copy(from: a, toHost: d.hostPointer(b), byteCount: 16)
        let message = pendingError(d)
        #expect(message.contains("copy device → host: destination 0x") && message.contains("is device memory"), "\(message)")
    }
}

@Suite struct EmulatorLoadTests {
    /// The portable fiber switch (ucontext: other architectures) gives the same results and findings.
    @Test func ucontextFibers() throws {
        let d = EmulatedDriver(recordsIssues: false, extraFlags: ["-DHASTE_EMU_UCONTEXT"])
        let f = try d.load(testSource)
        let rows = 3, cols = 300
        let x = (0..<rows * cols).map { Float($0 % 13) }
        let px = upload(d, x), py = d.allocate(byteCount: 4 * rows)!
        d.launch(f["row_sum"]!, grid: Dim3(rows), block: Dim3(128), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .int64(Int64(cols))])
        try d.synchronize()
        #expect(download(d, py, rows, as: Float.self) == (0..<rows).map { r in x[r * cols ..< (r + 1) * cols].reduce(0, +) })
        d.launch(f["skips_barrier"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0, arguments: [.pointer(py)])
        #expect(pendingError(d).contains("__syncthreads() was reached by 16"))
        d.launch(f["write_at"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(py), .int64(64)])   // the guard page after its 256 bytes
        #expect(pendingError(d).contains("invalid memory access"))
    }

    @Test func compileErrorsCarryTheCompilerOutput() {
        let bad = KernelSource(family: "broken", kernels: ["k"], code: #"""
        extern "C" __global__ void k(float* y) { y[0] = undefined_name; }
        """#)
        do {
            _ = try makeDriver().load(bad)
            Issue.record("a kernel that does not compile was loaded")
        } catch {
            #expect("\(error)".contains("undefined_name") && "\(error)".contains("broken kernels:1"), "\(error)")
        }
    }

    @Test func kernelListMustMatchTheEntryPoints() {
        let unlisted = KernelSource(family: "unlisted", kernels: ["a"], code: #"""
        extern "C" __global__ void a(float* y) { y[0] = 1.0f; }
        extern "C" __global__ void b(float* y) { y[0] = 2.0f; }
        """#)
        #expect(throws: EmulatorError.self) { try makeDriver().load(unlisted) }
        let notExternC = KernelSource(family: "mangled", kernels: ["a"], code: #"""
        __global__ void a(float* y) { y[0] = 1.0f; }
        """#)
        #expect(throws: EmulatorError.self) { try makeDriver().load(notExternC) }
    }
}

/// Column-major reference: C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i].
private func referenceGemm(_ g: GemmDescriptor, a: [Float], b: [Float], c: [Float]) -> [Float] {
    var out = c
    for p in 0..<g.batch {
        for j in 0..<g.n {
            for i in 0..<g.m {
                var acc = 0.0
                for l in 0..<g.k {
                    let x = g.transA ? a[p * g.strideA + l + i * g.lda] : a[p * g.strideA + i + l * g.lda]
                    let y = g.transB ? b[p * g.strideB + j + l * g.ldb] : b[p * g.strideB + l + j * g.ldb]
                    acc += Double(x) * Double(y)
                }
                let index = p * g.strideC + i + j * g.ldc
                out[index] = Float(Double(g.alpha) * acc + (g.beta == 0 ? 0 : Double(g.beta) * Double(c[index])))
            }
        }
    }
    return out
}

@Suite struct EmulatorGemmTests {
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func stridedBatchedGemm(transA: Bool, transB: Bool) throws {
        let d = makeDriver()
        let m = 5, n = 7, k = 3, batch = 3
        let (rowsA, colsA) = transA ? (k, m) : (m, k)
        let (rowsB, colsB) = transB ? (n, k) : (k, n)
        let lda = rowsA + 2, ldb = rowsB + 1, ldc = m + 3
        let strideA = lda * colsA + 5, strideB = ldb * colsB, strideC = ldc * n + 1
        let a = (0..<strideA * batch).map { Float(($0 * 31) % 17) / 8 - 1 }
        let b = (0..<strideB * batch).map { Float(($0 * 13) % 11) / 4 - 1.25 }
        let c = (0..<strideC * batch).map { Float(($0 * 7) % 5) - 2 }
        for (alpha, beta) in [(Float(1), Float(0)), (Float(0.5), Float(-2))] {
            let pa = upload(d, a), pb = upload(d, b), pc = upload(d, c)
            let g = GemmDescriptor(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
                                   a: pa, lda: lda, strideA: strideA, b: pb, ldb: ldb, strideB: strideB,
                                   c: pc, ldc: ldc, strideC: strideC, batch: batch)
            d.gemm(g)
            try d.synchronize()
            let result = download(d, pc, c.count, as: Float.self), expected = referenceGemm(g, a: a, b: b, c: c)
            for i in c.indices {
                #expect(abs(result[i] - expected[i]) <= 1e-5, "alpha \(alpha) beta \(beta), element \(i): \(result[i]) vs \(expected[i])")
            }
        }
    }

    @Test func betaZeroNeverReadsC() throws {
        let d = makeDriver()
        let pa = upload(d, [Float](repeating: 1, count: 4)), pb = upload(d, [Float](repeating: 2, count: 4))
        let pc = d.allocate(byteCount: 16)!   // poisoned: NaN
        d.gemm(GemmDescriptor(transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, beta: 0, a: pa, lda: 2, strideA: 0,
                              b: pb, ldb: 2, strideB: 0, c: pc, ldc: 2, strideC: 0, batch: 1))
        try d.synchronize()
        #expect(download(d, pc, 4, as: Float.self) == [4, 4, 4, 4])
    }

    @Test func operandsOutsideTheirAllocationAreRejected() {
        let d = makeDriver()
        let pa = upload(d, [Float](repeating: 1, count: 6)), pb = upload(d, [Float](repeating: 2, count: 6))
        let pc = d.allocate(byteCount: 16)!
        d.gemm(GemmDescriptor(transA: false, transB: false, m: 2, n: 2, k: 3, alpha: 1, beta: 0, a: pa, lda: 2, strideA: 6,
                              b: pb, ldb: 3, strideB: 0, c: pc, ldc: 2, strideC: 4, batch: 2))
        #expect(pendingError(d).contains("operand A"))
        d.gemm(GemmDescriptor(transA: false, transB: false, m: 2, n: 2, k: 3, alpha: 1, beta: 0, a: pa, lda: 1, strideA: 0,
                              b: pb, ldb: 3, strideB: 0, c: pc, ldc: 2, strideC: 0, batch: 1))
        #expect(pendingError(d).contains("lda 1 < 2"))
    }
}

@Suite struct EmulatedBackendTests {
    @Test func tensorsRoundTripThroughTheDevice() {
        let values = (0..<1000).map { Float($0) * 0.25 - 7 }
        let x = Tensor(values, shape: [10, 100])
        let y = x.to(EmulatedCUDA.device)
        #expect(y.device == EmulatedCUDA.device)
        #expect(y.to(.cpu).scalars(as: Float.self) == values)
        let ints = Tensor((0..<17).map { Int32($0 * 3) }, shape: [17], device: EmulatedCUDA.device)
        #expect(ints.to(.cpu).scalars(as: Int32.self) == (0..<17).map { Int32($0 * 3) })
    }

    @Test func backendCopies() {
        let b = EmulatedCUDA.backend
        let n = 300
        let src = Storage(byteCount: 4 * n, device: EmulatedCUDA.device), dst = Storage(byteCount: 4 * n, device: EmulatedCUDA.device)
        let values = (0..<n).map { Float($0) - 150 }
        values.withUnsafeBytes { b.copyFromHost($0.baseAddress!, to: Buffer(storage: src, offset: 0, dtype: .float32), byteCount: 4 * n) }
        b.copy(from: Buffer(storage: src, offset: 100, dtype: .float32), to: Buffer(storage: dst, offset: 0, dtype: .float32),
               byteCount: 4 * 200)
        var out = [Float](repeating: 0, count: 200)
        out.withUnsafeMutableBytes { b.copyToHost(Buffer(storage: dst, offset: 0, dtype: .float32), $0.baseAddress!, byteCount: 800) }
        #expect(out == Array(values[100...]))
    }

    @Test func cachingAllocatorReusesBlocks() {
        let d = makeDriver()
        let allocator = CachingAllocator(driver: d, device: .cuda(7))
        func cycle() {
            let blocks = [100, 5000, 3 << 20, 100].map { allocator.allocate(byteCount: $0) }
            for (p, bytes) in zip(blocks, [100, 5000, 3 << 20, 100]) { allocator.release(p, byteCount: bytes) }
        }
        cycle()
        let after = allocator.driverAllocations
        #expect(after == 4)
        for _ in 0..<5 { cycle() }
        #expect(allocator.driverAllocations == after)
        #expect(allocator.inUse == 0 && allocator.held == 512 + 5120 + (4 << 20) + 512)
        allocator.emptyCache()
        #expect(allocator.held == 0 && d.allocatedBytes == 0)
    }

    @Test func outOfMemoryRetriesAfterEmptyingTheCache() {
        let d = makeDriver(totalMemory: 8192)
        let allocator = CachingAllocator(driver: d, device: .cuda(7))
        let a = allocator.allocate(byteCount: 4096), b = allocator.allocate(byteCount: 2048)
        allocator.release(a, byteCount: 4096)
        allocator.release(b, byteCount: 2048)
        #expect(d.allocate(byteCount: 4096) == nil)   // the cache holds 6 KiB of the 8
        let c = allocator.allocate(byteCount: 8000)    // fits only once the cache is returned to the driver
        #expect(allocator.held == 8192 && allocator.driverAllocations == 3)
        allocator.release(c, byteCount: 8000)
    }

    @Test func outOfMemoryEndsTheProcessWithWhatWasAsked() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = CachingAllocator(driver: EmulatedDriver(totalMemory: 1 << 20), device: .cuda(7))
            _ = allocator.allocate(byteCount: 600 << 10)
            _ = allocator.allocate(byteCount: 600 << 10)
        }
        let message = trapMessage(result)
        #expect(message.contains("out of memory on cuda:7 (emulated CUDA device (host)): asked for 0.6 MiB, haste holds 0.6 MiB")
                && message.contains("--batch-size"), "\(message)")
    }

    @Test func errorWordIsSetByAKernel() throws {
        let b = EmulatedCUDA.backend
        let d = makeDriver()
        let word = d.allocate(byteCount: 4)!
        var zero: Int32 = 0
        d.copy(fromHost: &zero, to: word, byteCount: 4)
        let f = try d.load(testSource)
        d.launch(f["set_error"]!, grid: Dim3(3), block: Dim3(32), sharedBytes: 0,
                 arguments: [.pointer(word), .int32(DeviceErrorCode.crossEntropyTarget.rawValue)])
        try d.synchronize()
        #expect(download(d, word, 1, as: Int32.self) == [DeviceErrorCode.crossEntropyTarget.rawValue])
        // The shared backend's word starts clear.
        var code: Int32 = -1
        b.driver.copy(from: b.errorWord, toHost: &code, byteCount: 4)
        #expect(code == 0)
    }

    @Test func backendSynchronizeReportsTheErrorWordAndExits() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let b = EmulatedCUDA.backend
            b.launch(testSource, "set_error", grid: Dim3(2), block: Dim3(32),
                     [.pointer(b.errorWord), .int32(DeviceErrorCode.embeddingIndex.rawValue)])
            b.synchronize()
        }
        let message = trapMessage(result)
        #expect(message.contains("embedding: an index is outside"), "\(message)")
    }
}
