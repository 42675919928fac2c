import Foundation
import HasteTensor

/// Decodes image files the way the reference's `PIL.Image.open(f).convert("RGB")` sees them, sniffing the format
/// from the first bytes (not the extension). Only JPEG and PNG are decoded; anything else is an error the
/// preprocessor reports and skips.
public enum ImageDecoder {
    public static func decodeRGB(path: String) throws -> DecodedImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileFormat(path: path, detail: "cannot read the file")
        }
        if data.isEmpty { throw HasteError.fileFormat(path: path, detail: "empty file") }
        if JPEGImage.isJPEG(data) { return try JPEGImage.decode(data, path: path).rgb() }
        if data.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return try PNGImage.decode(data, path: path) }
        throw HasteError.fileFormat(path: path, detail: "not a JPEG or PNG (unsupported or not an image)")
    }
}
