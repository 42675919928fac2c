import Foundation

/// One curve of a `LinePlot`.
public struct PlotSeries {
    public var name: String
    public var points: [(x: Double, y: Double)]
    public var color: RGB
    public var lineWidth: Int
    /// A disc at every point (sparse curves such as FID).
    public var markers: Bool
    /// Every point's y value printed beside it.
    public var valueLabels: Bool
    /// A shaded range around the curve (the spread over seeds), filled in the series colour lightened; empty: none.
    public var band: [(x: Double, lower: Double, upper: Double)]

    public init(name: String, points: [(x: Double, y: Double)], color: RGB, lineWidth: Int = 2, markers: Bool = false, valueLabels: Bool = false,
                band: [(x: Double, lower: Double, upper: Double)] = []) {
        (self.name, self.points, self.color, self.lineWidth, self.markers, self.valueLabels) = (name, points, color, lineWidth, markers, valueLabels)
        self.band = band
    }

    /// The colour a band is filled with.
    public var bandColor: RGB { color.lightened(0.85) }
}

/// A vertical dashed line at an x value (the alignment early-stop step), labelled above the plot area.
public struct PlotMarker {
    public var x: Double
    public var label: String
    public var color: RGB
    /// The label drawn above the plot area too (off when several markers could share a column: the legend names them).
    public var labelAbove: Bool
    public init(x: Double, label: String, color: RGB = RGB(214, 96, 0), labelAbove: Bool = true) {
        (self.x, self.label, self.color, self.labelAbove) = (x, label, color, labelAbove)
    }
}

/// A line chart of one or more series with a title, axis labels, 1-2-5 tick numbers, a grid, a legend and
/// vertical markers, drawn with `Canvas` and `BitmapFont` (no image or font library). The y range holds every
/// point of every series; a marker outside the x range is listed in the legend instead of being drawn.
public struct LinePlot {
    public var title: String
    public var xLabel: String, yLabel: String
    public var series: [PlotSeries]
    public var markers: [PlotMarker]
    /// Extra legend lines (grey), e.g. what a marker outside the range means.
    public var notes: [String] = []
    public var width = 800, height = 480
    /// Ticks on whole x values only (the x axis counts training steps).
    public var integerX = true
    /// A logarithmic x axis (base 2, ticks at powers of two: batch sizes); every x must be > 0.
    public var logX = false
    /// The corner of the plot area the legend sits in.
    public var legendCorner = Corner.topRight

    public enum Corner: CaseIterable { case topRight, topLeft, bottomRight, bottomLeft }

    public init(title: String, xLabel: String, yLabel: String, series: [PlotSeries], markers: [PlotMarker] = []) {
        (self.title, self.xLabel, self.yLabel, self.series, self.markers) = (title, xLabel, yLabel, series, markers)
    }

    /// Where things go: the plot rectangle (pixels) and both axes.
    public struct Layout {
        public let left: Int, top: Int, right: Int, bottom: Int
        public let x: PlotAxis, y: PlotAxis
        /// x values are placed by their log2 (the axis `x` then spans log2 values).
        public var logX = false
        /// Where an x value of the data lies on the axis `x`.
        public func axisX(_ v: Double) -> Double { logX ? log2(v) : v }
        public func px(_ v: Double) -> Int { left + Int((Double(right - left) * (axisX(v) - x.lower) / (x.upper - x.lower)).rounded()) }
        /// The x ticks as values of the data, with their labels.
        public var xTicks: [(value: Double, label: String)] {
            x.ticks.map { t in logX ? (value: pow(2, t), label: String(format: "%g", pow(2, t))) : (value: t, label: x.label(t)) }
        }
        public func py(_ v: Double) -> Int { bottom - Int((Double(bottom - top) * (v - y.lower) / (y.upper - y.lower)).rounded()) }
    }

    public var layout: Layout {
        let xs = series.flatMap { $0.points.map(\.x) }
        let ys = (series.flatMap { $0.points.map(\.y) } + series.flatMap { $0.band.flatMap { [$0.lower, $0.upper] } }).filter(\.isFinite)
        let y = PlotAxis(covering: ys, padding: 0.1, targetTicks: 6)
        let tickWidth = y.ticks.map { BitmapFont.width(y.label($0)) }.max() ?? 0
        let x = logX ? PlotAxis(covering: xs.filter { $0 > 0 }.map { log2($0) }, padding: 0.06, targetTicks: 8, minimumStep: 1)
                     : PlotAxis(covering: xs, padding: 0.04, targetTicks: 8, minimumStep: integerX ? 1 : 0)
        return Layout(left: 30 + tickWidth, top: 56, right: width - 24, bottom: height - 48, x: x, y: y, logX: logX)
    }

    /// Markers inside the x range (drawn) and the others (listed in the legend).
    var visibleMarkers: (inside: [PlotMarker], outside: [PlotMarker]) {
        let l = layout
        let inside = { (m: PlotMarker) in l.axisX(m.x) >= l.x.lower && l.axisX(m.x) <= l.x.upper }
        return (markers.filter(inside), markers.filter { !inside($0) })
    }

    public func render() -> Canvas {
        var c = Canvas(width: width, height: height)
        let l = layout
        drawFrame(&c, l)
        for s in series where !s.band.isEmpty { drawBand(&c, s, l) }
        for s in series { drawSeries(&c, s, l) }
        for m in visibleMarkers.inside { drawMarker(&c, m, l) }
        for s in series where s.valueLabels { drawValueLabels(&c, s, l) }
        drawLegend(&c, l)
        return c
    }

    public func write(to path: String) throws { try render().save(path) }

    private func drawFrame(_ c: inout Canvas, _ l: Layout) {
        c.text(title, x: (width - BitmapFont.width(title, scale: 2)) / 2, y: 12, scale: 2)
        for t in l.y.ticks {
            let y = l.py(t), text = l.y.label(t)
            c.line(l.left, y, l.right, y, .gridGrey)
            c.line(l.left - 4, y, l.left, y, .black)
            c.text(text, x: l.left - 7 - BitmapFont.width(text), y: y - 3)
        }
        for (t, text) in l.xTicks {
            let x = l.px(t)
            c.line(x, l.top, x, l.bottom, .gridGrey)
            c.line(x, l.bottom, x, l.bottom + 4, .black)
            c.text(text, x: x - BitmapFont.width(text) / 2, y: l.bottom + 8)
        }
        c.rectangle(x: l.left, y: l.top, width: l.right - l.left + 1, height: l.bottom - l.top + 1, .black)
        c.text(xLabel, x: l.left + (l.right - l.left - BitmapFont.width(xLabel)) / 2, y: height - 20)
        c.verticalText(yLabel, x: 8, y: l.top + (l.bottom - l.top + BitmapFont.width(yLabel)) / 2)
    }

    private func drawSeries(_ c: inout Canvas, _ s: PlotSeries, _ l: Layout) {
        let pts = s.points.filter { $0.y.isFinite }.map { (l.px($0.x), l.py($0.y)) }
        for (a, b) in zip(pts, pts.dropFirst()) { c.line(a.0, a.1, b.0, b.1, s.color, thickness: s.lineWidth) }
        if pts.count == 1 && !s.markers { c.disc(pts[0].0, pts[0].1, radius: 2, s.color) }
        if s.markers { for p in pts { c.disc(p.0, p.1, radius: 4, s.color); c.disc(p.0, p.1, radius: 1, .white) } }
    }

    /// The band between consecutive points, column by column, linearly interpolated; multiplied onto what is
    /// there, so overlapping bands of several groups all show.
    private func drawBand(_ c: inout Canvas, _ s: PlotSeries, _ l: Layout) {
        let pts = s.band.filter { $0.lower.isFinite && $0.upper.isFinite }
        for (k, (a, b)) in zip(pts, pts.dropFirst()).enumerated() {
            let (xa, xb) = (l.px(a.x), l.px(b.x))
            for x in xa...max(xa, xb) where x < xb || k == pts.count - 2 {        // a shared column once
                let t = xb > xa ? Double(x - xa) / Double(xb - xa) : 0
                let hi = l.py(a.upper + t * (b.upper - a.upper)), lo = l.py(a.lower + t * (b.lower - a.lower))
                c.multiply(x: x, y: hi, width: 1, height: lo - hi + 1, s.bandColor)
            }
        }
        if pts.count == 1 { c.multiply(x: l.px(pts[0].x) - 2, y: l.py(pts[0].upper), width: 5, height: l.py(pts[0].lower) - l.py(pts[0].upper) + 1, s.bandColor) }
    }

    private func drawValueLabels(_ c: inout Canvas, _ s: PlotSeries, _ l: Layout) {
        for p in s.points where p.y.isFinite {
            let text = plotValueLabel(p.y), w = BitmapFont.width(text)
            let x = min(max(l.px(p.x) - w / 2, l.left + 3), l.right - w - 3)
            let above = l.py(p.y) - 17
            let y = above >= l.top + 3 ? above : l.py(p.y) + 10
            c.fill(x: x - 2, y: y - 2, width: w + 4, height: BitmapFont.glyphHeight + 4, .white)
            c.text(text, x: x, y: y, s.color)
        }
    }

    private func drawMarker(_ c: inout Canvas, _ m: PlotMarker, _ l: Layout) {
        let x = l.px(m.x)
        c.line(x, l.top + 1, x, l.bottom - 1, m.color, thickness: 2, dash: (6, 4))
        guard m.labelAbove else { return }
        let w = BitmapFont.width(m.label)
        c.text(m.label, x: min(max(x - w / 2, 4), width - w - 4), y: l.top - 13, m.color)
    }

    /// Top right inside the plot: a line sample (and disc) per series, a dash per marker, then the notes.
    /// The legend's lines: one per series, one per marker, then the notes.
    public var legendLines: [String] {
        let (inside, outside) = visibleMarkers
        return series.map(\.name) + inside.map(\.label) + outside.map { "\($0.label) (beyond this plot)" } + notes
    }

    /// The legend's rectangle (x, y, width, height) when it sits in `corner`.
    public func legendBox(_ corner: Corner, _ l: Layout) -> (x: Int, y: Int, width: Int, height: Int) {
        let lines = legendLines
        let w = 34 + (lines.map { BitmapFont.width($0) }.max() ?? 0), h = lines.count * 13 + 8
        let right = corner == .topRight || corner == .bottomRight, top = corner == .topRight || corner == .topLeft
        return (right ? l.right - w - 8 : l.left + 8, top ? l.top + 8 : l.bottom - h - 8, w, h)
    }

    /// How many data points the legend would hide in `corner`.
    public func pointsUnderLegend(_ corner: Corner) -> Int {
        let l = layout, box = legendBox(corner, l)
        return series.flatMap(\.points).filter { p in
            let (x, y) = (l.px(p.x), l.py(p.y))
            return x >= box.x - 4 && x <= box.x + box.width + 4 && y >= box.y - 4 && y <= box.y + box.height + 4
        }.count
    }

    private func drawLegend(_ c: inout Canvas, _ l: Layout) {
        let (inside, outside) = visibleMarkers
        let lines = legendLines, legendMarkers = inside + outside
        guard !lines.isEmpty else { return }
        let (x0, y0, w, h) = legendBox(legendCorner, l)
        c.fill(x: x0, y: y0, width: w, height: h, .white)
        c.rectangle(x: x0, y: y0, width: w, height: h, .grey)
        for (k, text) in lines.enumerated() {
            let y = y0 + 6 + k * 13, mid = y + 3
            if k < series.count {
                let s = series[k]
                if !s.band.isEmpty { c.fill(x: x0 + 6, y: mid - 4, width: 19, height: 9, s.bandColor) }
                c.line(x0 + 6, mid, x0 + 24, mid, s.color, thickness: s.lineWidth)
                if s.markers { c.disc(x0 + 15, mid, radius: 3, s.color) }
            } else if k < series.count + inside.count + outside.count {
                c.line(x0 + 15, mid - 5, x0 + 15, mid + 5, legendMarkers[k - series.count].color, thickness: 2, dash: (3, 2))
            }
            c.text(text, x: x0 + 30, y: y, k < series.count + inside.count + outside.count ? .black : .grey)
        }
    }
}
