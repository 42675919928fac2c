import Foundation
import HasteIO

/// A dependency-free line plot as PNG: raw values light, a moving average dark, axes with 5 ticks.
/// Enough to see a loss curve; exact numbers live in metrics.jsonl.
public enum LossPlot {
    public static func write(_ points: [(Double, Double)], to path: String, title: String, width: Int = 640, height: Int = 360) throws {
        var canvas = Canvas(width: width, height: height)
        let margin = 40
        let plotW = width - 2 * margin, plotH = height - 2 * margin
        canvas.line(margin, height - margin, width - margin, height - margin, (0, 0, 0))
        canvas.line(margin, margin, margin, height - margin, (0, 0, 0))
        for k in 0...4 {
            let x = margin + plotW * k / 4, y = height - margin - plotH * k / 4
            canvas.line(x, height - margin, x, height - margin + 5, (0, 0, 0))
            canvas.line(margin - 5, y, margin, y, (0, 0, 0))
        }
        guard points.count >= 2 else { return try canvas.save(path) }
        let window = max(1, points.count / 50)
        var smooth: [Double] = []
        var acc = 0.0
        for (i, p) in points.enumerated() {
            acc += p.1
            if i >= window { acc -= points[i - window].1 }
            smooth.append(acc / Double(min(i + 1, window)))
        }
        let x0 = points.first!.0, x1 = max(points.last!.0, x0 + 1)
        let lo = smooth.min()!, hi = max(points.map(\.1).sorted()[points.count * 98 / 100], lo + 1e-6)
        func px(_ x: Double) -> Int { margin + Int(Double(plotW) * (x - x0) / (x1 - x0)) }
        func py(_ y: Double) -> Int { height - margin - Int(Double(plotH) * (min(max(y, lo), hi) - lo) / (hi - lo)) }
        for i in 1..<points.count {
            canvas.line(px(points[i - 1].0), py(points[i - 1].1), px(points[i].0), py(points[i].1), (170, 200, 240))
        }
        for i in 1..<points.count {
            canvas.line(px(points[i - 1].0), py(smooth[i - 1]), px(points[i].0), py(smooth[i]), (20, 60, 160))
        }
        try canvas.save(path)
    }
}

/// An RGB raster with Bresenham lines.
struct Canvas {
    let width: Int, height: Int
    var pixels: [UInt8]
    init(width: Int, height: Int) {
        self.width = width; self.height = height
        pixels = [UInt8](repeating: 255, count: width * height * 3)
    }

    mutating func set(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = c.0; pixels[i + 1] = c.1; pixels[i + 2] = c.2
    }

    mutating func line(_ xa: Int, _ ya: Int, _ xb: Int, _ yb: Int, _ c: (UInt8, UInt8, UInt8)) {
        var (x, y) = (xa, ya)
        let dx = abs(xb - xa), dy = -abs(yb - ya), sx = xa < xb ? 1 : -1, sy = ya < yb ? 1 : -1
        var err = dx + dy
        while true {
            set(x, y, c)
            if x == xb && y == yb { break }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
        }
    }

    func save(_ path: String) throws { try PNGImage.write(pixels, height: height, width: width, channels: 3, to: path) }
}
