import Foundation
import HasteTensor

/// What a decoder refuses from the header alone, before allocating anything image-sized (the C shims apply
/// it between reading the header and decoding): a few hundred bytes can declare 65500×65500 pixels.
public struct ImageLimits: Sendable, Equatable {
    /// Pillow's DecompressionBombError threshold, 2 × `Image.MAX_IMAGE_PIXELS` (2 × 89 478 485): the
    /// reference's `PIL.Image.open` refuses the same files, so no dataset the reference can build is lost.
    public static let pillowMaxPixels = 2 * 89_478_485
    /// Every decode: the pixel cap only.
    public static let decoding = ImageLimits()

    public var maxPixels: Int
    /// Refuse when the long side exceeds this many times the short side; nil: any shape.
    public var maxAspectRatio: Int?

    public init(maxPixels: Int = pillowMaxPixels, maxAspectRatio: Int? = nil) {
        (self.maxPixels, self.maxAspectRatio) = (maxPixels, maxAspectRatio)
    }

    /// Why a width × height header is refused, or nil if it is within the limits.
    public func violation(width: Int, height: Int) -> String? {
        let (lo, hi) = (min(width, height), max(width, height))
        if width * height > maxPixels {
            return "refused: its header declares \(width)×\(height) = \(width * height) pixels, over the decompression-bomb limit of \(maxPixels) (Pillow's, which the reference uses); if the image is genuine, downscale it first"
        }
        if let r = maxAspectRatio, hi > r * lo {
            return "refused: \(width)×\(height) is over \(r):1 (its long side is \(hi / lo)× the short one); a center crop that scales the short side up to the crop size would build a strip \(hi / lo)× as long and keep under 1/\(r) of the picture. Crop it to a saner shape first if it is a real photo"
        }
        return nil
    }

    var cPixels: UInt64 { UInt64(maxPixels) }
    var cAspect: UInt32 { UInt32(maxAspectRatio ?? 0) }
}

/// Decodes image files the way the reference's `PIL.Image.open(f).convert("RGB")` sees them, sniffing the format
/// from the first bytes (not the extension). Only JPEG and PNG are decoded; anything else is an error the
/// preprocessor reports and skips.
public enum ImageDecoder {
    public static func decodeRGB(path: String, limits: ImageLimits = .decoding) throws -> DecodedImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileFormat(path: path, detail: "cannot read the file")
        }
        if data.isEmpty { throw HasteError.fileFormat(path: path, detail: "empty file") }
        if JPEGImage.isJPEG(data) { return try JPEGImage.decode(data, path: path, limits: limits).rgb() }
        if data.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return try PNGImage.decode(data, path: path, limits: limits) }
        throw HasteError.fileFormat(path: path, detail: "not a JPEG or PNG (unsupported or not an image)")
    }
}
