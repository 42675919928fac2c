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

/// A line chart of one or more series with a title, axis labels, 1-2-5 tick numbers (linear or log axes), a grid,
/// a legend where it hides the least (PlotLegend.swift) and vertical markers, drawn with `Canvas` and `BitmapFont`
/// (no image or font library). The y range holds every point of every series; a marker outside the x range is
/// listed in the legend instead of being drawn.
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
    /// A logarithmic y axis (base 10, ticks at 1-2-5 steps per decade: rates that span decades); every y must be > 0.
    public var logY = false
    /// Where the legend sits; nil: where it hides the least (`legendPlacement`).
    public var legendPlace: LegendPlace?

    public init(title: String, xLabel: String, yLabel: String, series: [PlotSeries], markers: [PlotMarker] = []) {
        (self.title, self.xLabel, self.yLabel, self.series, self.markers) = (title, xLabel, yLabel, series, markers)
    }

    /// Where things go: the plot rectangle (pixels) and both axes.
    public struct Layout {
        public let left: Int, top: Int, right: Int, bottom: Int
        public let x: PlotAxis, y: PlotAxis
        /// x values are placed by their log2 (the axis `x` then spans log2 values).
        public var logX = false
        /// y values are placed by their log10 (the axis `y` then spans log10 values).
        public var logY = false
        /// Where an x value of the data lies on the axis `x`.
        public func axisX(_ v: Double) -> Double { logX ? log2(v) : v }
        /// Where a y value of the data lies on the axis `y`.
        public func axisY(_ v: Double) -> Double { logY ? log10(v) : v }
        /// Whether a point can be placed (a log axis has no place for values ≤ 0).
        public func placeable(_ p: (x: Double, y: Double)) -> Bool { axisX(p.x).isFinite && axisY(p.y).isFinite }
        public func px(_ v: Double) -> Int { left + Int((Double(right - left) * (axisX(v) - x.lower) / (x.upper - x.lower)).rounded()) }
        /// The x ticks as values of the data, with their labels.
        public var xTicks: [(value: Double, label: String)] {
            x.ticks.map { t in logX ? (value: pow(2, t), label: String(format: "%g", pow(2, t))) : (value: t, label: x.label(t)) }
        }
        /// The y ticks as values of the data, with their labels.
        public var yTicks: [(value: Double, label: String)] {
            logY ? PlotAxis.logTicks(lower: y.lower, upper: y.upper) : y.ticks.map { (value: $0, label: y.label($0)) }
        }
        public func py(_ v: Double) -> Int { bottom - Int((Double(bottom - top) * (axisY(v) - y.lower) / (y.upper - y.lower)).rounded()) }
    }

    public var layout: Layout {
        let xs = series.flatMap { $0.points.map(\.x) }
        let ys = (series.flatMap { $0.points.map(\.y) } + series.flatMap { $0.band.flatMap { [$0.lower, $0.upper] } }).filter(\.isFinite)
        let y = logY ? PlotAxis(covering: ys.filter { $0 > 0 }.map { log10($0) }, padding: 0.1, targetTicks: 6)
                     : PlotAxis(covering: ys, padding: 0.1, targetTicks: 6)
        let x = logX ? PlotAxis(covering: xs.filter { $0 > 0 }.map { log2($0) }, padding: 0.06, targetTicks: 8, minimumStep: 1)
                     : PlotAxis(covering: xs, padding: 0.04, targetTicks: 8, minimumStep: integerX ? 1 : 0)
        func place(left: Int) -> Layout {
            Layout(left: left, top: 56, right: width - 24, bottom: height - 48, x: x, y: y, logX: logX, logY: logY)
        }
        let tickWidth = place(left: 0).yTicks.map { BitmapFont.width($0.label) }.max() ?? 0
        return place(left: 30 + tickWidth)
    }

    /// Markers inside the x range (drawn) and the others (listed in the legend).
    var visibleMarkers: (inside: [PlotMarker], outside: [PlotMarker]) {
        let l = layout
        let inside = { (m: PlotMarker) in l.axisX(m.x) >= l.x.lower && l.axisX(m.x) <= l.x.upper }
        return (markers.filter(inside), markers.filter { !inside($0) })
    }

    public func render() -> Canvas {
        let l = layout, place = legendPlacement, size = imageSize(place, l)
        var c = Canvas(width: size.width, height: size.height)
        drawFrame(&c, l)
        for s in series where !s.band.isEmpty { drawBand(&c, s, l) }
        for s in series { drawSeries(&c, s, l) }
        for m in visibleMarkers.inside { drawMarker(&c, m, l) }
        for s in series where s.valueLabels { drawValueLabels(&c, s, l) }
        drawLegend(&c, l, place)
        return c
    }

    public func write(to path: String) throws { try render().save(path) }

    private func drawFrame(_ c: inout Canvas, _ l: Layout) {
        c.text(title, x: (width - BitmapFont.width(title, scale: 2)) / 2, y: 12, scale: 2)
        for (t, text) in l.yTicks {
            let y = l.py(t)
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
        let pts = s.points.filter(l.placeable).map { (l.px($0.x), l.py($0.y)) }
        for (a, b) in zip(pts, pts.dropFirst()) { c.line(a.0, a.1, b.0, b.1, s.color, thickness: s.lineWidth) }
        if pts.count == 1 && !s.markers { c.disc(pts[0].0, pts[0].1, radius: 2, s.color) }
        if s.markers { for p in pts { c.disc(p.0, p.1, radius: 4, s.color); c.disc(p.0, p.1, radius: 1, .white) } }
    }

    /// The band between consecutive points, column by column, linearly interpolated; multiplied onto what is
    /// there, so overlapping bands of several groups all show.
    private func drawBand(_ c: inout Canvas, _ s: PlotSeries, _ l: Layout) {
        let pts = s.band.filter { l.placeable((x: $0.x, y: $0.lower)) && l.placeable((x: $0.x, y: $0.upper)) }
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
        for p in s.points where l.placeable(p) {
            let text = plotValueLabel(p.y), box = valueLabelBox(p, l)
            c.fill(x: box.x, y: box.y, width: box.width, height: box.height, .white)
            c.text(text, x: box.x + 2, y: box.y + 2, s.color)
        }
    }

    /// The white box a point's printed value sits in: above the point, below it where there is no room above.
    func valueLabelBox(_ p: (x: Double, y: Double), _ l: Layout) -> PixelBox {
        let w = BitmapFont.width(plotValueLabel(p.y))
        let x = min(max(l.px(p.x) - w / 2, l.left + 3), l.right - w - 3)
        let above = l.py(p.y) - 17
        let y = above >= l.top + 3 ? above : l.py(p.y) + 10
        return PixelBox(x: x - 2, y: y - 2, width: w + 4, height: BitmapFont.glyphHeight + 4)
    }

    private func drawMarker(_ c: inout Canvas, _ m: PlotMarker, _ l: Layout) {
        let x = l.px(m.x)
        c.line(x, l.top + 1, x, l.bottom - 1, m.color, thickness: 2, dash: (6, 4))
        guard m.labelAbove else { return }
        let w = BitmapFont.width(m.label)
        c.text(m.label, x: min(max(x - w / 2, 4), width - w - 4), y: l.top - 13, m.color)
    }
}
