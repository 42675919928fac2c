import Foundation
import Testing
@testable import HasteCUDA

/// Kernels with and without the barrier their shared memory needs (`EmulatedDriver.checksSharedRaces`).
enum SharedRaceKernels {
    static let source = KernelSource(family: "emulator-race-tests", kernels: ["shift_left", "lane_pairs", "async_neighbour", "previous_block"],
                                     code: #"""
/// Each thread reads its right neighbour's slot, then writes its own: without the barrier between (sync = 0) the
/// neighbour's write may come before or after this read.
extern "C" __global__ void shift_left(float* y, int sync) {
    HASTE_DYNAMIC_SHARED(float, slots);
    int t = threadIdx.x, n = blockDim.x;
    slots[t] = (float)t;
    __syncthreads();
    float v = slots[(t + 1) % n];
    if (sync) __syncthreads();
    slots[t] = v;
    __syncthreads();
    y[blockIdx.x * n + t] = slots[t];
}
/// Lane l reads lane l ^ 1's slot after a shuffle (sync = 0) or a __syncwarp (1): every lane has written before any
/// passes either, in any order the emulator runs them, but only __syncwarp orders memory on a GPU.
extern "C" __global__ void lane_pairs(const float* x, float* y, int sync) {
    __shared__ float slots[64];
    int t = threadIdx.x;
    slots[t] = x[t];
    float zero = 0.0f;
    if (sync) __syncwarp();
    else zero = __shfl_xor_sync(HASTE_FULL_MASK, 0.0f, 1);
    y[t] = slots[t ^ 1] + zero;
}
/// Each thread copies 4 floats into shared memory by cp.async, waits for it (wait) and passes a barrier (sync) or
/// not, then reads its neighbour's.
extern "C" __global__ void async_neighbour(const float* x, float* y, int wait, int sync) {
    HASTE_DYNAMIC_SHARED(float, tile);
    int t = threadIdx.x, n = blockDim.x;
    haste_cp_async<16>(tile + 4 * t, x + 4 * t);
    if (wait) haste_cp_async_wait_all();
    if (sync) __syncthreads();
    y[t] = tile[4 * ((t + 1) % n)];
}
/// Block b writes slot b, then reads slot b - 1, which the block before it writes: plainly (a race on a GPU, where
/// the blocks run in any order) or (ldcg = 1) through haste_ldcg, the hand-over reads the emulator lets pass.
extern "C" __global__ void previous_block(float* slots, float* out, int ldcg) {
    if (threadIdx.x != 0) return;
    const int b = blockIdx.x;
    slots[b] = (float)(b + 1);
    haste_threadfence();
    out[b] = b == 0 ? 0.0f : ldcg ? haste_ldcg(slots + b - 1) : slots[b - 1];
}
"""#)
}

/// The race check inside a block: what it reports, and that the right barriers keep it quiet.
@Suite struct SharedRaceTests {
    /// The finding of one launch of `kernel` on a fresh emulator (race check on or off), and what it wrote.
    func run(_ kernel: String, threads: Int, sharedBytes: Int, checks: Bool = true, _ flags: [Int32]) throws -> (String, [Float]) {
        let d = EmulatedDriver(recordsIssues: false, checksSharedRaces: checks)
        let f = try d.load(SharedRaceKernels.source)
        let x = (0..<4 * threads).map { Float($0) }
        let px = d.upload(x), py = d.allocate(byteCount: 4 * threads)!
        let inputs: [KernelArgument] = kernel == "shift_left" ? [.pointer(py)] : [.pointer(px), .pointer(py)]
        d.launch(f[kernel]!, grid: Dim3(1), block: Dim3(threads), sharedBytes: sharedBytes,
                 arguments: inputs + flags.map { .int32($0) })
        let error = d.takeError()
        return (error, error.isEmpty ? d.download(py, threads, as: Float.self) : [])
    }

    @Test func neighboursReadAndWriteOneSlotWithoutABarrier() throws {
        let (ok, y) = try run("shift_left", threads: 64, sharedBytes: 256, [1])
        #expect(ok == "")
        let shifted: [Float] = (0..<64).map { Float(($0 + 1) % 64) }
        #expect(y == shifted)
        let (race, _) = try run("shift_left", threads: 64, sharedBytes: 256, [0])
        // Which of the two accesses comes second depends on the order the threads run in: either is the race.
        #expect(race.contains("a race in shared memory: this thread"), "\(race)")
        #expect(race.contains("of the dynamic shared memory, which thread"), "\(race)")
        #expect(race.contains("(no __syncthreads() between"), "\(race)")
        #expect(race.contains("emulator-race-tests kernels:8"), "the read's line: \(race)")
        #expect(race.contains("emulator-race-tests kernels:10"), "the write's line: \(race)")
    }

    @Test func lanesOfAWarpNeedSyncwarpNotAShuffle() throws {
        let (ok, y) = try run("lane_pairs", threads: 64, sharedBytes: 0, [1])
        #expect(ok == "")
        let pairs: [Float] = (0..<64).map { Float($0 ^ 1) }
        #expect(y == pairs)
        // The shuffle gives the right values here in either thread order: only the check sees the race.
        let (unchecked, same) = try run("lane_pairs", threads: 64, sharedBytes: 0, checks: false, [0])
        #expect(unchecked == "" && same == y)
        let (race, _) = try run("lane_pairs", threads: 64, sharedBytes: 0, [0])
        #expect(race.contains("of the static shared memory, which thread"), "\(race)")
        #expect(race.contains("a lane of this warp: no __syncwarp() or __syncthreads() between"), "\(race)")
    }

    @Test func aBlockReadingWhatAnEarlierBlockWrote() throws {
        for ldcg: Int32 in [1, 0] {
            let d = EmulatedDriver(recordsIssues: false)
            let f = try d.load(SharedRaceKernels.source)
            let slots = d.allocate(byteCount: 16)!, out = d.allocate(byteCount: 16)!
            d.launch(f["previous_block"]!, grid: Dim3(4), block: Dim3(32), sharedBytes: 0,
                     arguments: [.pointer(slots), .pointer(out), .int32(ldcg)])
            let error = d.takeError()
            if ldcg == 1 {
                #expect(error == "")
                #expect(d.download(out, 4, as: Float.self) == [0, 1, 2, 3])
            } else {
                #expect(error.contains("a race between blocks: this thread reads byte 0 of the 16-byte allocation at"), "\(error)")
                #expect(error.contains("which block (0, 0, 0) changed earlier in this launch"), "\(error)")
                #expect(error.contains("emulator-race-tests kernels:"), "the read's place: \(error)")
            }
        }
    }

    @Test func cpAsyncBytesOnlyAfterTheWaitAndABarrier() throws {
        let (ok, y) = try run("async_neighbour", threads: 32, sharedBytes: 512, [1, 1])
        #expect(ok == "")
        let neighbours: [Float] = (0..<32).map { Float(4 * (($0 + 1) % 32)) }
        #expect(y == neighbours)
        let (noBarrier, _) = try run("async_neighbour", threads: 32, sharedBytes: 512, [1, 0])
        #expect(noBarrier.contains("a race in shared memory: this thread reads byte"), "\(noBarrier)")
        let (noWait, _) = try run("async_neighbour", threads: 32, sharedBytes: 512, [0, 1])
        #expect(noWait.contains("a cp.async"), "\(noWait)")
    }
}
