import Foundation
import HasteTensor

/// What `haste plot` reads from one run directory (`<output-dir>/<exp-name>/` written by `haste train`):
/// every numeric series of metrics.jsonl, the run's name and seed from config.yaml, the step where alignment
/// stopped, and the training wall time from log.txt.
public struct RunRecord {
    public let path: String
    /// exp-name from config.yaml (the folder's name when there is no config.yaml).
    public let name: String
    public let seed: Int?
    /// config.yaml as written by the trainer (empty when absent): compared across the seeds of one group.
    public let config: [String: String]
    /// metrics.jsonl by key (`loss`, `proj_loss`, `attn_loss`, `fid`, …): (step, value) in step order.
    public let metrics: [String: [(step: Int, value: Double)]]
    /// The step after which alignment was off: log.txt's "step N: alignment stopped", else config.yaml's
    /// early-stop-point when the run had a teacher and trained that far; nil for vanilla runs and runs never stopped.
    public let earlyStop: Int?
    /// Seconds spent training: the sum over log.txt's sessions (each from its "training …" line to its last line,
    /// so the pause between a kill and a resume does not count); nil without such lines.
    public let wallSeconds: Double?

    public var lastStep: Int { metrics.values.compactMap { $0.last?.step }.max() ?? 0 }

    public init(path: String, name: String, seed: Int?, config: [String: String], metrics: [String: [(step: Int, value: Double)]],
                earlyStop: Int?, wallSeconds: Double?) {
        (self.path, self.name, self.seed, self.config, self.metrics) = (path, name, seed, config, metrics)
        (self.earlyStop, self.wallSeconds) = (earlyStop, wallSeconds)
    }

    /// Reads `path`; a folder without metrics.jsonl is refused, saying what a run directory holds.
    public init(loading path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw HasteError.fileMissing(path: path, hint: "Pass run directories written by haste train (<output-dir>/<exp-name>/, holding metrics.jsonl).")
        }
        let metricsPath = "\(path)/metrics.jsonl"
        guard FileManager.default.fileExists(atPath: metricsPath) else {
            throw HasteError.fileFormat(path: path, detail: "not a run directory: it has no metrics.jsonl (haste train writes <output-dir>/<exp-name>/{config.yaml, log.txt, metrics.jsonl})")
        }
        let metrics = try RunRecord.readMetrics(metricsPath)
        var config: [String: String] = [:]
        if FileManager.default.fileExists(atPath: "\(path)/config.yaml") {
            for (k, v) in try ConfigFile.mapping(at: "\(path)/config.yaml") { config[k] = "\(v)" }
        }
        let log = (try? String(contentsOfFile: "\(path)/log.txt", encoding: .utf8)) ?? ""
        let name = config["exp-name"] ?? URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent
        let last = metrics.values.compactMap { $0.last?.step }.max() ?? 0
        self.init(path: path, name: name, seed: config["seed"].flatMap { Int($0) }, config: config, metrics: metrics,
                  earlyStop: RunRecord.earlyStop(log: log, config: config, lastStep: last), wallSeconds: RunRecord.wallSeconds(log: log))
    }

    /// Every numeric key of every line; a line that is not JSON is an error naming its number.
    static func readMetrics(_ path: String) throws -> [String: [(step: Int, value: Double)]] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw HasteError.fileFormat(path: path, detail: "cannot be read as UTF-8 text (\(error.localizedDescription))")
        }
        var out: [String: [(step: Int, value: Double)]] = [:]
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = (obj["step"] as? NSNumber)?.intValue else {
                throw HasteError.fileFormat(path: path, detail: "line \(n + 1) is not a JSON object with a \"step\"; metrics.jsonl has one per training step")
            }
            for (key, value) in obj where key != "step" {
                guard let v = (value as? NSNumber)?.doubleValue, v.isFinite else { continue }
                out[key, default: []].append((step, v))
            }
        }
        for key in out.keys { out[key]!.sort { $0.step < $1.step } }
        return out
    }

    static func earlyStop(log: String, config: [String: String], lastStep: Int) -> Int? {
        for line in log.split(separator: "\n") {
            guard let r = line.range(of: ": alignment stopped") else { continue }
            let head = line[..<r.lowerBound]
            if let s = head.range(of: "step ", options: .backwards), let step = Int(head[s.upperBound...]) { return step }
        }
        let coefficients = ["proj-coeff", "attn-coeff"].map { config[$0].flatMap(Double.init) ?? 0 }
        guard let enc = config["enc-type"], enc != "none", coefficients.contains(where: { $0 != 0 }),
              let stop = config["early-stop-point"].flatMap({ Int($0) }), stop > 0, stop <= lastStep else { return nil }
        return stop
    }

    static func wallSeconds(log: String) -> Double? {
        let formatter = ISO8601DateFormatter()
        // A session opens with the trainer's start-up lines ("removed …", "resumed from …") or, without them, its
        // "training …" line; it lasts until its last line.
        var total = 0.0, start: Date?, last: Date?, started = false, any = false
        for line in log.split(separator: "\n") {
            guard let space = line.firstIndex(of: " "), let date = formatter.date(from: String(line[..<space])) else { continue }
            let text = line[line.index(after: space)...]
            let startUp = text.hasPrefix("resumed from ") || text.hasPrefix("removed "), training = text.hasPrefix("training ")
            if (startUp && (start == nil || started)) || (training && (start == nil || started)) {
                if let start, let last { total += last.timeIntervalSince(start) }
                (start, started) = (date, false)
            }
            if training { (started, any) = (true, true) }
            if start != nil { last = date }
        }
        if let start, let last { total += last.timeIntervalSince(start) }
        return any ? total : nil
    }
}
