import HasteTensor

/// A preview grid of text-conditioned samples: one prompt per column (sample i in column i mod columns), its caption
/// word-wrapped under the column in the bitmap font. Images smaller than 96 px are enlarged by an integer factor
/// (nearest) so a caption line holds at least 16 characters; values as `ImageGrid` ((x + 1)/2, clamped, x·255 + 0.5).
public enum CaptionGrid {
    public static let minimumCellWidth = 96, maxLines = 4, pad = 2

    public static func write(_ images: Tensor, captions: [String], to path: String) throws {
        try canvas(images, captions: captions).save(path)
    }

    public static func canvas(_ images: Tensor, captions: [String]) -> Canvas {
        let (n, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        require(!captions.isEmpty, "CaptionGrid: no captions")
        let v = ((images.to(.float32) + 1.0) * 0.5).clamp(min: 0, max: 1).scalars(as: Float.self)
        let scale = max(1, (minimumCellWidth + w - 1) / w), cw = w * scale, ch = h * scale
        let cols = captions.count, rows = (n + cols - 1) / cols
        let wrapped = captions.map { Array(wrap($0, width: max(1, (cw - pad) / BitmapFont.advance)).prefix(maxLines)) }
        let textHeight = (wrapped.map(\.count).max() ?? 0) * BitmapFont.lineHeight + 2 * pad
        var canvas = Canvas(width: cols * (cw + pad) + pad, height: rows * (ch + pad) + pad + textHeight, background: .white)
        for i in 0..<n {
            let y0 = pad + (i / cols) * (ch + pad), x0 = pad + (i % cols) * (cw + pad)
            for y in 0..<ch { for x in 0..<cw {
                let p = ((y / scale) * w + x / scale)
                func channel(_ k: Int) -> UInt8 { UInt8(min(255, max(0, v[(i * c + min(k, c - 1)) * h * w + p] * 255 + 0.5))) }
                canvas.set(x0 + x, y0 + y, RGB(channel(0), channel(1), channel(2)))
            } }
        }
        let textTop = rows * (ch + pad) + pad + pad
        for (col, lines) in wrapped.enumerated() {
            for (k, line) in lines.enumerated() {
                canvas.text(line, x: pad + col * (cw + pad), y: textTop + k * BitmapFont.lineHeight)
            }
        }
        return canvas
    }

    /// Greedy word wrap to lines of at most `width` characters; longer words are cut.
    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = [], line = ""
        for word in text.split(separator: " ").map(String.init) {
            var word = word
            while word.count > width {
                if !line.isEmpty { lines.append(line); line = "" }
                lines.append(String(word.prefix(width)))
                word = String(word.dropFirst(width))
            }
            if line.isEmpty { line = word } else if line.count + 1 + word.count <= width { line += " " + word } else {
                lines.append(line); line = word
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }
}
