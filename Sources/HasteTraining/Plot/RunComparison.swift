import Foundation
import HasteTensor

/// `haste plot` (issue #17): several runs' curves of one metric in one `LinePlot`, runs grouped by `RunGroup`
/// (seeds → mean line with a min–max band), a dashed marker at each group's early stop; and the markdown table
/// of Scripts/replicate.sh (steps to reach the baseline's final FID, FID at the end, seeds, wall time).
public enum RunComparison {
    /// Series colours, in the order groups are given (blue, red, green, orange, purple, teal, brown, grey).
    public static let palette = [RGB(31, 90, 180), RGB(200, 40, 60), RGB(40, 140, 60), RGB(230, 130, 0),
                                 RGB(130, 60, 170), RGB(0, 150, 150), RGB(140, 90, 40), RGB(90, 90, 90)]

    /// The default moving-average window: loss terms are logged every step and are noisy (1/50 of the points,
    /// as the run's own loss.png); FID points are few and drawn as they are.
    public static func defaultSmoothing(_ metric: PlotMetric, points: Int) -> Int {
        metric == .fid ? 1 : max(1, points / 50)
    }

    /// The plot and the notes to print (groups without the term, groups whose configs differ besides the seed).
    public static func plot(_ groups: [RunGroup], metric: PlotMetric, smoothing: Int? = nil) throws -> (plot: LinePlot, notes: [String]) {
        require(!groups.isEmpty, "RunComparison.plot: no runs")
        var series: [PlotSeries] = [], markers: [PlotMarker] = [], notes: [String] = [], windows: Set<Int> = []
        for g in groups where !g.configDifferences.isEmpty {
            notes.append("note: the runs of '\(g.name)' differ in \(g.configDifferences.joined(separator: ", ")) besides the seed; they are still drawn as one curve")
        }
        for (k, group) in groups.enumerated() {
            let length = group.runs.compactMap { $0.metrics[metric.rawValue]?.count }.max() ?? 0
            let window = smoothing ?? defaultSmoothing(metric, points: length)
            guard let curve = try group.curve(metric, window: window) else {
                notes.append("note: '\(group.name)' has no \(metric.rawValue) term (no teacher, or its coefficient is 0): not drawn")
                continue
            }
            windows.insert(window)
            let color = palette[k % palette.count]
            let spread = curve.runCount > 1
            let label = spread ? "\(group.name) (mean of \(curve.runCount) seeds, band min-max)" : group.name
            series.append(PlotSeries(name: label, points: curve.points.map { (Double($0.step), $0.mean) }, color: color, lineWidth: 2,
                                     markers: metric == .fid, valueLabels: metric == .fid && groups.count == 1,
                                     band: spread ? curve.points.map { (Double($0.step), $0.lower, $0.upper) } : []))
            for stop in curve.earlyStops {
                markers.append(PlotMarker(x: Double(stop), label: "\(group.name): alignment stops at step \(stop)", color: color, labelAbove: false))
            }
        }
        guard !series.isEmpty else {
            throw HasteError.unsupported("no run has \(metric.rawValue) values to draw (\(groups.map(\.name).joined(separator: ", "))): alignment terms exist only in runs with a teacher and a non-zero coefficient; try --metric loss")
        }
        var plot = LinePlot(title: metric.title, xLabel: "training step", yLabel: metric.yLabel, series: series, markers: markers)
        if let w = windows.max(), w > 1 { plot.notes.append("curves: moving average over \(w) steps") }
        return (plot, notes)
    }

    /// Mean, sample standard deviation (n − 1; nil for one value), min and max.
    public struct Spread {
        public let mean: Double, std: Double?, min: Double, max: Double, count: Int
        public init(_ v: [Double]) {
            require(!v.isEmpty, "Spread: no values")
            let m = v.reduce(0, +) / Double(v.count)
            (count, mean) = (v.count, m)
            std = v.count > 1 ? (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count - 1)).squareRoot() : nil
            (min, max) = (v.min()!, v.max()!)
        }
        /// `152.1 ± 3.4 (148.9-155.0)`, or the value alone for one run.
        public var text: String {
            guard let std else { return String(format: "%.1f", mean) }
            return String(format: "%.1f ± %.1f (%.1f-%.1f)", mean, std, min, max)
        }
    }

    /// One row of the replication table.
    public struct Row {
        public let group: String
        public let seeds: [Int]
        public let finalStep: Int
        public let finalFID: Spread
        /// First evaluated step at which the group's mean FID is at or below the baseline's final mean FID.
        public let stepsToBaseline: Int?
        public let bestMean: (step: Int, fid: Double)
        public let wallSeconds: Double?
    }

    /// The group the others are compared with: `name` when given, else the one vanilla group (enc-type none).
    public static func baseline(_ groups: [RunGroup], name: String?) throws -> RunGroup {
        if let name {
            guard let g = groups.first(where: { $0.name == name }) else {
                throw HasteError.unsupported("--baseline \(name): no such group; the groups are \(groups.map(\.name).joined(separator: ", ")) (exp-names without -seed<N>)")
            }
            return g
        }
        let vanilla = groups.filter(\.isVanilla)
        guard vanilla.count == 1 else {
            throw HasteError.unsupported("\(vanilla.isEmpty ? "no" : "\(vanilla.count)") vanilla group\(vanilla.count == 1 ? "" : "s") (enc-type none) among \(groups.map(\.name).joined(separator: ", ")): name the baseline with --baseline NAME")
        }
        return vanilla[0]
    }

    public static func rows(_ groups: [RunGroup], baseline: RunGroup) throws -> [Row] {
        let target = Spread(try baseline.runs.map { try RunGroup.values($0, .fid, window: 1)!.last!.value }).mean
        return try groups.map { g in
            let curve = try g.curve(.fid)!
            let finals = try g.runs.map { try RunGroup.values($0, .fid, window: 1)!.last! }
            let best = curve.points.min { $0.mean < $1.mean }!
            let walls = g.runs.compactMap(\.wallSeconds)
            return Row(group: g.name, seeds: g.runs.compactMap(\.seed), finalStep: finals.map(\.step).max()!,
                       finalFID: Spread(finals.map(\.value)), stepsToBaseline: curve.points.first { $0.mean <= target }?.step,
                       bestMean: (best.step, best.mean), wallSeconds: walls.count == g.runs.count ? walls.reduce(0, +) / Double(walls.count) : nil)
        }
    }

    /// The markdown table and the lines under it (baseline, noise floor, what counts as a difference).
    public static func table(_ groups: [RunGroup], baselineName: String? = nil, noise: [Double]? = nil) throws -> String {
        let base = try baseline(groups, name: baselineName)
        let rows = try rows(groups, baseline: base)
        let baseRow = rows.first { $0.group == base.name }!
        var out = ["| method | seeds | final step | FID at end, mean ± std (min-max) | steps to reach \(base.name)'s final FID | speed-up | wall time per run |",
                   "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows {
            let reach = r.stepsToBaseline.map(String.init) ?? String(format: "not reached (best mean %.1f at step %d)", r.bestMean.fid, r.bestMean.step)
            var speedup = "-"
            if let b = baseRow.stepsToBaseline, let m = r.stepsToBaseline { speedup = String(format: "%.2fx", Double(b) / Double(m)) }
            let seeds = r.seeds.isEmpty ? "?" : r.seeds.map(String.init).joined(separator: ",")
            out.append("| \(r.group) | \(seeds) | \(r.finalStep) | \(r.finalFID.text) | \(reach) | \(speedup) | \(r.wallSeconds.map { Throughput.format(seconds: $0) } ?? "?") |")
        }
        out.append("")
        out.append(String(format: "Target: %@'s final FID, mean over its %d run(s): %.1f. Steps are those of the FID evaluations (fid-every), read on each method's mean curve.",
                          base.name, base.runs.count, baseRow.finalFID.mean))
        let seedStd = rows.compactMap(\.finalFID.std).max()
        if let seedStd { out.append(String(format: "Largest spread of the final FID across seeds (std): %.1f.", seedStd)) }
        if let noise, !noise.isEmpty {
            let n = Spread(noise)
            out.append(String(format: "FID noise floor (FID of disjoint real test-set images against the same reference statistics, %d draws): %@.", n.count, n.text))
        }
        let noiseStd = [seedStd, noise.flatMap { Spread($0).std }].compactMap { $0 }.max()
        if let noiseStd {
            out.append(String(format: "Differences in final FID smaller than %.1f (twice the larger of these spreads) are within noise.", 2 * noiseStd))
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// Numbers one per line (`#` comments and blank lines skipped): `--noise` files.
    public static func readNumbers(_ path: String) throws -> [Double] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw HasteError.fileMissing(path: path, hint: "--noise expects a text file of FID values, one per line (Scripts/replicate.sh writes noise.txt).")
        }
        var out: [Double] = []
        for (n, raw) in text.split(separator: "\n").enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let v = Double(line), v.isFinite else { throw HasteError.fileFormat(path: path, detail: "line \(n + 1) '\(line)' is not a number; one FID value per line") }
            out.append(v)
        }
        guard !out.isEmpty else { throw HasteError.fileFormat(path: path, detail: "holds no FID values; one per line") }
        return out
    }
}
