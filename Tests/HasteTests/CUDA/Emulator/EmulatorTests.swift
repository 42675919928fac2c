import Foundation
import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// Kernels that exercise the emulator's CUDA subset (the prelude's helpers included) and its checks.
enum EmulatorTestKernels {
    static let source = KernelSource(family: "emulator-tests", kernels: [
        "scale", "row_sum", "shuffles", "reverse_dynamic", "atomics", "skips_barrier", "divergent_shuffle", "indices_2d",
        "set_error", "read_slot", "write_at", "divergent_barriers", "divide", "big_stack", "local_index", "broadcast",
        "accumulate",
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
/// total += Σ x over blocks, one add a block: atomically, or (atomic = 0) a plain read-modify-write: a race.
extern "C" __global__ void accumulate(const float* x, float* total, int atomic) {
    if (threadIdx.x != 0) return;
    if (atomic) atomicAdd(total, x[blockIdx.x]);
    else *total += x[blockIdx.x];
}
"""#)
}

extension EmulatedDriver {
    /// A private emulated device whose findings are thrown by `synchronize()` (`takeError`).
    static func forTests(totalMemory: Int = 1 << 30) -> EmulatedDriver {
        EmulatedDriver(totalMemory: totalMemory, recordsIssues: false)
    }

    /// A new allocation holding `values`.
    func upload<T>(_ values: [T]) -> DevicePointer {
        let p = allocate(byteCount: values.count * MemoryLayout<T>.stride)!
        values.withUnsafeBytes { copy(fromHost: $0.baseAddress!, to: p, byteCount: $0.count) }
        return p
    }

    func download<T>(_ p: DevicePointer, _ count: Int, as _: T.Type = T.self) -> [T] {
        [T](unsafeUninitializedCapacity: count) { buffer, initialised in
            copy(from: p, toHost: UnsafeMutableRawPointer(buffer.baseAddress!), byteCount: count * MemoryLayout<T>.stride)
            initialised = count
        }
    }

    /// The first finding kept since the last call, as text ("" when none).
    func takeError() -> String {
        do { try synchronize(); return "" } catch { return "\(error)" }
    }
}

/// What kernels compute on the emulator: the CUDA subset, thread and block indexing, shared memory, orders.
@Suite struct EmulatorKernelTests {
    let d = EmulatedDriver.forTests()
    let f: [String: GPUFunction]
    init() throws { f = try d.load(EmulatorTestKernels.source) }

    @Test func gridStrideElementwise() throws {
        let n = 100_003
        let x = (0..<n).map { Float($0 % 97) - 40 }
        let px = d.upload(x), py = d.allocate(byteCount: 4 * n)!
        // 37 blocks of 128 threads cover n only through the grid-stride loop.
        d.launch(f["scale"]!, grid: Dim3(37), block: Dim3(128), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .float(-1.5), .int64(Int64(n))])
        try d.synchronize()
        #expect(d.download(py, n, as: Float.self) == x.map { -1.5 * $0 })
    }


    @Test func blockReductionWithSharedScratch() throws {
        let rows = 13, cols = 1000
        let x = (0..<rows * cols).map { Float(($0 * 7919) % 1001) / 1000 - 0.5 }
        let px = d.upload(x), py = d.allocate(byteCount: 4 * rows)!
        for threads in [32, 256, 1024] {
            d.launch(f["row_sum"]!, grid: Dim3(rows), block: Dim3(threads), sharedBytes: 0,
                     arguments: [.pointer(px), .pointer(py), .int64(Int64(cols))])
            try d.synchronize()
            let y = d.download(py, rows, as: Float.self)
            for r in 0..<rows {
                let reference = x[r * cols ..< (r + 1) * cols].reduce(0.0) { $0 + Double($1) }
                #expect(abs(Double(y[r]) - reference) <= 1e-4, "threads \(threads), row \(r): \(y[r]) vs \(reference)")
            }
        }
    }


    @Test func warpShuffles() throws {
        let n = 128
        let v = (0..<n).map { Float(($0 * 37) % 101) }
        let pv = d.upload(v)
        let outs = (0..<5).map { _ in d.allocate(byteCount: 4 * n)! }
        d.launch(f["shuffles"]!, grid: Dim3(2), block: Dim3(64), sharedBytes: 0,
                 arguments: [.pointer(pv)] + outs.map { .pointer($0) })
        try d.synchronize()
        let xor3 = d.download(outs[0], n, as: Float.self), down5 = d.download(outs[1], n, as: Float.self)
        let wmax = d.download(outs[2], n, as: Float.self), up1 = d.download(outs[3], n, as: Int32.self)
        let votes = d.download(outs[4], n, as: UInt32.self)
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
        let px = d.upload(x), py = d.allocate(byteCount: 4 * x.count)!
        d.launch(f["reverse_dynamic"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 4 * threads,
                 arguments: [.pointer(px), .pointer(py)])
        try d.synchronize()
        let expected = (0..<blocks).flatMap { b in (0..<threads).map { Float(b * threads + threads - 1 - $0) } }
        #expect(d.download(py, x.count, as: Float.self) == expected)
    }


    @Test func atomics() throws {
        let pf = d.upload([Float(0)]), pd = d.upload([Double(0)]), pc = d.upload([Int32(0)])
        let pm = d.upload([Int32(-5)]), pw = d.upload([Int32(-1)])
        d.launch(f["atomics"]!, grid: Dim3(5), block: Dim3(96), sharedBytes: 0,
                 arguments: [.pointer(pf), .pointer(pd), .pointer(pc), .pointer(pm), .pointer(pw)])
        try d.synchronize()
        let n = 5 * 96
        #expect(d.download(pf, 1, as: Float.self) == [Float(n) * 0.5])
        #expect(d.download(pd, 1, as: Double.self) == [Double(n * (n - 1) / 2)])
        #expect(d.download(pc, 1, as: Int32.self) == [Int32(n)])   // the first writer saw count 0
        #expect(d.download(pm, 1, as: Int32.self) == [Int32(n - 1)])
        #expect(d.download(pw, 1, as: Int32.self) == [95])   // block 0 starts its threads in reverse order
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
        #expect(d.download(p, total, as: Int32.self) == expected)
    }


    @Test func alternatingThreadOrderExposesAMissingBarrier() throws {
        let blocks = 3, threads = 64
        let x: [Float] = [5, 7, 9], expected = x.flatMap { [Float](repeating: $0, count: threads) }
        let px = d.upload(x), py = d.allocate(byteCount: 4 * blocks * threads)!
        d.launch(f["broadcast"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .int32(1)])
        try d.synchronize()
        #expect(d.download(py, blocks * threads, as: Float.self) == expected)
        // Without the barrier, the reversed blocks (0 and 2) read the shared value before thread 0 writes it: poison.
        // (The race check inside blocks, off here, would report the launch instead: SharedRaceTests.)
        let unchecked = EmulatedDriver(recordsIssues: false, checksSharedRaces: false)
        let u = try unchecked.load(EmulatorTestKernels.source)
        let ux = unchecked.upload(x), uy = unchecked.allocate(byteCount: 4 * blocks * threads)!
        unchecked.launch(u["broadcast"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 0,
                         arguments: [.pointer(ux), .pointer(uy), .int32(0)])
        try unchecked.synchronize()
        let racy = unchecked.download(uy, blocks * threads, as: Float.self)
        #expect(racy[0] == 5 && racy[1 ..< threads].allSatisfy { $0.isNaN } && Array(racy[threads ..< 2 * threads]) == [Float](repeating: 7, count: threads))
        // In index order only, the race goes unnoticed.
        let forward = EmulatedDriver(recordsIssues: false, alternatesThreadOrder: false, checksSharedRaces: false)
        let g = try forward.load(EmulatorTestKernels.source)
        let fx = forward.upload(x), fy = forward.allocate(byteCount: 4 * blocks * threads)!
        forward.launch(g["broadcast"]!, grid: Dim3(blocks), block: Dim3(threads), sharedBytes: 0,
                       arguments: [.pointer(fx), .pointer(fy), .int32(0)])
        try forward.synchronize()
        #expect(forward.download(fy, blocks * threads, as: Float.self) == expected)
    }

}
