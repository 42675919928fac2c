import HasteIO
import HasteTensor

/// A sample grid with a caption under each column (text-to-image: one column per prompt), drawn with
/// `BitmapFont` so it needs no system font. Small images are enlarged by an integer factor (nearest neighbour)
/// until a column is at least `minColumnWidth` pixels wide, so that a caption line holds a few words; captions
/// are wrapped at spaces into at most `maxLines` lines (a longer caption ends in "...").
public enum CaptionedGrid {
    public static let minColumnWidth = 96, maxLines = 4, pad = 4

    /// `columns[c]` holds column c's images top to bottom (RGB, all the same size; columns may be shorter than the
    /// tallest one), `captions[c]` its caption.
    public static func write(columns: [[DecodedImage]], captions: [String], to path: String) throws {
        require(!columns.isEmpty && columns.count == captions.count, "CaptionedGrid: \(columns.count) columns, \(captions.count) captions")
        guard let first = columns.lazy.compactMap(\.first).first else { preconditionFailure("CaptionedGrid: no images") }
        require(columns.allSatisfy { $0.allSatisfy { $0.width == first.width && $0.height == first.height && $0.channels == 3 } },
                "CaptionedGrid: images must all be RGB \(first.width)×\(first.height)")
        let scale = max(1, (minColumnWidth + first.width - 1) / first.width)
        let (w, h) = (first.width * scale, first.height * scale)
        let rows = columns.map(\.count).max()!
        let chars = max(1, w / BitmapFont.advance)
        let lines = captions.map { wrap($0, width: chars) }
        let textHeight = (lines.map(\.count).max() ?? 0) * BitmapFont.lineHeight
        var canvas = Canvas(width: columns.count * (w + pad) + pad, height: rows * (h + pad) + pad + textHeight + pad)
        for (c, column) in columns.enumerated() {
            let x0 = pad + c * (w + pad)
            for (r, image) in column.enumerated() {
                let y0 = pad + r * (h + pad)
                for y in 0..<h { for x in 0..<w {
                    let i = ((y / scale) * first.width + x / scale) * 3
                    canvas.set(x0 + x, y0 + y, RGB(image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]))
                } }
            }
            for (k, line) in lines[c].enumerated() {
                canvas.text(line, x: x0, y: pad + rows * (h + pad) + k * BitmapFont.lineHeight)
            }
        }
        try canvas.save(path)
    }

    /// `text` in lines of at most `width` characters, broken at spaces (a longer word is cut), at most `maxLines`.
    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = [], line = ""
        for word in text.split(whereSeparator: \.isWhitespace).map(String.init) {
            var word = word
            while !word.isEmpty {
                let room = line.isEmpty ? width : width - line.count - 1
                if word.count <= room {
                    line += (line.isEmpty ? "" : " ") + word
                    word = ""
                } else if line.isEmpty {
                    lines.append(String(word.prefix(width)))
                    word = String(word.dropFirst(width))
                } else {
                    lines.append(line)
                    line = ""
                }
            }
        }
        if !line.isEmpty { lines.append(line) }
        guard lines.count > maxLines else { return lines }
        var kept = Array(lines.prefix(maxLines))
        kept[maxLines - 1] = String(kept[maxLines - 1].prefix(max(0, width - 3))) + "..."
        return kept
    }
}
