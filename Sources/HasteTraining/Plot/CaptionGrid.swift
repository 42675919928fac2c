import HasteIO
import HasteTensor

/// A training preview of text-conditioned samples as a `CaptionedGrid`: one prompt per column (sample i in column
/// i mod columns), the caption under it; values as `ImageGrid` ((x + 1)/2, clamped, x·255 + 0.5; one channel is
/// shown as grey).
public enum CaptionGrid {
    public static func write(_ images: Tensor, captions: [String], to path: String) throws {
        let (n, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        require(!captions.isEmpty, "CaptionGrid: no captions")
        let v = ((images.to(.float32) + 1.0) * 0.5).clamp(min: 0, max: 1).scalars(as: Float.self)
        var columns = [[DecodedImage]](repeating: [], count: min(captions.count, n))
        for i in 0..<n {
            var rgb = [UInt8](repeating: 0, count: 3 * h * w)
            for p in 0..<(h * w) { for k in 0..<3 { rgb[3 * p + k] = UInt8(min(255, v[(i * c + min(k, c - 1)) * h * w + p] * 255 + 0.5)) } }
            columns[i % columns.count].append(DecodedImage(width: w, height: h, channels: 3, pixels: rgb))
        }
        try CaptionedGrid.write(columns: columns, captions: Array(captions.prefix(columns.count)), to: path)
    }
}
