import CPNGShim
import Foundation
import HasteTensor

/// PNG through libpng's full API (C shim). Decoding follows Pillow's `Image.open(f).convert("RGB")`: no gamma or
/// colour management (gAMA, sRGB, iCCP ignored), alpha and tRNS dropped without compositing, palette and 1/2/4-bit
/// grey expanded, 16-bit colour and grey+alpha reduced to the high byte (rawmodes "RGB;16B", "LA;16B"), 16-bit grey
/// ("I;16") saturated at 255.
public enum PNGImage {
    /// zlib level of written files unless a caller says otherwise: Pillow's default (6).
    public static let defaultCompressionLevel = 6

    public static func decode(_ data: Data, path: String) throws -> DecodedImage {
        var (w, h, c, depth): (UInt32, UInt32, Int32, Int32) = (0, 0, 0, 0)
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var err = [CChar](repeating: 0, count: 256)
        let rc = data.withUnsafeBytes { raw in
            haste_png_decode(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &w, &h, &c, &depth, &buffer, &err, err.count)
        }
        guard rc == 0, let buffer else {
            throw HasteError.fileFormat(path: path, detail: "cannot decode PNG: \(MappedFile.message(err))")
        }
        defer { haste_png_free(buffer) }
        let (width, height, channels) = (Int(w), Int(h), Int(c)), n = width * height * channels
        var pixels = [UInt8](repeating: 0, count: n)
        if depth == 8 {
            pixels.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: buffer, count: n) }
        } else {
            let wide = UnsafeRawPointer(buffer).assumingMemoryBound(to: UInt16.self)
            let saturate = channels == 1
            pixels.withUnsafeMutableBufferPointer { out in
                for i in 0..<n { out[i] = saturate ? UInt8(Swift.min(wide[i], 255)) : UInt8(wide[i] >> 8) }
            }
        }
        return DecodedImage(width: width, height: height, channels: channels, pixels: pixels).rgb()
    }

    /// Reads a PNG file as 8-bit RGB (see `decode`).
    public static func read(_ path: String) throws -> DecodedImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "the PNG file cannot be read")
        }
        return try decode(data, path: path)
    }

    /// Writes 8-bit pixels (HWC, channels 1/3/4) atomically (temporary file, then rename) with zlib level 0–9;
    /// level 0 is what the reference preprocessing writes (stored, unfiltered: fastest to write and to read).
    public static func write(_ pixels: [UInt8], height: Int, width: Int, channels: Int, to path: String,
                             compressionLevel: Int = defaultCompressionLevel) throws {
        require(pixels.count == height * width * channels && [1, 3, 4].contains(channels),
                "PNG write: \(pixels.count) bytes for \(height)×\(width)×\(channels)")
        require((0...9).contains(compressionLevel), "PNG write: zlib level \(compressionLevel) is not 0–9")
        let tmp = path + ".tmp-\(getpid())"
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBufferPointer {
            haste_png_write(tmp, $0.baseAddress, UInt32(width), UInt32(height), Int32(channels), Int32(compressionLevel), &err, err.count)
        }
        guard rc == 0 else {
            try? FileManager.default.removeItem(atPath: tmp)
            throw HasteError.fileFormat(path: path, detail: "cannot write PNG: \(MappedFile.message(err)) (does the folder exist and have space?)")
        }
        guard rename(tmp, path) == 0 else {
            try? FileManager.default.removeItem(atPath: tmp)
            throw HasteError.fileFormat(path: path, detail: "cannot move \(tmp) into place (errno \(errno))")
        }
    }
}
