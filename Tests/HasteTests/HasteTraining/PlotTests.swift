import Foundation
import Testing
@testable import HasteTraining

// Plots a person can read (Sources/HasteTraining/Plot/, issue #18 item 1): rendered to pixels and checked where
// a regression would show. HASTE_PLOT_PREVIEW=<folder> also writes the images for a look.

@Test func bitmapFontGlyphsAreTheDrawnOnes() {
    #expect(Array(BitmapFont.rows("A")) == [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0x00])   // .###. #...# #...# ##### …
    #expect(Array(BitmapFont.rows("1")) == [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00])
    #expect(BitmapFont.ink("A", column: 2, row: 0) && !BitmapFont.ink("A", column: 0, row: 0) && BitmapFont.ink("A", column: 0, row: 3))
    #expect(Array(BitmapFont.rows(" ")) == [0, 0, 0, 0, 0, 0, 0, 0] && BitmapFont.rows("é") == BitmapFont.rows("?"))
    let glyphs = (32...126).map { Array(BitmapFont.rows(Character(UnicodeScalar(UInt8($0))))) }
    #expect(Set(glyphs.map { $0.map(String.init).joined(separator: ",") }).count == 95)          // no two glyphs alike
    #expect(glyphs.dropFirst().allSatisfy { $0.contains { $0 != 0 } && $0.allSatisfy { $0 < 32 } })
    #expect(BitmapFont.width("FID", scale: 2) == 34)
}

@Test func axesUseOneTwoFiveStepsAndCoverTheData() {
    #expect(PlotAxis.niceStep(0.23) == 0.5 && PlotAxis.niceStep(150) == 200 && PlotAxis.niceStep(1) == 1 && PlotAxis.niceStep(0.011) == 0.02)
    let y = PlotAxis(covering: [0.31, 1.74, 0.9], padding: 0.05)
    #expect(y.lower < 0.31 && y.upper > 1.74 && y.step == 0.2)
    #expect(y.ticks.map(y.label) == ["0.4", "0.6", "0.8", "1.0", "1.2", "1.4", "1.6", "1.8"])
    let steps = PlotAxis(covering: [0, 250_000], padding: 0, targetTicks: 5)
    #expect(steps.ticks.map(steps.label) == ["0", "50k", "100k", "150k", "200k", "250k"])
    let one = PlotAxis(covering: [42], padding: 0.05)                                   // a single value gets a span
    #expect(one.lower < 42 && one.upper > 42 && !one.ticks.isEmpty)
}

/// Pixels of `color` in the rectangle x0..<x1, y0..<y1.
func count(_ c: Canvas, _ color: RGB, x: Range<Int>, y: Range<Int>) -> Int {
    y.reduce(0) { n, yy in n + x.filter { c.pixel($0, yy) == color }.count }
}

func darkPixels(_ c: Canvas, x: Range<Int>, y: Range<Int>) -> Int {
    y.reduce(0) { n, yy in n + x.filter { let p = c.pixel($0, yy); return Int(p.r) + Int(p.g) + Int(p.b) < 200 }.count }
}

func preview(_ plot: LinePlot, _ name: String) throws {
    if let dir = ProcessInfo.processInfo.environment["HASTE_PLOT_PREVIEW"] { try plot.write(to: "\(dir)/\(name).png") }
}

/// A loss curve with an early spike: text in the title band and beside both axes, the whole curve (its
/// maximum included) inside the plot rectangle, and the dashed early-stop column.
@Test func lossPlotShowsTextTheWholeCurveAndTheEarlyStop() throws {
    func loss(_ s: Int) -> Double {
        let decay: Double = 1.5 * exp(-Double(s) / 150), wiggle: Double = 0.04 * sin(Double(s) * 1.7)
        return 0.25 + decay + wiggle + (s == 40 ? 2.5 : 0)
    }
    let points: [(Double, Double)] = (0..<2000).map { (Double($0 + 1), loss($0)) }
    let values = points.map { $0.1 }
    let plot = RunPlots.loss(points, RunPlots.Context(runName: "demo", earlyStop: 1200))
    try preview(plot, "loss")
    let c = plot.render(), l = plot.layout
    #expect(darkPixels(c, x: 250..<550, y: 8..<32) > 60)                                // title
    #expect(darkPixels(c, x: 0..<(l.left - 6), y: l.top..<l.bottom) > 100)             // y tick labels and axis label
    #expect(darkPixels(c, x: l.left..<l.right, y: (l.bottom + 6)..<c.height) > 100)    // x tick labels and axis label
    let light = plot.series[0].color, maxY = values.max()!
    #expect(l.py(maxY) > l.top && l.py(maxY) < l.bottom && l.py(values.min()!) < l.bottom)
    #expect(count(c, light, x: 0..<c.width, y: 0..<l.top) == 0)                        // nothing of the curve above the frame
    let spikeX = l.px(41)
    #expect(count(c, light, x: (spikeX - 2)..<(spikeX + 3), y: (l.py(maxY) - 1)..<(l.py(maxY) + 3)) > 0)   // the spike's top is drawn
    let marker = plot.markers[0], mx = l.px(1200)
    let column = count(c, marker.color, x: mx..<(mx + 1), y: l.top..<l.bottom)
    #expect(column > (l.bottom - l.top) / 2 && column < l.bottom - l.top)               // dashed, over the whole height
    #expect(count(c, marker.color, x: 0..<c.width, y: (l.top - 14)..<(l.top - 2)) > 20)  // its label above the frame
}

/// A two-point FID curve: two ringed markers, each with its value printed in the series colour above it, the
/// y range around both values (not a bare diagonal corner to corner), and the early-stop marker.
@Test func twoPointFIDPlotMarksAndLabelsEachPoint() throws {
    let plot = RunPlots.fid([(1000, 180.3), (2000, 95.7)], samples: 250, RunPlots.Context(runName: "demo", earlyStop: 1500))
    try preview(plot, "fid")
    let c = plot.render(), l = plot.layout, red = RunPlots.fidColor
    for (x, y) in [(1000.0, 180.3), (2000.0, 95.7)] {
        let (px, py) = (l.px(x), l.py(y))
        #expect(c.pixel(px, py) == .white && c.pixel(px + 3, py) == red && c.pixel(px, py - 3) == red)   // ringed disc
        #expect(count(c, red, x: (px - 20)..<(px + 20), y: (py - 18)..<(py - 8)) > 15, "value label above (\(x), \(y))")
        #expect(py > l.top + 10 && py < l.bottom - 10)                                 // inside, with room
    }
    #expect(l.y.ticks.count >= 3)
    #expect(count(c, RGB(214, 96, 0), x: l.px(1500)..<(l.px(1500) + 1), y: l.top..<l.bottom) > (l.bottom - l.top) / 2)
}

/// Several series share one plot (haste plot, issue #17); an early stop past the data is named in the legend.
@Test func severalSeriesShareAPlotAndAnOutOfRangeMarkerIsNamed() throws {
    var plot = RunPlots.fid([(1000, 120), (2000, 80), (3000, 61.5)], samples: 250, RunPlots.Context(runName: "two runs", earlyStop: 250_000))
    plot.series.append(PlotSeries(name: "baseline", points: [(1000, 130), (2000, 100), (3000, 90)], color: RGB(40, 140, 60), markers: true, valueLabels: true))
    try preview(plot, "fid-multi")
    let c = plot.render(), l = plot.layout
    #expect(plot.visibleMarkers.outside.count == 1)
    #expect(count(c, RGB(214, 96, 0), x: l.left..<l.right, y: l.top..<l.bottom) > 0)   // the legend's dash only
    #expect(count(c, RGB(40, 140, 60), x: l.px(3000) - 3..<l.px(3000) + 4, y: l.py(90) - 3..<l.py(90) + 4) > 10)
}

/// The first FID of a run (one point) and a two-step loss curve still get a readable frame: ticks on both axes
/// around the point, its value printed, and the early stop beyond the data named in the legend.
@Test func aSinglePointPlotGetsAFrameAroundIt() throws {
    let plot = RunPlots.fid([(1000, 212.4)], samples: 250, RunPlots.Context(runName: "demo", earlyStop: 1500))
    try preview(plot, "fid-one")
    let c = plot.render(), l = plot.layout
    #expect(l.x.ticks.count >= 3 && l.y.ticks.count >= 3)
    #expect(abs(l.px(1000) - (l.left + l.right) / 2) <= 1 && abs(l.py(212.4) - (l.top + l.bottom) / 2) <= 1)
    #expect(count(c, RunPlots.fidColor, x: (l.px(1000) - 20)..<(l.px(1000) + 20), y: (l.py(212.4) - 18)..<(l.py(212.4) - 8)) > 15)
    #expect(plot.visibleMarkers.outside.count == 1)
    let loss = RunPlots.loss([(1, 1.2), (2, 1.1)], RunPlots.Context(runName: "demo", earlyStop: nil))
    try preview(loss, "loss-two")
    #expect(loss.series.count == 1 && loss.markers.isEmpty && loss.layout.y.ticks.count >= 3)
    #expect(loss.layout.x.ticks == [1, 2] && loss.series[0].color == RunPlots.lossColor)   // whole steps; few points drawn dark
}

/// The plots' context comes from the run's config: its name, and the early stop only when alignment runs.
@Test func plotContextFollowsTheConfig() {
    var c = TrainConfig()
    (c.expName, c.earlyStopPoint) = ("demo", 1000)
    #expect(RunPlots.Context(c).runName == "demo" && RunPlots.Context(c).earlyStop == 1000)
    c.encType = "none"
    #expect(RunPlots.Context(c).earlyStop == nil && RunPlots.loss([(1, 1), (2, 0.5)], RunPlots.Context(c)).markers.isEmpty)
}

/// A base-10 log y axis: ticks at 1-2-5 per decade labelled 0.1 … 5, each decade the same height, and the fallbacks
/// (one tick per decade over many decades, 1 to 9 or a linear axis over a narrow range).
@Test func logYAxisPlacesDecadesEvenlyWithOneTwoFiveTicks() throws {
    let ticks = PlotAxis.logTicks(lower: log10(0.09), upper: log10(6.5))
    #expect(ticks.map(\.label) == ["0.1", "0.2", "0.5", "1", "2", "5"] && ticks.map(\.value) == [0.1, 0.2, 0.5, 1, 2, 5])
    #expect(PlotAxis.logTicks(lower: -3.2, upper: 3.1).map(\.label) == ["0.001", "0.01", "0.1", "1", "10", "100", "1000"])
    #expect(PlotAxis.logTicks(lower: log10(2.5), upper: log10(4.5)).map(\.label) == ["3", "4"])
    let narrow = PlotAxis.logTicks(lower: log10(3.1), upper: log10(3.3))
    #expect(narrow.count >= 2 && narrow.allSatisfy { $0.value >= 3.1 && $0.value <= 3.3 }, "\(narrow)")
    #expect(PlotAxis.logTicks(lower: 1, upper: 1).isEmpty)

    var plot = LinePlot(title: "rate", xLabel: "batch", yLabel: "img/s", series: [
        PlotSeries(name: "fast", points: [(1, 0.2), (2, 2), (3, 6)], color: RGB(200, 40, 60), markers: true)])
    plot.logY = true
    try preview(plot, "log-y")
    let l = plot.layout, c = plot.render()
    #expect(l.y.lower < log10(0.2) && l.y.upper > log10(6))
    #expect(l.yTicks.map(\.label) == ["0.2", "0.5", "1", "2", "5"])
    #expect(abs((l.py(0.2) - l.py(2)) - (l.py(2) - l.py(20))) <= 1 && l.py(0.2) > l.py(0.5))   // a decade is a decade
    #expect(abs(Double(l.py(1) - l.py(2)) - Double(l.bottom - l.top) * log10(2) / (l.y.upper - l.y.lower)) <= 1)
    #expect(count(c, .gridGrey, x: l.left..<l.right, y: l.py(1)..<(l.py(1) + 1)) > (l.right - l.left) / 2)   // the grid line at 1
    #expect(darkPixels(c, x: (l.left - 16)..<(l.left - 6), y: (l.py(0.5) - 3)..<(l.py(0.5) + 5)) > 8)       // its "0.5"
    for p in plot.series[0].points { #expect(c.pixel(l.px(p.x) + 3, l.py(p.y)) == RGB(200, 40, 60), "\(p)") }
    // A value ≤ 0 has no place on a log axis: not drawn, no crash; the axis covers the others.
    plot.series[0].points.append((4, 0))
    #expect(plot.layout.y.lower < log10(0.2) && plot.render().width == 800)
}

/// The legend goes to the first inner corner that hides no point, preferring one no line crosses, and outside the
/// plot area (a wider image) when every corner would hide a point; FID and loss plots use the same choice.
@Test func legendTakesThePlaceThatHidesLeast() throws {
    func plot(_ series: [[(x: Double, y: Double)]], notes: Int = 0) -> LinePlot {
        var p = LinePlot(title: "t", xLabel: "x", yLabel: "y", series: series.enumerated().map { k, pts in
            PlotSeries(name: "series \(k)", points: pts, color: RunComparison.palette[k], markers: true) })
        p.notes = (0..<notes).map { "a note line of thirty chars \($0)" }
        return p
    }
    let topRightTaken = plot([[(0, 0), (10, 0), (10, 10)]])
    func clear(_ p: LinePlot, _ place: LegendPlace) -> Bool { p.legendCover(place).points == 0 && p.legendCover(place).linePixels == 0 }
    #expect(topRightTaken.legendCover(.topRight).points == 1 && clear(topRightTaken, .topLeft))
    #expect(topRightTaken.legendPlacement == .topLeft)
    // Top left and bottom right hide no point; a line crosses the top left corner, so bottom right.
    let crossed = plot([[(0, 0), (10, 10)], [(0, 5), (5, 10)]], notes: 10)
    #expect(crossed.legendCover(.topLeft).points == 0 && crossed.legendCover(.topLeft).linePixels > 20)
    #expect(clear(crossed, .bottomRight) && crossed.legendPlacement == .bottomRight)
    var pinned = crossed
    pinned.legendPlace = .topLeft
    #expect(pinned.legendPlacement == .topLeft)
    // A point in every corner: the legend goes right of the plot area, which keeps its size; every point shows.
    let full = plot([[(0, 0), (10, 0)], [(0, 10), (10, 10)]])
    #expect(LegendPlace.corners.allSatisfy { full.legendCover($0).points > 0 } && full.legendPlacement == .outsideRight)
    try preview(full, "legend-outside")
    let c = full.render(), l = full.layout, box = full.legendBox(.outsideRight, l)
    #expect(c.width > 800 && c.width == box.x + box.width + 16 && c.height == 480 && l.right == 800 - 24 && box.x > l.right)
    #expect(darkPixels(c, x: box.x..<(box.x + box.width), y: box.y..<(box.y + box.height)) > 40)   // its text
    for (k, s) in full.series.enumerated() {
        for p in s.points { #expect(c.pixel(l.px(p.x) + 3, l.py(p.y)) == RunComparison.palette[k], "\(p)") }
    }
    // The FID plot's first point (top left) and the loss curve's spike keep their corners clear.
    let fid = RunPlots.fid([(1000, 180.3), (2000, 95.7)], samples: 250, RunPlots.Context(runName: "demo", earlyStop: 1500))
    #expect(fid.legendCover(fid.legendPlacement).points == 0 && fid.legendPlacement != .topLeft)
}
