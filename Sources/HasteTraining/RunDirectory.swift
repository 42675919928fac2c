#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import HasteIO
import HasteTensor

/// `<output-dir>/<exp-name>/{config.yaml, log.txt, metrics.jsonl, events.out.tfevents.*, loss.png, checkpoints/,
/// samples/}` (STYLE §2.8; metrics.jsonl and the TensorBoard event files as `report-to` says),
/// locked for the life of this object (`RunLock`, file `.lock`) by the one writer of a job (MPI rank 0).
public final class RunDirectory {
    public let root: String
    private var losses: [(step: Int, loss: Double)] = []
    private let lock: RunLock?
    /// Temporary files of interrupted atomic writes (a kill during a checkpoint) removed when the directory opened.
    public let removedTemporaries: [String]
    /// The first failed write to log.txt, metrics.jsonl or an event file (a full disk). Logging does not throw, so
    /// the trainer checks this once per step and stops with a checkpoint attempt.
    public private(set) var writeFailure: HasteError?

    /// `writer` false: another rank of the same job writes (and holds the lock); this one only reads.
    public init(root: String, writer: Bool = true) throws {
        self.root = root
        plotContext = RunPlots.Context(runName: (root as NSString).lastPathComponent, earlyStop: nil)
        guard writer else { (lock, removedTemporaries) = (nil, []); return }
        for dir in [root, "\(root)/checkpoints", "\(root)/samples"] {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw HasteError.fileFormat(path: dir, detail: "cannot create the run directory: \(error.localizedDescription)")
            }
        }
        lock = try RunLock(directory: root)
        // Only once locked: no other trainer can be writing these.
        removedTemporaries = try ["", "/checkpoints", "/samples"].flatMap { try AtomicFile.removeLeftovers(in: root + $0) }
        // Keep the curve continuous across resumes.
        if let text = try? String(contentsOfFile: "\(root)/metrics.jsonl", encoding: .utf8) {
            for line in text.split(separator: "\n") {
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let s = obj["step"] as? Int, let l = obj["loss"] as? Double else { continue }
                losses.append((s, l))
            }
        }
    }

    /// Run name and early-stop step for the plots' titles and markers; set by `writeConfig`.
    public private(set) var plotContext: RunPlots.Context

    /// Where metrics go (`report-to`); set by `writeConfig`.
    public private(set) var reporting = ReportTargets("all")
    /// This process's TensorBoard event file (TensorBoardLog.swift).
    lazy var events = TensorBoardLog(directory: root) { [unowned self] in self.append($0, to: $1) }

    public func writeConfig(_ c: TrainConfig) throws {
        plotContext = RunPlots.Context(c)
        reporting = ReportTargets(c.reportTo)
        try AtomicFile.write(Array(try c.yaml().utf8), to: "\(root)/config.yaml")
    }

    public func log(_ line: String) {
        let stamp = ISO8601DateFormatter().string(from: Date())
        append("\(stamp) \(line)\n", to: "\(root)/log.txt")
    }

    /// One JSON object per optimizer step in metrics.jsonl (a resumed run drops lines past its step first) and
    /// one scalar event in the TensorBoard event file, as `reporting` says.
    public func metric(step: Int, values: [String: Double]) {
        if let last = losses.last, last.step >= step {
            losses.removeAll { $0.step >= step }
            if reporting.jsonl { truncateMetrics(before: step) }
        }
        if reporting.jsonl {
            var obj: [String: Any] = ["step": step]
            for (k, v) in values { obj[k] = v.isFinite ? v : nil }
            if let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) {
                append(String(decoding: data, as: UTF8.self) + "\n", to: "\(root)/metrics.jsonl")
            }
        }
        if reporting.tensorboard { events.scalars(step: step, values: values) }
        if let l = values["loss"], l.isFinite { losses.append((step, l)) }
    }

    /// A sample grid just written to `path` as a TensorBoard image (tag `samples/ema`), when `reporting` says so.
    public func sampleGrid(at path: String, step: Int) throws {
        if reporting.tensorboard { try events.image(tag: "samples/ema", pngPath: path, step: step) }
    }

    private func truncateMetrics(before step: Int) {
        let path = "\(root)/metrics.jsonl"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let s = obj["step"] as? Int else { return false }
            return s < step
        }
        do { try AtomicFile.write(Array((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8), to: path) } catch {
            writeFailure = writeFailure ?? (error as? HasteError) ?? .fileFormat(path: path, detail: "\(error)")
        }
    }

    /// loss.png: the denoising loss per step with a moving average and the early-stop marker.
    public func plotLosses() throws {
        try RunPlots.loss(losses.map { (Double($0.step), $0.loss) }, plotContext).write(to: "\(root)/loss.png")
    }

    /// Appends whole lines (or event records); on failure the file is cut back to its old length (no half line to
    /// corrupt the next one) and the first error is kept in `writeFailure`.
    private func append(_ text: String, to path: String) { append(Array(text.utf8), to: path) }

    private func append(_ bytes: [UInt8], to path: String) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return fail(path, "cannot open for appending", errno) }
        let start = lseek(fd, 0, SEEK_END)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let code = errno
                if start >= 0 { _ = ftruncate(fd, start) }              // best effort; the error below is what counts
                close(fd)
                return fail(path, "cannot append", n == 0 ? ENOSPC : code)
            }
            done += n
        }
        if close(fd) != 0 { fail(path, "cannot append (close)", errno) }
    }

    private func fail(_ path: String, _ what: String, _ code: Int32) {
        writeFailure = writeFailure ?? .fileFormat(path: path, detail: "\(what): \(String(cString: strerror(code)))")
    }
}

/// Steps and images per second over a sliding window.
struct Throughput {
    struct Rate { let stepsPerSecond: Double, imagesPerSecond: Double }
    let batch: Int
    private var times: [Double] = []
    init(batch: Int) { self.batch = batch }

    mutating func tick() -> Rate {
        times.append(Date().timeIntervalSinceReferenceDate)
        if times.count > 20 { times.removeFirst() }
        guard times.count > 1 else { return Rate(stepsPerSecond: 0, imagesPerSecond: 0) }
        let s = Double(times.count - 1) / (times.last! - times.first!)
        return Rate(stepsPerSecond: s, imagesPerSecond: s * Double(batch))
    }

    static func format(seconds: Double) -> String {
        guard seconds.isFinite, seconds < 1e8 else { return "?" }
        let s = Int(seconds)
        return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s / 60 % 60) : String(format: "%dm%02ds", s / 60, s % 60)
    }
}
