import Foundation

/// Where a `LinePlot`'s legend sits: an inner corner of the plot area, or right of it (the image widens by the
/// legend's width, the plot area keeps its size).
public enum LegendPlace: CaseIterable, Sendable {
    case topRight, topLeft, bottomRight, bottomLeft, outsideRight

    /// The inner corners, in the order ties are broken.
    public static let corners: [LegendPlace] = [.topRight, .topLeft, .bottomRight, .bottomLeft]
}

/// A rectangle of pixels (row 0 is the top).
public struct PixelBox: Equatable, Sendable {
    public var x: Int, y: Int, width: Int, height: Int
    public init(x: Int, y: Int, width: Int, height: Int) { (self.x, self.y, self.width, self.height) = (x, y, width, height) }

    public func contains(_ px: Int, _ py: Int) -> Bool { px >= x && px < x + width && py >= y && py < y + height }
    public func intersects(_ o: PixelBox) -> Bool { x < o.x + o.width && o.x < x + width && y < o.y + o.height && o.y < y + height }
}

/// The legend: a line sample (and disc) per series, a dash per marker, then the notes; placed where it hides the
/// fewest data points (each point's disc and printed value), then the fewest pixels of the lines between them.
extension LinePlot {
    /// The legend's lines: one per series, one per marker, then the notes.
    public var legendLines: [String] {
        let (inside, outside) = visibleMarkers
        return series.map(\.name) + inside.map(\.label) + outside.map { "\($0.label) (beyond this plot)" } + notes
    }

    /// The legend's rectangle when it sits at `place`.
    public func legendBox(_ place: LegendPlace, _ l: Layout) -> PixelBox {
        let lines = legendLines
        let w = 34 + (lines.map { BitmapFont.width($0) }.max() ?? 0), h = lines.count * 13 + 8
        switch place {
        case .topRight: return PixelBox(x: l.right - w - 8, y: l.top + 8, width: w, height: h)
        case .topLeft: return PixelBox(x: l.left + 8, y: l.top + 8, width: w, height: h)
        case .bottomRight: return PixelBox(x: l.right - w - 8, y: l.bottom - h - 8, width: w, height: h)
        case .bottomLeft: return PixelBox(x: l.left + 8, y: l.bottom - h - 8, width: w, height: h)
        case .outsideRight: return PixelBox(x: l.right + 16, y: l.top, width: w, height: h)
        }
    }

    /// What the legend would hide at `place`: data points (a point counts when its disc, grown by 4 pixels, or its
    /// printed value meets the legend) and pixels of the lines between consecutive points.
    public func legendCover(_ place: LegendPlace) -> (points: Int, linePixels: Int) {
        let l = layout, box = legendBox(place, l)
        var points = 0, linePixels = 0
        for s in series {
            let drawn = s.points.filter(l.placeable)
            for p in drawn {
                let disc = PixelBox(x: l.px(p.x) - 8, y: l.py(p.y) - 8, width: 17, height: 17)
                if box.intersects(disc) || (s.valueLabels && box.intersects(valueLabelBox(p, l))) { points += 1 }
            }
            for (a, b) in zip(drawn, drawn.dropFirst()) {
                let (xa, ya, xb, yb) = (l.px(a.x), l.py(a.y), l.px(b.x), l.py(b.y))
                let n = max(abs(xb - xa), abs(yb - ya), 1)
                linePixels += (0..<n).filter { k in box.contains(xa + (xb - xa) * k / n, ya + (yb - ya) * k / n) }.count
            }
        }
        return (points, linePixels)
    }

    /// `legendPlace` when set; else the inner corner that hides the fewest points, then the fewest line pixels
    /// (ties in the order of `LegendPlace.corners`), or right of the plot area when every corner hides a point.
    public var legendPlacement: LegendPlace {
        if let legendPlace { return legendPlace }
        guard !legendLines.isEmpty else { return .topRight }
        let covers = LegendPlace.corners.map { (place: $0, cover: legendCover($0)) }
        let best = covers.min { ($0.cover.points, $0.cover.linePixels) < ($1.cover.points, $1.cover.linePixels) }!
        return best.cover.points > 0 ? .outsideRight : best.place
    }

    /// The image's size: `width` × `height`, grown to hold a legend placed outside the plot area.
    public func imageSize(_ place: LegendPlace, _ l: Layout) -> (width: Int, height: Int) {
        guard place == .outsideRight, !legendLines.isEmpty else { return (width, height) }
        let box = legendBox(place, l)
        return (max(width, box.x + box.width + 16), max(height, box.y + box.height + 8))
    }

    func drawLegend(_ c: inout Canvas, _ l: Layout, _ place: LegendPlace) {
        let (inside, outside) = visibleMarkers
        let lines = legendLines, legendMarkers = inside + outside
        guard !lines.isEmpty else { return }
        let box = legendBox(place, l), (x0, y0) = (box.x, box.y)
        c.fill(x: x0, y: y0, width: box.width, height: box.height, .white)
        c.rectangle(x: x0, y: y0, width: box.width, height: box.height, .grey)
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
