import ArgumentParser
import Foundation
import HasteTraining

/// `haste plot RUN_DIR…`: several runs' curves of one metric in one PNG, or (`--table`) the markdown comparison
/// table of Scripts/replicate.sh, or (`--tsv`) columns of a tab-separated table. The work lives in
/// HasteTraining/Plot (RunRecord, RunGroup, RunComparison, TablePlot).
struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Overlay training runs' curves (FID or loss terms) in one PNG, print their comparison table, or plot a TSV table.",
        discussion: """
        Runs whose exp-name differs only by a trailing -seed<N> (e.g. haste-seed0, haste-seed1) are one group: drawn
        as the mean over the seeds with a min-max band, at the steps all of them logged. A dashed line in the
        group's colour marks where alignment stopped (log.txt, else config.yaml's early-stop-point). Loss terms
        are smoothed by a moving average (--smooth; default 1/50 of the points, 1 = raw); proj_loss and attn_loss
        are drawn up to the early stop and only for runs that have the term.
        --table prints markdown instead: per group the FID at the end (mean ± std over seeds, min-max), the first
        FID evaluation at which the group's mean FID reaches the baseline's final FID (--baseline, default the
        enc-type none group), the speed-up, and the training wall time per run (log.txt).
        --tsv FILE draws columns of a tab-separated table with a header line instead of runs: --y against --x, one
        line per value of --series (rows without a number in --y are left out), --log-x for a base-2 log x axis,
        --log-y for a base-10 log y axis. The legend goes in the corner of the plot where it hides the fewest points,
        or right of the plot when every corner would hide one.
        Examples:
          haste plot runs/replicate/* --metric fid
          haste plot runs/demo runs/demo-vanilla --metric loss --out loss-compare.png
          haste plot runs/replicate/* --table --noise runs/replicate/noise.txt
          haste plot --tsv runs/bench/sweep.tsv --x batch --y img_per_s --series series --log-x --log-y
        """)

    @Argument(help: "Run directories written by haste train (each holds metrics.jsonl).") var runs: [String] = []
    @Option(help: ArgumentHelp("The curve to draw (default fid).", valueName: "fid|loss|proj_loss|attn_loss")) var metric: String?
    @Option(help: "The PNG to write (default: compare-<metric>.png beside the run directories; for --tsv, FILE with .png).") var out: String?
    @Option(help: "Moving-average window in logged points (1 = none; default: 1 for fid, 1/50 of the points for loss terms).")
    var smooth: Int?
    @Flag(help: "Print the markdown comparison table (FID) instead of drawing.") var table = false
    @Option(help: "The group the table compares with (default: the one enc-type none group).") var baseline: String?
    @Option(help: "A file of real-vs-real FID values, one per line, summarised under the table as the noise floor.")
    var noise: String?
    @Option(help: ArgumentHelp("Draw columns of this tab-separated table (header line of column names) instead of runs.", valueName: "FILE"))
    var tsv: String?
    @Option(name: .customLong("x"), help: ArgumentHelp("--tsv: the column on the x axis.", valueName: "COL")) var xColumn: String?
    @Option(name: .customLong("y"), help: ArgumentHelp("--tsv: the column on the y axis.", valueName: "COL")) var yColumn: String?
    @Option(help: ArgumentHelp("--tsv: one line per value of this column (default: one line).", valueName: "COL")) var series: String?
    @Flag(name: .customLong("log-x"), help: "--tsv: a base-2 logarithmic x axis (x must be > 0).") var logX = false
    @Flag(name: .customLong("log-y"), help: "--tsv: a base-10 logarithmic y axis, ticks 1-2-5 per decade (y must be > 0).") var logY = false
    @Option(help: "--tsv: the plot's title (default: '<y> vs <x>').") var title: String?

    var metricName: String { metric ?? "fid" }

    func validate() throws {
        if let out, !out.lowercased().hasSuffix(".png") { throw ValidationError("--out writes a PNG; give a name ending in .png, got '\(out)'") }
        guard tsv == nil else { return try validateTSV() }
        if xColumn != nil || yColumn != nil || series != nil || logX || logY || title != nil {
            throw ValidationError("--x, --y, --series, --log-x, --log-y and --title belong to --tsv FILE")
        }
        guard !runs.isEmpty else { throw ValidationError("give at least one run directory, e.g. haste plot runs/demo") }
        try FlagCheck.choice("metric", metricName, PlotMetric.allCases.map(\.rawValue))
        if let smooth { try FlagCheck.range("smooth", smooth, .atLeast(1, "1 = no smoothing")) }
        if !table && (baseline != nil || noise != nil) { throw ValidationError("--baseline and --noise belong to --table") }
        if table && (metricName != "fid" || out != nil || smooth != nil) { throw ValidationError("--table compares FID and prints markdown: drop --metric, --out and --smooth") }
    }

    func validateTSV() throws {
        guard runs.isEmpty else { throw ValidationError("--tsv draws a table, not run directories: drop \(runs.joined(separator: " "))") }
        guard xColumn != nil, yColumn != nil else { throw ValidationError("--tsv needs --x COL and --y COL (column names of its header line)") }
        if table || metric != nil || smooth != nil || baseline != nil || noise != nil {
            throw ValidationError("--tsv draws table columns: drop --table, --metric, --smooth, --baseline and --noise")
        }
    }

    func run() throws {
        if let tsv {
            let plot = try TablePlot.plot(tsv: tsv, x: xColumn!, y: yColumn!, series: series, logX: logX, logY: logY,
                                          title: title)
            let path = out ?? URL(fileURLWithPath: tsv).deletingPathExtension().appendingPathExtension("png").path
            try plot.write(to: path)
            print(path)
            return
        }
        let groups = RunGroup.group(try runs.map { try RunRecord(loading: $0) })
        if table {
            print(try RunComparison.table(groups, baselineName: baseline, noise: try noise.map(RunComparison.readNumbers)), terminator: "")
            return
        }
        let (plot, notes) = try RunComparison.plot(groups, metric: PlotMetric(rawValue: metricName)!, smoothing: smooth)
        notes.forEach { FileHandle.standardError.write(Data("haste: \($0)\n".utf8)) }
        let path = out ?? Plot.defaultOut(runs, metric: metricName)
        try plot.write(to: path)
        print(path)
    }

    /// compare-<metric>.png in the run directories' common parent folder (the working directory when they have none).
    static func defaultOut(_ runs: [String], metric: String) -> String {
        let parents = Set(runs.map { URL(fileURLWithPath: $0).standardizedFileURL.deletingLastPathComponent().path })
        let folder = parents.count == 1 ? parents.first! : FileManager.default.currentDirectoryPath
        return URL(fileURLWithPath: folder).appendingPathComponent("compare-\(metric).png").path
    }
}
