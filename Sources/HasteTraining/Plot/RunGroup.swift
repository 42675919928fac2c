import Foundation
import HasteTensor

/// The metrics `haste plot` draws, with their axis text.
public enum PlotMetric: String, CaseIterable, Sendable {
    case fid, loss, projLoss = "proj_loss", attnLoss = "attn_loss"

    public var yLabel: String {
        switch self {
        case .fid: return "FID (lower is better)"
        case .loss: return "denoising loss (velocity MSE)"
        case .projLoss: return "projection loss (-mean cosine similarity)"
        case .attnLoss: return "attention alignment loss (cross-entropy)"
        }
    }

    public var title: String {
        switch self {
        case .fid: return "FID during training"
        case .loss: return "training loss"
        case .projLoss: return "projection alignment loss"
        case .attnLoss: return "attention alignment loss"
        }
    }

    /// The config coefficient of an alignment term: runs with it 0 (or no teacher) log 0 and are left out.
    var coefficientKey: String? { self == .projLoss ? "proj-coeff" : self == .attnLoss ? "attn-coeff" : nil }
}

/// Runs that differ only by seed, drawn as one curve (mean over the runs, min–max band). Grouping rule: the
/// exp-name with a trailing `-seed<N>` (or `_seed<N>`) removed — `haste-seed0`, `haste-seed1` → `haste`; a run
/// without that suffix is a group of its own name. Runs of one group whose config.yaml differ in other keys are
/// still grouped; `configDifferences` names those keys so the command can warn.
public struct RunGroup {
    public let name: String
    public var runs: [RunRecord]

    public static func groupName(_ expName: String) -> String {
        for sep in ["-seed", "_seed"] {
            if let r = expName.range(of: sep, options: .backwards), r.lowerBound > expName.startIndex,
               !expName[r.upperBound...].isEmpty, expName[r.upperBound...].allSatisfy(\.isNumber) {
                return String(expName[..<r.lowerBound])
            }
        }
        return expName
    }

    /// Groups in the order their first run was given.
    public static func group(_ runs: [RunRecord]) -> [RunGroup] {
        var out: [RunGroup] = []
        for run in runs {
            let name = groupName(run.name)
            if let i = out.firstIndex(where: { $0.name == name }) { out[i].runs.append(run) } else { out.append(RunGroup(name: name, runs: [run])) }
        }
        return out
    }

    /// Config keys whose values differ between this group's runs, besides those that name a run or its seed.
    public var configDifferences: [String] {
        let ignored: Set<String> = ["exp-name", "seed", "output-dir", "resume-step"]
        let keys = Set(runs.flatMap(\.config.keys)).subtracting(ignored)
        return keys.filter { k in Set(runs.map { $0.config[k] ?? "" }).count > 1 }.sorted()
    }

    /// Whether this group trained without a teacher (enc-type none) in every run: the baseline of the table.
    public var isVanilla: Bool { runs.allSatisfy { $0.config["enc-type"] == "none" } }

    /// One run's values of `metric`, smoothed by a trailing moving average of `window` points; alignment terms
    /// only up to the early stop (after it they are not computed and logged as 0). nil: the run has no such term.
    static func values(_ run: RunRecord, _ metric: PlotMetric, window: Int) throws -> [(step: Int, value: Double)]? {
        guard var points = run.metrics[metric.rawValue], !points.isEmpty else {
            let has = run.metrics.keys.sorted().joined(separator: ", ")
            let hint = metric == .fid ? " (FID is measured only when the run's fid-every > 0)" : ""
            throw HasteError.fileFormat(path: run.path, detail: "run '\(run.name)' has no '\(metric.rawValue)' values in metrics.jsonl\(hint); it has: \(has.isEmpty ? "nothing" : has)")
        }
        if let key = metric.coefficientKey {
            if run.config["enc-type"] == "none" || run.config[key].flatMap(Double.init) == 0 { return nil }
            if let stop = run.earlyStop { points = points.filter { $0.step <= stop } }
        }
        guard window > 1 else { return points }
        var acc = 0.0
        return points.indices.map { i in
            acc += points[i].value
            if i >= window { acc -= points[i - window].value }
            return (points[i].step, acc / Double(min(i + 1, window)))
        }
    }

    /// Mean and min–max over the runs at the steps all of them logged.
    public struct Curve {
        public let name: String
        public let runCount: Int
        public let points: [(step: Int, mean: Double, lower: Double, upper: Double)]
        /// Distinct early-stop steps of the runs.
        public let earlyStops: [Int]
    }

    /// The group's curve of `metric`; nil when no run of it has the term (alignment terms of vanilla/REPA runs).
    public func curve(_ metric: PlotMetric, window: Int = 1) throws -> Curve? {
        var series: [[Int: Double]] = []
        for run in runs { if let v = try RunGroup.values(run, metric, window: window) { series.append(Dictionary(v, uniquingKeysWith: { $1 })) } }
        guard !series.isEmpty else { return nil }
        let common = series.dropFirst().reduce(Set(series[0].keys)) { $0.intersection($1.keys) }.sorted()
        guard !common.isEmpty else {
            throw HasteError.unsupported("the runs of '\(name)' (\(runs.map(\.path).joined(separator: ", "))) share no step with a '\(metric.rawValue)' value; were they trained with the same fid-every?")
        }
        let points = common.map { s -> (step: Int, mean: Double, lower: Double, upper: Double) in
            let v = series.map { $0[s]! }
            return (s, v.reduce(0, +) / Double(v.count), v.min()!, v.max()!)
        }
        return Curve(name: name, runCount: series.count, points: points, earlyStops: Array(Set(runs.compactMap(\.earlyStop))).sorted())
    }
}
