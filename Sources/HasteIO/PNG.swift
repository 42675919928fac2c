import CLibPNG
import Foundation
import HasteTensor

/// PNG through libpng's simplified API (no setjmp): 8-bit grey, RGB or RGBA, row-major HWC bytes.
public enum PNGImage {
    /// png.h's PNG_FORMAT_* (composite macros Swift does not import): COLOR = 2, ALPHA = 1.
    static func format(_ channels: Int) -> UInt32 { channels == 1 ? 0 : channels == 4 ? 3 : 2 }

    /// Decodes to 8-bit pixels with `channels` 1 (grey), 3 (RGB) or 4 (RGBA); libpng converts palette,
    /// 16-bit and grey inputs. Returns (height, width, bytes).
    public static func read(_ path: String, channels: Int = 3) throws -> (height: Int, width: Int, pixels: [UInt8]) {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        guard png_image_begin_read_from_file(&image, path) != 0 else {
            let why = withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw HasteError.fileFormat(path: path, detail: "cannot read PNG: \(why)")
        }
        defer { png_image_free(&image) }
        image.format = format(channels)
        let (w, h) = (Int(image.width), Int(image.height))
        var pixels = [UInt8](repeating: 0, count: w * h * channels)
        let ok = pixels.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, Int32(w * channels), nil) }
        guard ok != 0 else {
            let why = withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw HasteError.fileFormat(path: path, detail: "cannot decode PNG: \(why)")
        }
        return (h, w, pixels)
    }

    /// Writes 8-bit pixels (HWC, channels 1/3/4) atomically (temporary file, then rename).
    public static func write(_ pixels: [UInt8], height: Int, width: Int, channels: Int, to path: String) throws {
        require(pixels.count == height * width * channels && [1, 3, 4].contains(channels),
                     "PNG write: \(pixels.count) bytes for \(height)×\(width)×\(channels)")
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = format(channels)
        let tmp = path + ".tmp-\(getpid())"
        let ok = pixels.withUnsafeBytes { png_image_write_to_file(&image, tmp, 0, $0.baseAddress, Int32(width * channels), nil) }
        guard ok != 0 else {
            let why = withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            try? FileManager.default.removeItem(atPath: tmp)
            throw HasteError.fileFormat(path: path, detail: "cannot write PNG: \(why) (does the folder exist?)")
        }
        guard rename(tmp, path) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot move \(tmp) into place (errno \(errno))")
        }
    }
}
