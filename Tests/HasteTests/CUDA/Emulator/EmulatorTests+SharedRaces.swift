import Foundation
import Testing
@testable import HasteCUDA

/// Kernels with and without the barrier their shared memory needs (`EmulatedDriver.checksSharedRaces`).
enum SharedRaceKernels {
    static let source = KernelSource(family: "emulator-race-tests", kernels: ["shift_left", "lane_pairs", "async_neighbour", "previous_block",
                                                                                        "block_sum", "global_neighbour", "far_neighbour",
                                                                                        "two_pages", "shift_blocks", "atomic_counter",
                                                                                        "atomic_blocks", "handover"],
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
/// Block b writes slot b, then reads slot b - 1, which the block before it writes: plainly (mode 0: a race on a GPU,
/// where the blocks run in any order), through haste_ldcg (1: the hand-over reads the emulator lets pass) or by a
/// cp.async of four slots (2: a read too).
extern "C" __global__ void previous_block(float* slots, float* out, int mode) {
    HASTE_DYNAMIC_SHARED(float, staged);                  // 16 bytes
    if (threadIdx.x != 0) return;
    const int b = blockIdx.x;
    slots[b] = (float)(b + 1);
    haste_threadfence();
    if (mode == 2) {
        haste_cp_async<16>(staged, slots + 4 * (b / 4));
        haste_cp_async_wait_all();
    }
    out[b] = b == 0 ? 0.0f : mode == 1 ? haste_ldcg(slots + b - 1) : mode == 2 ? staged[(b - 1) % 4] : slots[b - 1];
}
/// Every thread adds its x to out[0]: plainly (atomic = 0: the right sum here, where the threads run one at a time
/// between barriers; lost updates on a GPU) or by atomicAdd.
extern "C" __global__ void block_sum(const float* x, float* out, int atomic) {
    int t = threadIdx.x;
    if (atomic) atomicAdd(out, x[t]);
    else out[0] += x[t];
}
/// Each thread writes y[t * stride], passes a barrier, adds 1 to it, then reads y[(t + 32) % n * stride], which a
/// thread of the next warp changed: without the barrier between (sync = 0) that change may come before or after the
/// read on a GPU. (With a stride of 256 floats, a page of the check's shadow per thread: its table grows.)
extern "C" __global__ void global_neighbour(const float* x, float* y, float* z, int stride, int sync) {
    int t = threadIdx.x, n = blockDim.x;
    y[t * stride] = x[t];
    __syncthreads();
    y[t * stride] += 1.0f;
    if (sync) __syncthreads();
    z[t] = y[(t + 32) % n * stride];
}
/// Each thread writes y[t * stride], then thread 0 reads y[(n - 1) * stride] (sync = 0: without a barrier between).
/// Block 0's threads start in reverse order (EmulatedDriver.alternatesThreadOrder), so with a stride of 256 floats
/// every thread makes a page of the check's shadow between that write and the read: its table grows in between.
extern "C" __global__ void far_neighbour(float* y, float* z, int stride, int sync) {
    int t = threadIdx.x, n = blockDim.x;
    y[t * stride] = (float)t;
    if (sync) __syncthreads();
    if (t == 0) z[0] = y[(n - 1) * stride];
}
/// y: two 1 KiB pages of the check's shadow, A = y[0 ..< 256] and B = y[256 ..< 512]. Block 0's thread 0 writes
/// A[0]; block 1's thread 0 writes A[1], then its thread 1 B[1]: different bytes, no race (a page of block 0 taken
/// for block 1's A and given to B as well would make one).
extern "C" __global__ void two_pages(float* y) {
    const int t = threadIdx.x, b = blockIdx.x;
    if (b == 0 && t == 0) y[0] = 1.0f;
    if (b == 1 && t == 0) y[1] = 2.0f;
    if (b == 1 && t == 1) y[257] = 3.0f;
}
/// Block b reads slot b + 1 and writes the value to slot b (in_place = 1: block b + 1, which may run first on a GPU,
/// changes the slot block b reads) or to out[b].
extern "C" __global__ void shift_blocks(float* slots, float* out, int in_place) {
    if (threadIdx.x != 0) return;
    const int b = blockIdx.x;
    float v = b + 1 < (int)gridDim.x ? slots[b + 1] : 0.0f;
    (in_place ? slots : out)[b] = v;
}
/// Thread 0 zeroes a counter (in shared memory, or out[1] in device memory), every thread adds 1 to it by atomicAdd,
/// then thread 0 copies it to out[0] after a barrier (mode 0). Mode 1: each thread reads the counter plainly right
/// after its own atomic, no barrier between (another thread's atomic may come before or after the read). Mode 2: no
/// barrier between the zeroing store and the others' atomics.
extern "C" __global__ void atomic_counter(float* out, int mode, int in_shared) {
    __shared__ float counter[1];
    float* c = in_shared ? counter : out + 1;
    const int t = threadIdx.x;
    if (t == 0) c[0] = 0.0f;
    if (mode != 2) __syncthreads();
    atomicAdd(c, 1.0f);
    if (mode == 1) out[2 + t] = c[0];
    __syncthreads();
    if (t == 0) out[0] = c[0];
}
/// Thread 0 of every block adds 1 to count[0] by atomicAdd (mode 0; the count ends at the grid's size). Mode 1: block
/// 0 adds, the others read the count plainly into out[b] (on a GPU the atomic may come before or after those reads).
/// Mode 2: block 0 reads it into out[0], the others add.
extern "C" __global__ void atomic_blocks(unsigned* count, unsigned* out, int mode) {
    if (threadIdx.x != 0) return;
    const int b = blockIdx.x;
    if (mode != 0 && (b == 0) == (mode == 2)) out[b] = count[0];
    else atomicAdd(count, 1u);
}
/// Every thread of every block writes its part, then (fence = 1) fences it; after a barrier thread 0 counts the block
/// by atomicAdd, and the block that counts last sums every block's parts through haste_ldcg (the dq last-block
/// hand-over's shape). Without the fence another block's part may still be on its way when the count is seen.
extern "C" __global__ void handover(float* parts, unsigned* count, float* out, int fence) {
    __shared__ int last[1];
    const int b = blockIdx.x, t = threadIdx.x, n = blockDim.x;
    parts[b * n + t] = (float)(b + 1);
    if (fence) haste_threadfence();
    __syncthreads();
    if (t == 0) last[0] = atomicAdd(count, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last[0]) return;
    haste_threadfence();
    float s = 0.0f;
    for (int i = 0; i < (int)gridDim.x; i++) s += haste_ldcg(parts + i * n + t);
    out[t] = s;
}
"""#)

    /// "emulator-race-tests kernels:N", the place of the first line of `source` holding `fragment`.
    static func place(_ fragment: String) -> String {
        let lines = source.code.split(separator: "\n", omittingEmptySubsequences: false)
        return "emulator-race-tests kernels:\((lines.firstIndex { $0.contains(fragment) } ?? -1) + 1):"
    }
}

/// The race check, in shared memory and device memory, inside a block and between blocks: what it reports, and that
/// the right barriers (or haste_ldcg's hand-over) keep it quiet.
@Suite struct SharedRaceTests {
    /// What launching the race kernel `kernel` on `d` reports ("" when nothing).
    func launch(_ d: EmulatedDriver, _ kernel: String, grid: Int, block: Int, sharedBytes: Int = 0,
                _ arguments: [KernelArgument]) throws -> String {
        d.launch(try d.load(SharedRaceKernels.source)[kernel]!, grid: Dim3(grid), block: Dim3(block),
                 sharedBytes: sharedBytes, arguments: arguments)
        return d.takeError()
    }

    /// The finding of one single-block launch of `kernel` on a fresh emulator (race check on or off), and what it wrote.
    func run(_ kernel: String, threads: Int, sharedBytes: Int, checks: Bool = true, _ flags: [Int32]) throws -> (String, [Float]) {
        let d = EmulatedDriver(recordsIssues: false, checksSharedRaces: checks)
        let px = d.upload((0..<4 * threads).map { Float($0) }), py = d.allocate(byteCount: 4 * threads)!
        let inputs: [KernelArgument] = kernel == "shift_left" ? [.pointer(py)] : [.pointer(px), .pointer(py)]
        let error = try launch(d, kernel, grid: 1, block: threads, sharedBytes: sharedBytes, inputs + flags.map { .int32($0) })
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
        #expect(race.contains(SharedRaceKernels.place("float v = slots[(t + 1) % n];")), "the read's line: \(race)")
        #expect(race.contains(SharedRaceKernels.place("slots[t] = v;")), "the write's line: \(race)")
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
        for mode: Int32 in [1, 0, 2] {
            let d = EmulatedDriver(recordsIssues: false)
            let slots = d.allocate(byteCount: 16)!, out = d.allocate(byteCount: 16)!
            let error = try launch(d, "previous_block", grid: 4, block: 32, sharedBytes: 16,
                                   [.pointer(slots), .pointer(out), .int32(mode)])
            if mode == 1 {
                #expect(error == "")
                #expect(d.download(out, 4, as: Float.self) == [0, 1, 2, 3])
            } else {
                #expect(error.contains("a race between blocks: this thread reads byte 0 of the 16-byte allocation at"), "\(error)")
                #expect(error.contains("which block (0, 0, 0) changed earlier in this launch"), "\(error)")
                let read = mode == 2 ? "haste_cp_async<16>(staged" : ": slots[b - 1];"
                #expect(error.contains(SharedRaceKernels.place(read)), "the read's place: \(error)")
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

    /// `block_sum` over 64 threads of one block: the finding and out[0].
    func blockSum(atomic: Int32, checks: Bool) throws -> (String, Float) {
        let d = EmulatedDriver(recordsIssues: false, checksSharedRaces: checks)
        let px = d.upload((0..<64).map { Float($0) }), out = d.upload([Float(0)])
        let error = try launch(d, "block_sum", grid: 1, block: 64, [.pointer(px), .pointer(out), .int32(atomic)])
        return (error, d.download(out, 1, as: Float.self)[0])
    }

    @Test func threadsOfABlockAddingToOneValueInDeviceMemory() throws {
        #expect(try blockSum(atomic: 1, checks: true) == ("", 2016))
        // Threads run one at a time between barriers here, so the plain += gives the sum: only the check sees it.
        #expect(try blockSum(atomic: 0, checks: false) == ("", 2016))
        let (race, _) = try blockSum(atomic: 0, checks: true)
        #expect(race.contains("a race in device memory: this thread"), "\(race)")
        #expect(race.contains("byte 0 of the 4-byte allocation at"), "\(race)")
        #expect(race.contains("(a lane of this warp: no __syncwarp() or __syncthreads() between"), "\(race)")
        #expect(race.contains(SharedRaceKernels.place("else out[0] += x[t];")), "the += line: \(race)")
    }

    @Test(arguments: [(64, 1), (1024, 256)])
    func neighboursInDeviceMemoryNeedABarrier(threads: Int, stride: Int) throws {
        for sync: Int32 in [1, 0] {
            let d = EmulatedDriver(recordsIssues: false)
            let x = d.upload((0..<threads).map { Float($0) })
            let y = d.allocate(byteCount: 4 * threads * stride)!, z = d.allocate(byteCount: 4 * threads)!
            let error = try launch(d, "global_neighbour", grid: 1, block: threads,
                                   [.pointer(x), .pointer(y), .pointer(z), .int32(Int32(stride)), .int32(sync)])
            if sync == 1 {
                #expect(error == "")
                #expect(d.download(z, threads, as: Float.self) == (0..<threads).map { Float(($0 + 32) % threads + 1) })
            } else {
                // Which access comes second depends on the order the threads run in: either is the race.
                #expect(error.contains("a race in device memory: this thread"), "\(error)")
                #expect(error.contains("of the \(4 * threads * stride)-byte allocation at"), "\(error)")
                #expect(error.contains("(no __syncthreads() between"), "\(error)")
                #expect(error.contains(SharedRaceKernels.place("y[t * stride] += 1.0f;")), "the change's line: \(error)")
                #expect(error.contains(SharedRaceKernels.place("z[t] = y[(t + 32) % n * stride];")), "the read's line: \(error)")
            }
        }
    }

    @Test func aWriteFoundAfterTheShadowsTableGrew() throws {
        for sync: Int32 in [1, 0] {
            let d = EmulatedDriver(recordsIssues: false)
            let y = d.allocate(byteCount: 4 * 1024 * 256)!, z = d.allocate(byteCount: 4)!
            let error = try launch(d, "far_neighbour", grid: 1, block: 1024,
                                   [.pointer(y), .pointer(z), .int32(256), .int32(sync)])
            if sync == 1 {
                #expect(error == "")
                #expect(d.download(z, 1, as: Float.self) == [1023])
            } else {
                #expect(error.contains("thread (0, 0, 0): a race in device memory: this thread reads byte \(4 * 1023 * 256) "
                                       + "of the \(4 * 1024 * 256)-byte allocation at"), "\(error)")
                #expect(error.contains("which thread 1023 wrote at " + SharedRaceKernels.place("y[t * stride] = (float)t;")),
                        "\(error)")
            }
        }
    }

    @Test func eachBlockHasItsOwnPagesOfTheShadow() throws {
        let d = EmulatedDriver(recordsIssues: false)
        let y = d.upload([Float](repeating: 0, count: 1024))
        let a = (y + 1023) / 1024 * 1024                          // A and B: whole 1 KiB pages
        #expect(try launch(d, "two_pages", grid: 2, block: 32, [.pointer(a)]) == "")
        let values = d.download(y, 1024, as: Float.self), first = Int(a - y) / 4
        #expect(values[first] == 1 && values[first + 1] == 2 && values[first + 257] == 3)
    }

    @Test func aBlockChangingWhatAnEarlierBlockRead() throws {
        // Out of place: quiet, each slot's right neighbour.
        let d = EmulatedDriver(recordsIssues: false)
        let slots = d.upload([Float(1), 2, 3, 4]), out = d.allocate(byteCount: 16)!
        #expect(try launch(d, "shift_blocks", grid: 4, block: 32, [.pointer(slots), .pointer(out), .int32(0)]) == "")
        #expect(d.download(out, 4, as: Float.self) == [2, 3, 4, 0])
        // In place: block 1 changes slot 1 (2.0 → 3.0: little-endian 0x40000000 → 0x40400000, its third byte
        // first), which block 0 read.
        let race = try launch(d, "shift_blocks", grid: 4, block: 32, [.pointer(slots), .pointer(out), .int32(1)])
        #expect(race.contains("this block changed byte 6 of the 16-byte allocation at"), "\(race)")
        #expect(race.contains("which block (0, 0, 0) read earlier in this launch"), "\(race)")
    }

    /// `atomic_counter` over 64 threads of one block in `mode`, its counter in shared or device memory, the threads
    /// started in index order or (`reverse`) in reverse: the finding and out[0].
    func atomicCounter(mode: Int32, inShared: Bool, reverse: Bool = false, checks: Bool = true) throws -> (String, Float) {
        let d = EmulatedDriver(recordsIssues: false, alternatesThreadOrder: reverse, checksSharedRaces: checks)
        let out = d.upload([Float](repeating: -1, count: 66))
        let error = try launch(d, "atomic_counter", grid: 1, block: 64, [.pointer(out), .int32(mode), .int32(inShared ? 1 : 0)])
        return (error, d.download(out, 1, as: Float.self)[0])
    }

    @Test(arguments: [true, false])
    func atomicsRaceWithPlainAccessesOnly(inShared: Bool) throws {
        // (The counter's offset among the static shared arrays is the linker's business.)
        let (memory, counter) = inShared ? ("shared", "of the static shared memory, which thread")
                                         : ("device", "byte 4 of the 264-byte allocation at")
        // Atomics of every thread between two barriers: no race among them.
        #expect(try atomicCounter(mode: 0, inShared: inShared) == ("", 64))
        // A plain read right after each thread's atomic: the threads run one at a time here, so only the check sees it.
        #expect(try atomicCounter(mode: 1, inShared: inShared, checks: false) == ("", 64))
        let (read, _) = try atomicCounter(mode: 1, inShared: inShared)
        // (Which thread's read comes first after the barrier is the scheduler's business.)
        #expect(read.contains("a race in \(memory) memory: this thread changes by an atomic byte "), "\(read)")
        #expect(read.contains(counter), "\(read)")
        #expect(read.contains(" read at " + SharedRaceKernels.place("if (mode == 1) out[2 + t] = c[0];")), "\(read)")
        #expect(read.contains(SharedRaceKernels.place("atomicAdd(c, 1.0f);")), "the atomic's line: \(read)")
        // The zeroing store and the other threads' atomics with no barrier between.
        let (store, _) = try atomicCounter(mode: 2, inShared: inShared)
        #expect(store.contains("a race in \(memory) memory: this thread changes by an atomic byte "), "\(store)")
        #expect(store.contains(counter), "\(store)")
        #expect(store.contains("which thread 0 wrote at " + SharedRaceKernels.place("if (t == 0) c[0] = 0.0f;")), "\(store)")
    }

    @Test func aPlainAccessAfterOtherThreadsAtomics() throws {
        // Threads 63 … 1 add before thread 0 stores (block 0's threads in reverse order).
        let (error, _) = try atomicCounter(mode: 2, inShared: true, reverse: true)
        #expect(error.contains("thread (0, 0, 0): a race in shared memory: this thread writes byte "), "\(error)")
        #expect(error.contains("of the static shared memory, which other threads changed by an atomic at "
                               + SharedRaceKernels.place("atomicAdd(c, 1.0f);")), "\(error)")
        #expect(error.contains("an atomic is atomic only against other atomics"), "\(error)")
    }

    @Test func atomicsOfOneBlockAndPlainReadsOfAnother() throws {
        for mode: Int32 in [0, 1, 2] {
            let d = EmulatedDriver(recordsIssues: false)
            let count = d.upload([UInt32(0)]), out = d.upload([UInt32](repeating: 0, count: 4))
            let error = try launch(d, "atomic_blocks", grid: 4, block: 32, [.pointer(count), .pointer(out), .int32(mode)])
            switch mode {
            case 0:
                #expect(error == "")
                #expect(d.download(count, 1, as: UInt32.self) == [4])
            case 1:                                   // block 1 reads what block 0's atomic changed
                #expect(error.contains("block (1, 0, 0), thread (0, 0, 0): a race between blocks: this thread reads byte 0 of "
                                       + "the 4-byte allocation at"), "\(error)")
                #expect(error.contains("which block (0, 0, 0) changed earlier in this launch by an atomic"), "\(error)")
                #expect(error.contains(SharedRaceKernels.place("if (mode != 0 && (b == 0) == (mode == 2)) out[b] = count[0];")),
                        "the read's place: \(error)")
            default:                                  // block 1's atomic changes what block 0 read
                #expect(error.contains("block (1, 0, 0), thread (0, 0, 0): a race between blocks: this thread changes by an "
                                       + "atomic byte 0 of the 4-byte allocation at"), "\(error)")
                #expect(error.contains("which block (0, 0, 0) read earlier in this launch"), "\(error)")
                #expect(error.contains(SharedRaceKernels.place("else atomicAdd(count, 1u);")), "the atomic's place: \(error)")
            }
        }
    }

    @Test func aHandOverNeedsTheWritersFence() throws {
        for fence: Int32 in [1, 0] {
            let d = EmulatedDriver(recordsIssues: false)
            let parts = d.allocate(byteCount: 4 * 4 * 32)!, count = d.upload([UInt32(0)]), out = d.allocate(byteCount: 4 * 32)!
            let error = try launch(d, "handover", grid: 4, block: 32, [.pointer(parts), .pointer(count), .pointer(out), .int32(fence)])
            if fence == 1 {
                #expect(error == "")
                #expect(d.download(out, 32, as: Float.self) == [Float](repeating: 10, count: 32))
            } else {
                // (Which thread of the last block reads first after its barrier is the scheduler's business.)
                #expect(error.contains("kernel handover, block (3, 0, 0), thread ("), "\(error)")
                #expect(error.contains("a hand-over without a fence: this thread reads through haste_ldcg byte "), "\(error)")
                #expect(error.contains("of the 512-byte allocation at"), "\(error)")
                #expect(error.contains("which block (0, 0, 0) wrote and then released by the atomic at "
                                       + SharedRaceKernels.place("if (t == 0) last[0] = atomicAdd(count, 1u) == gridDim.x - 1;")),
                        "\(error)")
            }
        }
    }
}
