import Foundation
import HasteTensor

/// `haste plot --tsv FILE --x COL --y COL [--series COL] [--log-x] [--log-y]`: a `LinePlot` of a tab-separated table
/// with a header line, one line per value of the series column (in order of first appearance), points sorted by x.
/// Rows whose y cell is not a number (a skipped benchmark row: "-" or empty) are left out and counted in a note;
/// on a log axis a number ≤ 0 is an error naming its line and column.
/// Scripts/bench_compare.sh sweep draws runs/bench/sweep.png from its sweep.tsv this way.
public enum TablePlot {
    public static func plot(tsv path: String, x: String, y: String, series: String?, logX: Bool = false, logY: Bool = false,
                            title: String? = nil) throws -> LinePlot {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw HasteError.fileMissing(path: path, hint: "--tsv expects a tab-separated table with a header line of column names (Scripts/bench_compare.sh sweep writes runs/bench/sweep.tsv).")
        }
        return try plot(text: text, path: path, x: x, y: y, series: series, logX: logX, logY: logY, title: title)
    }

    /// The same from the table's text; `path` names it in errors.
    public static func plot(text: String, path: String, x: String, y: String, series: String?, logX: Bool = false,
                            logY: Bool = false, title: String? = nil) throws -> LinePlot {
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: detail) }
        func cells(_ line: Substring) -> [String] {
            line.split(separator: "\t", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        let lines = text.split(whereSeparator: \.isNewline).filter { !$0.allSatisfy(\.isWhitespace) }
        guard let head = lines.first else { throw bad("is empty; expected a header line of column names, tab-separated") }
        let columns = cells(head)
        func index(_ name: String, _ flag: String) throws -> Int {
            guard let i = columns.firstIndex(of: name) else {
                throw bad("has no column '\(name)' (--\(flag)); its columns are: \(columns.joined(separator: ", "))")
            }
            return i
        }
        let xi = try index(x, "x"), yi = try index(y, "y"), si = try series.map { try index($0, "series") }
        var order: [String] = [], points: [String: [(x: Double, y: Double)]] = [:], left = 0
        for (n, line) in lines.dropFirst().enumerated() {
            let row = cells(line)
            guard row.count == columns.count else { throw bad("line \(n + 2) has \(row.count) cells but the header has \(columns.count)") }
            guard let xv = Double(row[xi]), xv.isFinite else { throw bad("line \(n + 2): '\(row[xi])' in column '\(x)' (--x) is not a number") }
            if logX && xv <= 0 { throw bad("line \(n + 2): \(row[xi]) in column '\(x)' cannot go on a log axis (--log-x): x must be > 0") }
            guard let yv = Double(row[yi]), yv.isFinite else { left += 1; continue }
            if logY && yv <= 0 { throw bad("line \(n + 2): \(row[yi]) in column '\(y)' cannot go on a log axis (--log-y): y must be > 0") }
            let name = si.map { row[$0] } ?? y
            if points[name] == nil { order.append(name) }
            points[name, default: []].append((x: xv, y: yv))
        }
        guard !order.isEmpty else { throw bad("no row has a number in column '\(y)' (--y): nothing to draw") }
        let palette = RunComparison.palette
        let drawn = order.enumerated().map { k, name in
            PlotSeries(name: name, points: points[name]!.sorted { $0.x < $1.x }, color: palette[k % palette.count], lineWidth: 2, markers: true)
        }
        let scale = " (log scale)"
        var plot = LinePlot(title: title ?? "\(y) vs \(x)", xLabel: x + (logX ? scale : ""), yLabel: y + (logY ? scale : ""), series: drawn)
        (plot.logX, plot.logY, plot.integerX) = (logX, logY, false)
        if left > 0 { plot.notes.append("\(left) row\(left == 1 ? "" : "s") without a number in '\(y)' not drawn") }
        return plot
    }
}
