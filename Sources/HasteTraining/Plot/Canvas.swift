import HasteIO

/// An sRGB colour.
public struct RGB: Equatable, Sendable {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { (self.r, self.g, self.b) = (r, g, b) }
    public static let black = RGB(0, 0, 0), white = RGB(255, 255, 255), grey = RGB(110, 110, 110), gridGrey = RGB(228, 228, 228)

    /// This colour mixed with white (`amount` 0 = unchanged, 1 = white): the light twin of a series colour.
    public func lightened(_ amount: Double) -> RGB {
        func mix(_ c: UInt8) -> UInt8 { UInt8(Double(c) + (255 - Double(c)) * amount) }
        return RGB(mix(r), mix(g), mix(b))
    }
}

/// An RGB raster with the primitives plots need: Bresenham lines (solid, thick or dashed), rectangles,
/// discs and `BitmapFont` text (horizontal or rotated a quarter turn for a y-axis label). Row 0 is the top.
public struct Canvas {
    public let width: Int, height: Int
    public private(set) var pixels: [UInt8]

    public init(width: Int, height: Int, background: RGB = .white) {
        (self.width, self.height) = (width, height)
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        fill(x: 0, y: 0, width: width, height: height, background)
    }

    public func pixel(_ x: Int, _ y: Int) -> RGB {
        let i = (y * width + x) * 3
        return RGB(pixels[i], pixels[i + 1], pixels[i + 2])
    }

    public mutating func set(_ x: Int, _ y: Int, _ c: RGB) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = (y * width + x) * 3
        (pixels[i], pixels[i + 1], pixels[i + 2]) = (c.r, c.g, c.b)
    }

    public mutating func fill(x: Int, y: Int, width w: Int, height h: Int, _ c: RGB) {
        guard w > 0, h > 0, x < width, y < height, x + w > 0, y + h > 0 else { return }
        for yy in max(0, y)..<min(height, y + h) { for xx in max(0, x)..<min(width, x + w) { set(xx, yy, c) } }
    }

    /// Multiplies the rectangle's pixels by `c` (per channel, /255): on white it paints `c`, where two bands
    /// overlap both stay visible (a darker mix).
    public mutating func multiply(x: Int, y: Int, width w: Int, height h: Int, _ c: RGB) {
        guard w > 0, h > 0 else { return }
        for yy in max(0, y)..<max(max(0, y), min(height, y + h)) {
            for xx in max(0, x)..<max(max(0, x), min(width, x + w)) {
                let p = pixel(xx, yy)
                set(xx, yy, RGB(UInt8(Int(p.r) * Int(c.r) / 255), UInt8(Int(p.g) * Int(c.g) / 255), UInt8(Int(p.b) * Int(c.b) / 255)))
            }
        }
    }

    /// A line `thickness` pixels wide; `dash` (on, off) pixels makes it dashed.
    public mutating func line(_ xa: Int, _ ya: Int, _ xb: Int, _ yb: Int, _ c: RGB, thickness: Int = 1, dash: (Int, Int)? = nil) {
        var (x, y) = (xa, ya)
        let dx = abs(xb - xa), dy = -abs(yb - ya), sx = xa < xb ? 1 : -1, sy = ya < yb ? 1 : -1
        var err = dx + dy, step = 0
        let lo = -(thickness - 1) / 2, hi = thickness / 2
        while true {
            if dash.map({ step % ($0.0 + $0.1) < $0.0 }) ?? true {
                for oy in lo...hi { for ox in lo...hi { set(x + ox, y + oy, c) } }
            }
            step += 1
            if x == xb && y == yb { break }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
        }
    }

    public mutating func rectangle(x: Int, y: Int, width w: Int, height h: Int, _ c: RGB) {
        line(x, y, x + w - 1, y, c); line(x, y + h - 1, x + w - 1, y + h - 1, c)
        line(x, y, x, y + h - 1, c); line(x + w - 1, y, x + w - 1, y + h - 1, c)
    }

    public mutating func disc(_ cx: Int, _ cy: Int, radius: Int, _ c: RGB) {
        for dy in -radius...radius { for dx in -radius...radius where dx * dx + dy * dy <= radius * radius + radius { set(cx + dx, cy + dy, c) } }
    }

    /// Text with its top-left corner at (x, y); each font pixel becomes a `scale` × `scale` square.
    public mutating func text(_ s: String, x: Int, y: Int, scale: Int = 1, _ c: RGB = .black) {
        for (k, ch) in s.enumerated() {
            for row in 0..<BitmapFont.glyphHeight {
                for col in 0..<BitmapFont.glyphWidth where BitmapFont.ink(ch, column: col, row: row) {
                    fill(x: x + (k * BitmapFont.advance + col) * scale, y: y + row * scale, width: scale, height: scale, c)
                }
            }
        }
    }

    /// Text read bottom to top (a y-axis label), its baseline on the left: it occupies x..<x+7·scale and
    /// runs upwards from y.
    public mutating func verticalText(_ s: String, x: Int, y: Int, scale: Int = 1, _ c: RGB = .black) {
        for (k, ch) in s.enumerated() {
            for row in 0..<BitmapFont.glyphHeight {
                for col in 0..<BitmapFont.glyphWidth where BitmapFont.ink(ch, column: col, row: row) {
                    fill(x: x + row * scale, y: y - (k * BitmapFont.advance + col + 1) * scale, width: scale, height: scale, c)
                }
            }
        }
    }

    public func save(_ path: String) throws {
        try PNGImage.write(pixels, height: height, width: width, channels: 3, to: path)
    }
}
