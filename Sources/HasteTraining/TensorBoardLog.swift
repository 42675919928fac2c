#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import HasteIO
import HasteTensor

/// Where a run's metrics go (`report-to`): metrics.jsonl, TensorBoard event files, both (`all`, the default) or
/// neither. log.txt, loss.png and the sample PNGs are written either way.
public struct ReportTargets: Equatable, Sendable {
    public var jsonl: Bool, tensorboard: Bool
    /// The values `report-to` takes (TrainConfig.choices).
    public static let names = ["all", "tensorboard", "jsonl", "none"]

    /// `value` is one of `names` (validated with the config).
    public init(_ value: String) {
        require(ReportTargets.names.contains(value), "report-to '\(value)' was not validated")
        jsonl = value == "all" || value == "jsonl"
        tensorboard = value == "all" || value == "tensorboard"
    }
}

/// The TensorBoard event file of one training process, in the run directory beside metrics.jsonl, so
/// `tensorboard --logdir <output-dir>` shows every run with no conversion. Named as TensorBoard's own writer
/// names it, `events.out.tfevents.<unix seconds, 10 digits>.<host>.<pid>.<n>`, created at the first event; each
/// event goes to the file at once (one `write` per step), so a live TensorBoard follows the run. A resumed run
/// writes a new file that starts with `SessionLog.START` at its first step: TensorBoard reads a folder's files in
/// name order and drops the old file's steps from there on, as for a restarted TensorFlow job (torch's
/// `SummaryWriter(purge_step:)` writes the same). Steps are the global optimizer step.
///
/// Scalar tags (`tag(for:)`): metrics.jsonl's keys under `train/` (loss = the denoising loss, proj_loss,
/// attn_loss, total_loss, grad_norm, lr), `eval/fid`, `perf/img_per_s`; sample grids under `samples/ema`.
final class TensorBoardLog {
    let directory: String
    /// The event file, once the first event was written.
    private(set) var path: String?
    /// Appends bytes to a file, keeping the first failure (RunDirectory's failure-tracked append).
    private let append: ([UInt8], String) -> Void
    private static let counter = Counter()

    init(directory: String, append: @escaping ([UInt8], String) -> Void) {
        self.directory = directory
        self.append = append
    }

    /// The tag of a metrics.jsonl key.
    static func tag(for key: String) -> String {
        switch key {
        case "fid": return "eval/fid"
        case "img_per_s": return "perf/img_per_s"
        default: return "train/\(key)"
        }
    }

    /// One event with every finite value (metrics.jsonl writes non-finite ones as absent too), tags sorted.
    func scalars(step: Int, values: [String: Double]) {
        let finite = values.filter { $0.value.isFinite }.map { (tag: TensorBoardLog.tag(for: $0.key), value: Float($0.value)) }
        guard !finite.isEmpty else { return }
        write(TensorBoardEvent.scalars(finite.sorted { $0.tag < $1.tag }, step: step, wallTime: Date().timeIntervalSince1970), step: step)
    }

    /// The PNG at `pngPath` (a sample grid just written) as an image event.
    func image(tag: String, pngPath: String, step: Int) throws {
        guard let data = FileManager.default.contents(atPath: pngPath) else {
            throw HasteError.fileFormat(path: pngPath, detail: "cannot read the sample grid back for TensorBoard")
        }
        write(try TensorBoardEvent.image(tag: tag, png: Array(data), step: step, wallTime: Date().timeIntervalSince1970, path: pngPath),
              step: step)
    }

    private func write(_ event: [UInt8], step: Int) {
        let file = path ?? open(firstStep: step)
        append(TFRecord.frame(event), file)
    }

    /// Creates the file: its version, then this process's start at the first step it writes.
    private func open(firstStep: Int) -> String {
        let now = Date().timeIntervalSince1970
        let existing = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let name = TensorBoardLog.fileName(seconds: Int(now), host: TensorBoardLog.hostName(), pid: Int(getpid()),
                                           n: TensorBoardLog.counter.next(), existing: existing)
        let file = "\(directory)/\(name)"
        path = file
        let start = [TensorBoardEvent.header(wallTime: now), TensorBoardEvent.sessionStart(step: firstStep, wallTime: now)]
        append(start.flatMap(TFRecord.frame), file)
        return file
    }

    /// TensorBoard's name. The seconds are moved past those of any event file already in the folder, so a run
    /// resumed within the same second still sorts after the file it continues.
    static func fileName(seconds: Int, host: String, pid: Int, n: Int, existing: [String]) -> String {
        let prefix = "events.out.tfevents."
        let latest = existing.compactMap { name -> Int? in
            guard name.hasPrefix(prefix) else { return nil }
            return Int(name.dropFirst(prefix.count).prefix { $0.isNumber })
        }.max() ?? Int.min
        return prefix + String(format: "%010d", max(seconds, latest &+ 1)) + ".\(host).\(pid).\(n)"
    }

    /// The host name as Python's socket.gethostname() gives it, '/' made '_' (it is part of a file name).
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(cString: buffer).replacingOccurrences(of: "/", with: "_")
        return name.isEmpty ? "localhost" : name
    }

    /// The per-process file number (TensorBoard's `_global_uid`).
    private final class Counter: @unchecked Sendable {
        private var value = 0
        private let lock = NSLock()
        func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value - 1 }
    }
}
