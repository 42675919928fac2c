import Foundation
import HasteTensor

/// `<output-dir>/<exp-name>/{config.yaml, log.txt, metrics.jsonl, loss.png, checkpoints/, samples/}` (STYLE §2.8).
public final class RunDirectory {
    public let root: String
    private var losses: [(step: Int, loss: Double)] = []

    public init(root: String) throws {
        self.root = root
        for dir in [root, "\(root)/checkpoints", "\(root)/samples"] {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw HasteError.fileFormat(path: dir, detail: "cannot create the run directory: \(error.localizedDescription)")
            }
        }
        // Keep the curve continuous across resumes.
        if let text = try? String(contentsOfFile: "\(root)/metrics.jsonl", encoding: .utf8) {
            for line in text.split(separator: "\n") {
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let s = obj["step"] as? Int, let l = obj["loss"] as? Double else { continue }
                losses.append((s, l))
            }
        }
    }

    public func writeConfig(_ c: TrainConfig) throws {
        try Data(try c.yaml().utf8).write(to: URL(fileURLWithPath: "\(root)/config.yaml"), options: .atomic)
    }

    public func log(_ line: String) {
        let stamp = ISO8601DateFormatter().string(from: Date())
        append("\(stamp) \(line)\n", to: "\(root)/log.txt")
    }

    /// One JSON object per optimizer step in metrics.jsonl; a resumed run drops lines past its step first.
    public func metric(step: Int, values: [String: Double]) {
        if let last = losses.last, last.step >= step { truncateMetrics(before: step) }
        var obj: [String: Any] = ["step": step]
        for (k, v) in values { obj[k] = v.isFinite ? v : nil }
        if let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) {
            append(String(decoding: data, as: UTF8.self) + "\n", to: "\(root)/metrics.jsonl")
        }
        if let l = values["loss"], l.isFinite { losses.append((step, l)) }
    }

    private func truncateMetrics(before step: Int) {
        losses.removeAll { $0.step >= step }
        let path = "\(root)/metrics.jsonl"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let s = obj["step"] as? Int else { return false }
            return s < step
        }
        try? Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// loss.png: the denoising loss per step with a moving average.
    public func plotLosses() throws {
        try LossPlot.write(losses.map { (Double($0.step), $0.loss) }, to: "\(root)/loss.png", title: "denoising loss")
    }

    private func append(_ text: String, to path: String) {
        if let h = FileHandle(forWritingAtPath: path) {
            h.seekToEndOfFile()
            h.write(Data(text.utf8))
            h.closeFile()
        } else {
            FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        }
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
