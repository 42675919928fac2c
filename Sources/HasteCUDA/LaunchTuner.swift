import Foundation

/// Same-bits alternatives of one launch sequence, timed on the GPU at their first use for a shape and the fastest
/// kept for the process (as `torch.backends.cudnn.benchmark` does for convolutions): which of them is fastest
/// depends on the GPU (multiprocessors, shared memory, clocks), so it is measured there, not guessed. Every
/// candidate writes the same bits (their tests hold each to it), so the choice changes the time only, never a value,
/// and processes that chose differently (data-parallel ranks) still agree bit for bit.
///
/// The first candidate is the heuristic's choice: it is what runs where the device cannot time (the emulator, the
/// host-only device), with `HASTE_CUDA_TUNE=0`, and on ties. A candidate needing more temporary memory than a quarter
/// of what the device has free is not tried. Tuning a key runs each candidate three times (the first not counted: its kernels'
/// first load), then the chosen one once more, so the call's outputs are the chosen candidate's; each timed run waits
/// for the GPU. `HASTE_CUDA_PROFILE=1` (or `HASTE_CUDA_TUNE=verbose`) prints each decision on stderr.
public final class LaunchTuner: @unchecked Sendable {
    /// One alternative: its name in decisions, and the temporary device bytes it allocates.
    public struct Candidate: Sendable, Equatable {
        public let name: String
        public let extraBytes: Int
        public init(_ name: String, extraBytes: Int = 0) { self.name = name; self.extraBytes = extraBytes }
    }

    /// A tuned key: the candidates, each one's best time in ms (nil: not tried for its memory, or its timing failed),
    /// the index chosen.
    public struct Decision: Sendable, Equatable, CustomStringConvertible {
        public let key: String
        public let names: [String]
        public let ms: [Double?]
        public let chosen: Int
        public var description: String {
            "tuned \(key): " + zip(names, ms).map { n, t in t.map { String(format: "%@ %.3f ms", n, $0) } ?? "\(n) not timed" }
                .joined(separator: ", ") + " → \(names[chosen])"
        }
    }

    /// `HASTE_CUDA_TUNE`: "0" the first candidate everywhere (for comparisons with the heuristics); "verbose" prints
    /// each decision; anything else tunes (a test switches it for its own task: `$allowed.withValue`).
    @TaskLocal public static var allowed = ProcessInfo.processInfo.environment["HASTE_CUDA_TUNE"] != "0"
    static let verbose = ProcessInfo.processInfo.environment["HASTE_CUDA_TUNE"] == "verbose"
        || ProcessInfo.processInfo.environment["HASTE_CUDA_PROFILE"] == "1"
    /// Timed runs per candidate (the best counts), after one not counted.
    static let timedRuns = 2

    private let lock = NSRecursiveLock()
    private var decided: [String: Decision] = [:]
    private var ordered: [Decision] = []
    /// The clock gave no time once (the emulator, the host-only device, events that failed): from then on the first
    /// candidate runs at once, without building keys.
    private var untimed = false

    public init() {}

    /// The decisions so far, in the order they were made.
    public var decisions: [Decision] {
        lock.lock(); defer { lock.unlock() }
        return ordered
    }

    /// Runs one of the `count` `candidates` through `body(index)` for `key` (a description of the shape; the
    /// candidates' names are added to it; both made only where tuning applies): the remembered choice; or, the first
    /// time, each candidate timed by `timed` (a driver's `GPUDriver.timed`) and the fastest remembered (ties: the
    /// earlier); or the first candidate where there is one only, tuning is off, or `timed` gives nil (nothing
    /// remembered, and no timing tried again). `freeBytes`: the device memory free now, for the candidates' bytes.
    /// `repeatable`: whether running `body` again gives the same outputs (no output overlaps an input:
    /// `CUDABackend.separate`); where not, the first candidate runs once, untuned.
    public func run(_ key: @autoclosure () -> String, _ candidates: @autoclosure () -> [Candidate], count: Int, repeatable: Bool,
                    freeBytes: Int, timed: (() -> Void) -> Double?, _ body: (Int) -> Void) {
        lock.lock()
        let skip = count < 2 || !repeatable || !LaunchTuner.allowed || untimed
        lock.unlock()
        if skip { body(0); return }
        let candidates = candidates(), key = key()
        let full = key + " {" + candidates.map(\.name).joined(separator: " | ") + "}"
        lock.lock()
        if let d = decided[full] { lock.unlock(); body(d.chosen); return }
        defer { lock.unlock() }                                // one tuning at a time: the driver's timer is one pair of events
        // (`body` and `timed` are both the caller's; one calls the other, never back into this tuner)
        let best: [Double?]? = withoutActuallyEscaping(body) { body in
            guard timed({ body(0) }) != nil else { untimed = true; return nil }   // cannot time: the first ran, untuned
            var best = [Double?](repeating: nil, count: candidates.count)
            for (i, c) in candidates.enumerated() where i == 0 || c.extraBytes <= freeBytes / 4 {
                if i > 0 { _ = timed { body(i) } }                // its kernels' first load (and compile) is not counted
                for _ in 0..<LaunchTuner.timedRuns {
                    if let t = timed({ body(i) }) { best[i] = Swift.min(best[i] ?? t, t) }
                }
            }
            return best
        }
        guard let best else { return }
        var chosen = 0
        for i in best.indices { if let t = best[i], t < best[chosen] ?? .infinity { chosen = i } }
        body(chosen)                                           // the outputs are the chosen candidate's
        let d = Decision(key: key, names: candidates.map(\.name), ms: best, chosen: chosen)
        decided[full] = d
        ordered.append(d)
        if LaunchTuner.verbose { fputs("haste: \(d)\n", stderr) }
    }
}
