import HasteIO
import HasteTensor

/// U-ViT's `center_crop` for MS-COCO (spec/data.md §2.1 step 1): the centred min-side square, rows
/// [(H − c) div 2, (H + c) div 2) and likewise columns, then PIL LANCZOS to size × size (Pillow's 8-bit fixed-point
/// path, `PILResample`). Input and output are RGB HWC.
public func cocoCenterCrop(_ image: DecodedImage, size s: Int) -> DecodedImage {
    require(image.channels == 3 && image.width >= 1 && image.height >= 1, "cocoCenterCrop: \(image.width)×\(image.height)×\(image.channels)")
    let c = min(image.width, image.height), top = (image.height - c) / 2, left = (image.width - c) / 2
    var square = [UInt8](repeating: 0, count: c * c * 3)
    image.pixels.withUnsafeBufferPointer { src in
        square.withUnsafeMutableBufferPointer { dst in
            for y in 0..<c {
                (dst.baseAddress! + y * c * 3).update(from: src.baseAddress! + ((top + y) * image.width + left) * 3, count: c * 3)
            }
        }
    }
    return PILResample.resize(DecodedImage(width: c, height: c, channels: 3, pixels: square), width: s, height: s, filter: .lanczos)
}

/// What the reference's `{idx}.png` holds (spec/data.md §2.1 step 2): the crop p as x = p/127.5 − 1 (float32) saved
/// by torchvision's `save_image`, which expects [0, 1]: clamp(x·255 + 0.5, 0, 255) truncated to uint8, i.e.
/// max(0, 2p − 255). `--coco-legacy-png` reproduces it; the default stores p itself.
public func cocoLegacyPNGPixels(_ pixels: [UInt8]) -> [UInt8] {
    let table: [UInt8] = (0..<256).map { p in
        let x = Float(p) / 127.5 - 1
        return UInt8(Swift.min(Swift.max(x * 255 + 0.5, 0), 255))
    }
    return pixels.map { table[Int($0)] }
}
