import Foundation
import HasteTensor

/// What a driver can say about the work a step queued: `HostOnlyDriver` counts it, `CUDADriver` under
/// `HASTE_CUDA_PROFILE=1` also times it on the GPU. `haste bench train --device cuda` resets the statistics before
/// its timed steps and prints `report(steps:)` after them (Support/Benchmark.swift).
public protocol LaunchStatistics: AnyObject {
    /// False for a `CUDADriver` without `HASTE_CUDA_PROFILE=1` (nothing is counted).
    var isCounting: Bool { get }
    func resetCounts()
    /// Kernel launches and GEMMs since `resetCounts()`.
    var launchTotal: Int { get }
    var gemmTotal: Int { get }
    /// The statistics divided by `steps`, the most expensive (or frequent) first.
    func report(steps: Int) -> String
}

/// `HASTE_CUDA_PROFILE=1`: GPU time per kernel name, per GEMM (dtypes and cuBLAS's m×n×k) and per device copy,
/// from a pair of CUDA events recorded on haste's stream around each one (the events' own cost is a few
/// microseconds of host time per launch and nothing measurable on the GPU). Times are gathered whenever the host
/// waits for the stream (`collect`, after `cuStreamSynchronize`). The sum of the kernel times against a step's
/// wall time says how long the GPU sat idle (waiting for the host); the table says which kernels to make faster.
final class KernelProfiler {
    typealias Event = OpaquePointer
    let events: CUDAEvents
    /// cuFuncGetAttribute and cuOccupancyMaxActiveBlocksPerMultiprocessor, for `occupancy` (nil where the driver
    /// lacks them: the report then has no occupancy column).
    let functionAttribute: (@convention(c) (UnsafeMutablePointer<Int32>, Int32, OpaquePointer?) -> Int32)?
    let activeBlocks: (@convention(c) (UnsafeMutablePointer<Int32>, OpaquePointer?, Int32, Int) -> Int32)?
    /// Per kernel name, from its first launch: registers a thread, local (spill) bytes a thread, dynamic shared
    /// bytes a block and the blocks per multiprocessor the driver's occupancy calculator gives for that launch
    /// ("255 regs, 8 B local, 77.8 KiB shared: 2 blocks/SM"): whether a kernel runs as many blocks at once as its
    /// design assumes (the flash kernels: 2), which no host-side count shows.
    private(set) var occupancy: [String: String] = [:]
    private var spare: [Event] = []
    private var pending: [(name: String, start: Event, end: Event)] = []
    private(set) var totals: [String: (calls: Int, ms: Double)] = [:]
    private(set) var launches = 0, gemms = 0
    private var failure: String?

    init(library: CUDALibrarySearch.Loaded) throws {
        let k = CUDALibraryKind.driver
        events = try CUDAEvents(library: library)
        functionAttribute = try? library.symbol("cuFuncGetAttribute", k)
        activeBlocks = try? library.symbol("cuOccupancyMaxActiveBlocksPerMultiprocessor", k)
    }

    /// Notes `name`'s occupancy at its first launch (`occupancy`); `function` is its CUfunction.
    func noteOccupancy(_ name: String, _ function: OpaquePointer?, threads: Int, sharedBytes: Int) {
        guard occupancy[name] == nil, let functionAttribute, let activeBlocks else { return }
        var regs: Int32 = -1, local: Int32 = -1, blocks: Int32 = -1
        _ = functionAttribute(&regs, DriverAPI.functionRegisters, function)
        _ = functionAttribute(&local, DriverAPI.functionLocalBytes, function)
        let r = activeBlocks(&blocks, function, Int32(threads), sharedBytes)
        occupancy[name] = KernelProfiler.occupancyText(registers: Int(regs), localBytes: Int(local), sharedBytes: sharedBytes,
                                                       threads: threads, blocksPerSM: r == 0 ? Int(blocks) : nil)
    }

    /// "255 regs, 8 B local, 77.8 KiB shared, 128 threads: 2 blocks/SM" (`blocksPerSM` nil: "blocks/SM unknown").
    static func occupancyText(registers: Int, localBytes: Int, sharedBytes: Int, threads: Int, blocksPerSM: Int?) -> String {
        String(format: "%d regs, %d B local, %.1f KiB shared, %d threads: ", registers, localBytes, Double(sharedBytes) / 1024, threads)
            + (blocksPerSM.map { "\($0) blocks/SM" } ?? "blocks/SM unknown")
    }

    /// Records a start event on `stream` (nil when events fail: the profile then says so).
    func begin(_ stream: OpaquePointer?) -> Event? {
        var e = spare.popLast()
        if e == nil {
            var made: Event?
            if events.create(&made, 0) != 0 { failure = "cuEventCreate failed"; return nil }
            e = made
        }
        if events.record(e, stream) != 0 { failure = "cuEventRecord failed"; spare.append(e!); return nil }
        return e
    }

    enum Kind { case kernel, gemm, copy }

    /// Records the end event of `name` begun at `start`, counted as a kernel launch, a GEMM or neither (a copy).
    func end(_ name: @autoclosure () -> String, _ start: Event?, _ stream: OpaquePointer?, _ kind: Kind) {
        guard let start else { return }
        guard let stop = begin(stream) else { spare.append(start); return }
        pending.append((name(), start, stop))
        switch kind {
        case .kernel: launches += 1
        case .gemm: gemms += 1
        case .copy: break
        }
    }

    /// After the stream has been waited for: every pending pair's elapsed time into `totals`.
    func collect() {
        for p in pending {
            var ms: Float = 0
            if events.elapsed(&ms, p.start, p.end) == 0 {
                let t = totals[p.name] ?? (0, 0)
                totals[p.name] = (t.calls + 1, t.ms + Double(ms))
            } else if failure == nil {
                failure = "cuEventElapsedTime failed for \(p.name)"
            }
            spare.append(p.start); spare.append(p.end)
        }
        pending.removeAll(keepingCapacity: true)
    }

    func reset() { collect(); totals = [:]; launches = 0; gemms = 0 }

    /// Per step: the summed GPU time, then the `top` names by time with calls, ms and share.
    func report(steps: Int, top: Int = 30) -> String {
        collect()
        let s = Double(Swift.max(steps, 1)), sum = totals.values.reduce(0) { $0 + $1.ms }
        let rows = totals.sorted { $0.value.ms != $1.value.ms ? $0.value.ms > $1.value.ms : $0.key < $1.key }.prefix(top).map {
            String(format: "  %9.3f ms %5.1f %%  %7.1f calls  ", $0.value.ms / s, 100 * $0.value.ms / Swift.max(sum, 1e-12),
                   Double($0.value.calls) / s) + $0.key + (occupancy[$0.key].map { "  [\($0)]" } ?? "")
        }
        return ([String(format: "per step: %.3f ms of GPU time in %.1f kernel launches and %.1f GEMMs (%d names)%@; by time:",
                        sum / s, Double(launches) / s, Double(gemms) / s, totals.count, failure.map { " (\($0): incomplete)" } ?? "")]
                + rows).joined(separator: "\n")
    }
}
