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

    /// Decodes to 8-bit RGB; a header over `limits` is refused before anything image-sized is allocated.
    public static func decode(_ data: Data, path: String, limits: ImageLimits = .decoding) throws -> DecodedImage {
        var (w, h, c, depth): (UInt32, UInt32, Int32, Int32) = (0, 0, 0, 0)
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var err = [CChar](repeating: 0, count: 256)
        let errCount = err.count
        let rc = data.withUnsafeBytes { raw in
            haste_png_decode(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, limits.cPixels, limits.cAspect,
                             &w, &h, &c, &depth, &buffer, &err, errCount)
        }
        if rc == 3, let why = limits.violation(width: Int(w), height: Int(h)) {
            throw HasteError.fileFormat(path: path, detail: "PNG \(why)")
        }
        guard rc == 0, let buffer else {
            throw HasteError.fileFormat(path: path, detail: explain(MappedFile.message(err)))
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

    /// libpng's message (the shim captures it) as what is wrong with the file and what to do about it.
    static func explain(_ message: String) -> String {
        let m = message.lowercased(), refetch = "fetch or export it again"
        if m.contains("truncated") || m.contains("not enough image data") || m.contains("read error") {
            return "truncated PNG: the file ends before its image data does (an interrupted download or copy?); \(refetch) (libpng: \(message))"
        }
        if m.contains("crc error") {
            let chunk = message.contains(":") ? " in the \(message.split(separator: ":")[0]) chunk" : ""
            return "corrupt PNG: bad CRC\(chunk) (bytes changed on disk or in transfer); \(refetch) (libpng: \(message))"
        }
        // zlib's inflate messages, and libpng's own for its zstream (pngrutil.c png_zstream_error).
        let zlib = ["incorrect header check", "incorrect data check", "invalid window size", "invalid block type",
                    "invalid stored block", "invalid code lengths", "invalid bit length", "invalid literal", "invalid distance",
                    "too many length or distance symbols", "unknown compression method", "lz stream", "zstream",
                    "extra compressed data", "decompression error"]
        if zlib.contains(where: m.contains) {
            return "corrupt PNG: bad zlib stream in the image data; \(refetch) (libpng: \(message))"
        }
        if m == "not a png signature" { return "not a PNG: the first 8 bytes are not the PNG signature" }
        return "cannot decode PNG: \(message)"
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
        let tmp = AtomicFile.temporaryPath(for: path)
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
