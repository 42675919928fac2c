import Foundation
import HasteCUDA
import HasteTensor

/// One row of `haste bench`: what runs, at which shape, how much work it does (napkin math: FLOPs for
/// GEMMs, bytes moved for memory-bound kernels, images for training steps), and `prepare`, which builds the
/// inputs (untimed) and returns the closure that is timed. Rows must do the same work as the row of the same
/// name in Scripts/bench_torch.py (ops) or Scripts/bench_torch_train.py (train). `stepFLOPs` (training rows):
/// the analytic FLOPs of one call, reported as a FLOP rate beside the img/s, with the row's peak memory.
struct BenchCase {
    enum Work { case flops(Double), bytes(Double), images(Double) }
    let op: String
    let shape: String
    let work: Work
    var stepFLOPs: Double? = nil
    let prepare: () throws -> () -> Void
}

struct BenchResult: Encodable {
    let op: String
    let shape: String
    let msMedian: Double
    let msMin: Double
    /// GFLOP/s, GB/s or img/s at the median time.
    let rate: Double
    let unit: String
    let reps: Int
    /// Rows with `stepFLOPs`: FLOPs per call, TFLOP/s at the median time, and the peak bytes (MiB) of tensor
    /// memory while the row was built and run (`Benchmark.PeakMemory`).
    var flopPerStep: Double? = nil, tflops: Double? = nil, peakMemoryMB: Double? = nil
    /// Such rows on the CPU, per timed call: minor page faults of the process (getrusage) and large host blocks
    /// mapped or resized (`HostBlockStats.misses`); both 0 once a step's sizes repeat and the cache holds them.
    var minorFaultsPerStep: Double? = nil, hostMapsPerStep: Double? = nil
    /// `HASTE_CUDA_HOST_ONLY=1` (HostOnlyDriver) or `HASTE_CUDA_PROFILE=1` (KernelProfiler): kernel launches and GEMMs
    /// per timed call, and the report (the most frequent kernels, or the GPU time per kernel). Both include the
    /// timing's own one-element read after each call (`finish`: 2 launches).
    var launchesPerStep: Double? = nil, gemmsPerStep: Double? = nil, launchReport: String? = nil
    /// CUDA rows: GB of tensors the caching allocator handed out per timed call (`CachingAllocator.bytesHandedOut`).
    var tensorGBPerStep: Double? = nil
    /// CUDA rows: the allocator's driver allocations per timed call (0 once warm, unless a full device makes it
    /// return its cache and allocate again: `CachingAllocator.allocate`) and the bytes it holds (MiB) at the end.
    var driverAllocationsPerStep: Double? = nil, heldMB: Double? = nil

    private enum CodingKeys: String, CodingKey {
        case op, shape, msMedian = "ms_median", msMin = "ms_min", rate, unit, reps, flopPerStep = "flop_per_step",
             tflops = "tflop_per_s", peakMemoryMB = "peak_memory_mb", minorFaultsPerStep = "minor_faults_per_step",
             hostMapsPerStep = "host_maps_per_step", launchesPerStep = "launches_per_step", gemmsPerStep = "gemms_per_step",
             tensorGBPerStep = "tensor_gb_per_step", driverAllocationsPerStep = "driver_allocations_per_step", heldMB = "held_mb"
    }
}

/// `haste bench sample`: a whole sampling run's images/s from its guided and unguided rows (`BenchSampleCommand.wholeRuns`).
struct SamplingRun: Encodable {
    let model: String, batch: Int, steps: Int, guidedSteps: Int, imagesPerSecond: Double
    /// Milliseconds a step, guided and unguided (the rows' medians over their steps a call).
    let msPerGuidedStep: Double, msPerUnguidedStep: Double
    var text: String {
        String(format: "%@ bs%d: %.2f ms a guided step, %.2f unguided; %d steps (%d guided) → %.3f img/s, %.1f s a batch",
               model, batch, msPerGuidedStep, msPerUnguidedStep, steps, guidedSteps, imagesPerSecond, Double(batch) / imagesPerSecond)
    }
    private enum CodingKeys: String, CodingKey {
        case model, batch, steps, guidedSteps = "guided_steps", imagesPerSecond = "images_per_s",
             msPerGuidedStep = "ms_per_guided_step", msPerUnguidedStep = "ms_per_unguided_step"
    }
}

/// Warm-up runs, then `reps` timed runs; the median is the figure quoted, the minimum shows the noise floor.
/// On a device, each run ends with `finish(device)` inside the timed region, so the clock is read after the
/// device has done the work, not when the host has merely queued it.
enum Benchmark {
    static func run(_ c: BenchCase, warmup: Int, reps: Int, device: Device = .cpu) throws -> BenchResult {
        if c.stepFLOPs != nil {
            finish(device)
            PeakMemory.reset(device)
        }
        let body = try c.prepare()
        for _ in 0..<warmup { body() }
        finish(device)
        let stats = ((Backends.registered(device) as? CUDABackend)?.driver as? LaunchStatistics).flatMap { $0.isCounting ? $0 : nil }
        stats?.resetCounts()
        let handedOut = PeakMemory.allocator(device)?.bytesHandedOut, allocations = PeakMemory.allocator(device)?.driverAllocations
        let clock = ContinuousClock()
        var ms: [Double] = []
        let faults = usage()?.ru_minflt, maps = TensorMemory.hostBlocks.misses
        for _ in 0..<max(reps, 1) {
            let elapsed = clock.measure { body(); finish(device) }
            ms.append(elapsed.seconds * 1e3)
        }
        let steps = Double(ms.count)
        let faultsAfter = usage()?.ru_minflt
        let faultsPerStep = faults.flatMap { before in faultsAfter.map { Double($0 - before) / steps } }
        let mapsPerStep = Double(TensorMemory.hostBlocks.misses - maps) / steps
        ms.sort()
        let median = ms.count % 2 == 1 ? ms[ms.count / 2] : (ms[ms.count / 2 - 1] + ms[ms.count / 2]) / 2
        let (amount, unit): (Double, String)
        switch c.work {
        case let .flops(f): (amount, unit) = (f / 1e9, "GFLOP/s")
        case let .bytes(b): (amount, unit) = (b / 1e9, "GB/s")
        case let .images(i): (amount, unit) = (i, "img/s")
        }
        var result = BenchResult(op: c.op, shape: c.shape, msMedian: median, msMin: ms[0], rate: amount / (median * 1e-3),
                                 unit: unit, reps: ms.count)
        if let f = c.stepFLOPs {
            (result.flopPerStep, result.tflops, result.peakMemoryMB) = (f, f / (median * 1e-3) / 1e12, PeakMemory.mb(device))
            if device == .cpu { (result.minorFaultsPerStep, result.hostMapsPerStep) = (faultsPerStep, mapsPerStep) }
        }
        if let before = handedOut, let a = PeakMemory.allocator(device), let allocations {
            result.tensorGBPerStep = Double(a.bytesHandedOut - before) / steps / 1e9
            result.driverAllocationsPerStep = Double(a.driverAllocations - allocations) / steps
            result.heldMB = Double(a.held) / (1024 * 1024)
        }
        if let stats {
            result.launchesPerStep = Double(stats.launchTotal) / steps
            result.gemmsPerStep = Double(stats.gemmTotal) / steps
            result.launchReport = stats.report(steps: ms.count)
                + (result.tensorGBPerStep.map { String(format: "\ntensors made per step: %.1f GB (each written and read at least once)", $0) } ?? "")
                + (result.heldMB.map { String(format: "; the allocator holds %.0f MiB from the driver, %.1f driver allocations per step", $0, result.driverAllocationsPerStep ?? 0) } ?? "")
        }
        return result
    }

    /// The CUDA tuner's decisions so far ("tuned flash dk/dv …: each way's time → the one kept"; `LaunchTuner`), for
    /// the benchmarks' output; none on the CPU or where nothing was timed.
    static func tunerDecisions(_ device: Device) -> [String] { Backends.registered(device)?.tuningDecisions ?? [] }

    /// A row's peak memory: on CUDA the caching allocator's peak bytes in use (torch `max_memory_allocated`, both
    /// counting the allocator's rounded block sizes), elsewhere the peak of live tensor storage (`TensorMemory`:
    /// host memory on the CPU). `reset` starts the peak at what is live now.
    enum PeakMemory {
        static func allocator(_ device: Device) -> CachingAllocator? {
            device == .cpu ? nil : (Backends.registered(device) as? CUDABackend)?.allocator
        }

        /// Tensor-storage peaks (host, device) before the last reset: `peakTensorMB` stays the whole process's.
        nonisolated(unsafe) static var before = (host: 0, device: 0)

        static func reset(_ device: Device) {
            before = (max(before.host, TensorMemory.hostCounts.peakBytes), max(before.device, TensorMemory.deviceCounts.peakBytes))
            TensorMemory.resetPeak()
            allocator(device)?.resetPeak()
        }

        static func mb(_ device: Device) -> Double {
            let bytes = allocator(device)?.peakInUse
                ?? (device == .cpu ? TensorMemory.hostCounts : TensorMemory.deviceCounts).peakBytes
            return Double(bytes) / (1024 * 1024)
        }
    }

    /// Waits for `device`: a one-element host read, which on the device's single stream is ordered after every
    /// kernel queued before it (the CPU's kernels are synchronous: nothing to do).
    static func finish(_ device: Device) {
        guard device != .cpu else { return }
        _ = Tensor.zeros([1], device: device).item()
    }

    /// op | shape | ms (median) | ms (min) | rate, aligned; with rows that count FLOPs also their FLOP rate
    /// (`flopUnit`: TFLOP/s on a GPU, GFLOP/s on the CPU) and peak memory.
    static func table(_ results: [BenchResult], flopUnit: String = "TFLOP/s") -> String {
        let flops = results.contains { $0.tflops != nil }
        let scale = flopUnit == "GFLOP/s" ? 1e3 : 1
        let rows = [["op", "shape", "ms (median)", "ms (min)", "rate"] + (flops ? [flopUnit, "peak MiB"] : [])] + results.map {
            [$0.op, $0.shape, String(format: "%.3f", $0.msMedian), String(format: "%.3f", $0.msMin),
             String(format: "%.1f %@", $0.rate, $0.unit)]
                + (flops ? [$0.tflops.map { String(format: "%.2f", $0 * scale) } ?? "-", $0.peakMemoryMB.map { String(format: "%.0f", $0) } ?? "-"] : [])
        }
        let columns = rows[0].count
        let widths = (0..<columns).map { col in rows.map { $0[col].count }.max() ?? 0 }
        return rows.map { row in
            (0..<columns).map { col in
                col < 2 ? row[col].padding(toLength: widths[col], withPad: " ", startingAt: 0)
                        : String(repeating: " ", count: widths[col] - row[col].count) + row[col]
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// `{threads, device, rows, peak_rss_mb?, peak_tensor_mb?, peak_mapped_mb?}`; the peaks belong to the whole
    /// process (run one row per process to attribute them): RSS of the process, live tensor storage
    /// (`TensorMemory`), and the host block cache's mapped bytes (`TensorMemory.hostBlocks`: large tensors live
    /// and cached).
    static func json(_ results: [BenchResult], threads: Int, device: String, peakRSSMB: Double? = nil,
                     peakTensorMB: Double? = nil, peakMappedMB: Double? = nil, mixedPrecision: String? = nil,
                     runs: [SamplingRun]? = nil) -> String {
        struct Report: Encodable {
            let threads: Int; let device: String; let rows: [BenchResult]; let peakRSSMB: Double?; let peakTensorMB: Double?
            let peakMappedMB: Double?; let mixedPrecision: String?; let runs: [SamplingRun]?
            private enum CodingKeys: String, CodingKey {
                case threads, device, rows, peakRSSMB = "peak_rss_mb", peakTensorMB = "peak_tensor_mb",
                     peakMappedMB = "peak_mapped_mb", mixedPrecision = "mixed_precision", runs
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(Report(threads: threads, device: device, rows: results, peakRSSMB: peakRSSMB,
                                           peakTensorMB: peakTensorMB, peakMappedMB: peakMappedMB, mixedPrecision: mixedPrecision, runs: runs)))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// Peak bytes of live tensor storage in MiB since start: host memory on the CPU, device memory otherwise.
    static func peakTensorMB(on device: Device) -> Double {
        let counts = device == .cpu ? TensorMemory.hostCounts : TensorMemory.deviceCounts
        return Double(max(counts.peakBytes, device == .cpu ? PeakMemory.before.host : PeakMemory.before.device)) / (1024 * 1024)
    }

    /// Peak bytes (MiB) the CPU backend's block cache had mapped (large tensors live and cached) since start.
    static func peakMappedMB() -> Double { Double(TensorMemory.hostBlocks.peakMappedBytes) / (1024 * 1024) }

    /// Peak resident set size of this process so far, in MiB (`getrusage(RUSAGE_SELF).ru_maxrss`, which Linux
    /// reports in KiB; macOS in bytes).
    static func peakRSSMB() -> Double {
        guard let usage = usage() else { return .nan }
        #if os(Linux)
        return Double(usage.ru_maxrss) / 1024
        #else
        return Double(usage.ru_maxrss) / (1024 * 1024)
        #endif
    }

    /// This process's `getrusage(RUSAGE_SELF)`, nil if it fails.
    static func usage() -> rusage? {
        var usage = rusage()
        #if os(Linux)
        guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 else { return nil }   // glibc's enum
        #else
        guard getrusage(RUSAGE_SELF, &usage) == 0 else { return nil }
        #endif
        return usage
    }
}
