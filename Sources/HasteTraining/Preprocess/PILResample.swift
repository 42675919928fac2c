import Foundation
import HasteIO
import HasteTensor

/// Pillow's 8-bit resampling (libImaging/Resample.c), reproduced bit for bit (spec/data.md §1.3): separable,
/// horizontal pass then vertical, 8-bit rounded/clipped intermediate, weights in 22-bit fixed point
/// (rounded half away from zero), accumulator seeded with 2^21. A pass whose size does not change is skipped,
/// as Pillow does. torch has no equivalent; the oracle is Pillow itself (Scripts/fixtures/preprocess.py, coco_crop.py).
public enum PILResample {
    public enum Filter { case box, bicubic, lanczos }
    static let precisionBits = 22

    static func support(_ f: Filter) -> Double {
        switch f {
        case .box: return 0.5
        case .bicubic: return 2.0
        case .lanczos: return 3.0
        }
    }

    /// Resample.c `sinc_filter`.
    static func sinc(_ x: Double) -> Double {
        if x == 0 { return 1 }
        let y = x * Double.pi
        return Foundation.sin(y) / y
    }

    static func weight(_ f: Filter, _ x: Double) -> Double {
        switch f {
        case .box: return x > -0.5 && x <= 0.5 ? 1 : 0   // Resample.c box_filter: (-0.5, 0.5]
        case .bicubic:
            let a = -0.5, t = abs(x)
            if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
            if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
            return 0
        case .lanczos: return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0   // Resample.c lanczos_filter: [-3, 3)
        }
    }

    /// Fixed-point taps for every output coordinate: (first input index, taps), taps padded to `ksize`.
    static func coefficients(_ f: Filter, inSize: Int, outSize: Int) -> (bounds: [Int32], counts: [Int32], taps: [Int32], ksize: Int) {
        let scale = Double(inSize) / Double(outSize)
        let filterscale = max(scale, 1)
        let support = support(f) * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds = [Int32](repeating: 0, count: outSize), counts = bounds
        var taps = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(Int(center + support + 0.5), inSize) - xmin
            var ww = 0.0
            for x in 0..<xmax {
                k[x] = weight(f, (Double(x + xmin) - center + 0.5) / filterscale)
                ww += k[x]
            }
            for x in 0..<xmax {
                let w = ww != 0 ? k[x] / ww : k[x]
                let v = w * Double(1 << precisionBits)
                taps[xx * ksize + x] = Int32(w < 0 ? (v - 0.5).rounded(.towardZero) : (v + 0.5).rounded(.towardZero))
            }
            (bounds[xx], counts[xx]) = (Int32(xmin), Int32(xmax))
        }
        return (bounds, counts, taps, ksize)
    }

    @inline(__always) static func clip8(_ v: Int32) -> UInt8 {
        if v >= Int32(1) << (precisionBits + 8) { return 255 }
        if v <= 0 { return 0 }
        return UInt8(v >> Int32(precisionBits))
    }

    /// Resizes an 8-bit HWC image to (width, height) as `PIL.Image.resize((width, height), filter)`.
    public static func resize(_ img: DecodedImage, width: Int, height: Int, filter: Filter) -> DecodedImage {
        var out = img
        if width != img.width { out = horizontal(out, width: width, filter: filter) }
        if height != img.height { out = vertical(out, height: height, filter: filter) }
        return out
    }

    static func horizontal(_ img: DecodedImage, width: Int, filter: Filter) -> DecodedImage {
        let c = img.channels, (bounds, counts, taps, ksize) = coefficients(filter, inSize: img.width, outSize: width)
        var out = [UInt8](repeating: 0, count: width * img.height * c)
        let half = Int32(1) << Int32(precisionBits - 1)
        img.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                taps.withUnsafeBufferPointer { k in
                    for y in 0..<img.height {
                        let row = src.baseAddress! + y * img.width * c, orow = dst.baseAddress! + y * width * c
                        for xx in 0..<width {
                            let x0 = Int(bounds[xx]), n = Int(counts[xx]), kk = k.baseAddress! + xx * ksize
                            for ch in 0..<c {
                                var ss = half
                                for x in 0..<n { ss &+= Int32(row[(x0 + x) * c + ch]) &* kk[x] }
                                orow[xx * c + ch] = clip8(ss)
                            }
                        }
                    }
                }
            }
        }
        return DecodedImage(width: width, height: img.height, channels: c, pixels: out)
    }

    static func vertical(_ img: DecodedImage, height: Int, filter: Filter) -> DecodedImage {
        let c = img.channels, rowLen = img.width * c
        let (bounds, counts, taps, ksize) = coefficients(filter, inSize: img.height, outSize: height)
        var out = [UInt8](repeating: 0, count: rowLen * height)
        var acc = [Int32](repeating: 0, count: rowLen)
        let half = Int32(1) << Int32(precisionBits - 1)
        img.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                acc.withUnsafeMutableBufferPointer { a in
                    for yy in 0..<height {
                        let y0 = Int(bounds[yy]), n = Int(counts[yy])
                        for i in 0..<rowLen { a[i] = half }
                        for y in 0..<n {
                            let w = taps[yy * ksize + y], row = src.baseAddress! + (y0 + y) * rowLen
                            for i in 0..<rowLen { a[i] &+= Int32(row[i]) &* w }
                        }
                        let orow = dst.baseAddress! + yy * rowLen
                        for i in 0..<rowLen { orow[i] = clip8(a[i]) }
                    }
                }
            }
        }
        return DecodedImage(width: img.width, height: height, channels: c, pixels: out)
    }
}

/// ADM's `center_crop_arr` (spec/data.md §1.3): BOX-halve while min side ≥ 2S, BICUBIC to min side S (Python
/// round, ties to even), then the centred S×S crop. Input and output are RGB HWC. The caller bounds the aspect
/// ratio (`Preprocessor.decodeLimits`): the BICUBIC intermediate is S × S·aspect pixels.
public func admCenterCrop(_ image: DecodedImage, size s: Int) -> DecodedImage {
    let r = Preprocessor.decodeLimits.maxAspectRatio ?? Int.max
    require(Preprocessor.decodeLimits.violation(width: image.width, height: image.height) == nil && min(image.width, image.height) >= 1,
            "admCenterCrop: \(image.width)×\(image.height) is empty or over \(r):1 (decode with Preprocessor.decodeLimits)")
    var img = image
    while min(img.width, img.height) >= 2 * s {
        img = PILResample.resize(img, width: img.width / 2, height: img.height / 2, filter: .box)
    }
    let scale = Double(s) / Double(min(img.width, img.height))
    let (w, h) = (Int((Double(img.width) * scale).rounded(.toNearestOrEven)), Int((Double(img.height) * scale).rounded(.toNearestOrEven)))
    img = PILResample.resize(img, width: w, height: h, filter: .bicubic)
    let top = (h - s) / 2, left = (w - s) / 2, c = img.channels
    var out = [UInt8](repeating: 0, count: s * s * c)
    img.pixels.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for y in 0..<s {
                let from = src.baseAddress! + ((top + y) * w + left) * c
                (dst.baseAddress! + y * s * c).update(from: from, count: s * c)
            }
        }
    }
    return DecodedImage(width: s, height: s, channels: c, pixels: out)
}
