import CLibPNG
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
        if data.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return try decodePNG(data, path: path) }
        throw HasteError.fileFormat(path: path, detail: "not a JPEG or PNG (unsupported or not an image)")
    }

    /// PNG via libpng's simplified API. 8-bit files are read as RGBA and the alpha dropped (Pillow's
    /// convert("RGB") does not composite; palette and grey expand). 16-bit files are read raw (libpng treats
    /// them as linear, so no gamma change unless a gAMA chunk says otherwise) and reduced as Pillow does:
    /// colour keeps the high byte (rawmode "RGB;16B"), grey ("I;16") saturates at 255.
    static func decodePNG(_ data: Data, path: String) throws -> DecodedImage {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        let began = data.withUnsafeBytes { png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }
        guard began != 0 else { throw HasteError.fileFormat(path: path, detail: "cannot read PNG: \(message(image))") }
        defer { png_image_free(&image) }
        let (w, h) = (Int(image.width), Int(image.height))
        let linear = image.format & 4 != 0, colour = image.format & 2 != 0   // PNG_FORMAT_FLAG_LINEAR, _COLOR
        if !linear {
            image.format = 3   // RGBA, 8-bit sRGB: not premultiplied
            var px = [UInt8](repeating: 0, count: w * h * 4)
            let ok = data.withUnsafeBytes { _ in px.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, Int32(w * 4), nil) } }
            guard ok != 0 else { throw HasteError.fileFormat(path: path, detail: "cannot decode PNG: \(message(image))") }
            return DecodedImage(width: w, height: h, channels: 4, pixels: px).rgb()
        }
        let c = colour ? 3 : 1
        image.format = colour ? 4 | 2 : 4   // LINEAR (| COLOR), no alpha
        var raw = [UInt16](repeating: 0, count: w * h * c)
        let ok = raw.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, Int32(w * c), nil) }
        guard ok != 0 else { throw HasteError.fileFormat(path: path, detail: "cannot decode PNG: \(message(image))") }
        let px = raw.map { colour ? UInt8($0 >> 8) : UInt8(min($0, 255)) }
        return DecodedImage(width: w, height: h, channels: c, pixels: px).rgb()
    }

    static func message(_ image: png_image) -> String {
        withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
