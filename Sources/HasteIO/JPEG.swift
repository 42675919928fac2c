import CJPEGShim
import Foundation
import HasteTensor

/// An 8-bit decoded image, row-major HWC.
public struct DecodedImage: Sendable {
    public var width: Int, height: Int, channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        (self.width, self.height, self.channels, self.pixels) = (width, height, channels, pixels)
    }

    /// Pillow's `convert("RGB")` from L (replicate) or RGBA/LA (drop alpha, no compositing).
    public func rgb() -> DecodedImage {
        if channels == 3 { return self }
        let n = width * height, c = channels
        var out = [UInt8](repeating: 0, count: n * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<n {
                    let grey = c < 3
                    dst[3 * i] = src[c * i]
                    dst[3 * i + 1] = src[c * i + (grey ? 0 : 1)]
                    dst[3 * i + 2] = src[c * i + (grey ? 0 : 2)]
                }
            }
        }
        return DecodedImage(width: width, height: height, channels: 3, pixels: out)
    }

    /// The RGB pixels as three planes (CHW, as tensors hold images) written to `out` (3·H·W bytes).
    public func copyCHW(to out: UnsafeMutablePointer<UInt8>) {
        require(channels == 3, "DecodedImage.copyCHW: \(channels) channels (call rgb() first)")
        let plane = width * height
        pixels.withUnsafeBufferPointer { src in
            for p in 0..<plane {
                out[p] = src[3 * p]
                out[plane + p] = src[3 * p + 1]
                out[2 * plane + p] = src[3 * p + 2]
            }
        }
    }
}

/// JPEG through libjpeg-turbo (C shim: libjpeg's errors longjmp). Pillow semantics: grey stays grey, CMYK/YCCK
/// become RGB with Pillow's inverted-Adobe rule, a truncated file is an error, and EXIF orientation is NOT
/// applied (PIL.Image.open does not rotate; the reference never calls exif_transpose).
public enum JPEGImage {
    public static func isJPEG(_ data: Data) -> Bool { data.count >= 3 && data[data.startIndex] == 0xFF && data[data.startIndex + 1] == 0xD8 && data[data.startIndex + 2] == 0xFF }

    /// Decodes to 8-bit grey or RGB; a header over `limits` is refused before anything image-sized is allocated.
    public static func decode(_ data: Data, path: String = "<memory>", limits: ImageLimits = .decoding) throws -> DecodedImage {
        var pixels: UnsafeMutablePointer<UInt8>?
        var (w, h, c, cs): (Int32, Int32, Int32, Int32) = (0, 0, 0, 0)
        var err = [CChar](repeating: 0, count: 256)
        let errCount = err.count
        let rc = data.withUnsafeBytes { raw in
            haste_jpeg_decode(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, limits.cPixels, limits.cAspect,
                              &pixels, &w, &h, &c, &cs, &err, errCount)
        }
        if rc == 3, let why = limits.violation(width: Int(w), height: Int(h)) {
            throw HasteError.fileFormat(path: path, detail: "JPEG \(why)")
        }
        guard rc == 0, let p = pixels else {
            let why = MappedFile.message(err)
            throw HasteError.fileFormat(path: path, detail: "cannot decode JPEG: \(why)")
        }
        defer { haste_jpeg_free(p) }
        let n = Int(w) * Int(h) * Int(c)
        return DecodedImage(width: Int(w), height: Int(h), channels: Int(c), pixels: Array(UnsafeBufferPointer(start: p, count: n)))
    }
}
