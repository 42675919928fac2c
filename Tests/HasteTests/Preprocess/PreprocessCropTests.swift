import Foundation
import Testing
@testable import HasteIO
@testable import HasteTensor
@testable import HasteTraining

/// The photos fetched by Scripts/fetch_test_images.sh (nil when offline: those tests skip).
func testPhotos() -> String? {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../.cache/test-images").standardized.path
    return FileManager.default.fileExists(atPath: "\(dir)/done") ? dir : nil
}

/// Largest absolute difference between two uint8 buffers (Int.max when sizes differ).
func maxDiff(_ a: [UInt8], _ b: [UInt8]) -> Int {
    guard a.count == b.count else { return Int.max }
    return zip(a, b).map { abs(Int($0) - Int($1)) }.max() ?? 0
}

/// Pillow 13's ADM crops (Scripts/fixtures/preprocess.py) of real photographs: the fixed-point path is
/// reproduced, so the tolerance is 1 grey level (the bound); in practice the crops are bit-identical.
@Test(.enabled(if: testPhotos() != nil, "needs Scripts/fetch_test_images.sh"))
func admCropMatchesPillow() throws {
    let f = try Fixture("preprocess_pil.safetensors"), dir = testPhotos()!
    for (name, size) in [("chelsea.png", 64), ("coffee.png", 64), ("astronaut.png", 64), ("camera.png", 64),
                         ("rocket.jpg", 64), ("hubble_deep_field.jpg", 64), ("rocket.jpg", 256)] {
        let img = try ImageDecoder.decodeRGB(path: "\(dir)/\(name)")
        let crop = admCenterCrop(img, size: size)
        let stem = (name as NSString).deletingPathExtension
        let want = f["\(stem).crop\(size)"].scalars(as: UInt8.self)
        let d = maxDiff(crop.pixels, want)
        #expect(d <= 1, "\(name) at \(size): max difference \(d) grey levels")
    }
}

/// PIL's `Image.open(f).convert("RGB")` on awkward files: Adobe-inverted CMYK JPEG, grey JPEG, an EXIF
/// orientation-6 JPEG (not rotated, as PIL's open does not rotate), palette with transparency, LA, RGBA
/// (alpha dropped, not composited), 16-bit grey (saturated at 255 as Pillow's I;16 → RGB), and hand-made PNGs
/// that libpng's simplified API would alter: gAMA 1/2.2 and 1.0 (Pillow ignores gamma), 16-bit RGB/RGBA/LA
/// (high byte), 16-bit grey with tRNS, 2-bit grey, Adam7 interlacing. PNGs must match exactly; JPEGs use the
/// same libjpeg-turbo DCT (islow) and upsampling, tolerance 1 level to allow a different libjpeg-turbo build.
@Test func awkwardInputsDecodeAsPillow() throws {
    let f = try Fixture("preprocess_pil.safetensors")
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haste-awkward-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for key in ["cmyk_jpg", "grey_jpg", "exif_jpg", "palette_png", "la_png", "rgba_png", "grey16_png",
                "rgb16_gama_png", "rgba16_png", "la16_png", "grey16_trns_png", "rgb8_gamma1_png", "rgba8_gamma1_png",
                "grey2_png", "interlaced_png"] {
        let path = "\(dir)/\(key)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(f["\(key).bytes"].scalars(as: UInt8.self)))
        let img = try ImageDecoder.decodeRGB(path: path)
        let want = f["\(key).rgb"]
        #expect([img.height, img.width, img.channels] == want.shape, "\(key): \(img.width)×\(img.height) vs \(want.shape)")
        let d = maxDiff(img.pixels, want.scalars(as: UInt8.self))
        #expect(d <= (key.hasSuffix("_jpg") ? 1 : 0), "\(key): max difference \(d) grey levels")
    }
}

/// Bad inputs are errors with a reason, never crashes: empty, text with an image extension, truncated JPEG and
/// PNG, a PNG with a flipped byte, a bare PNG signature.
@Test func badInputsAreErrors() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haste-bad-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    _ = FileManager.default.createFile(atPath: "\(dir)/empty.jpg", contents: Data())
    _ = FileManager.default.createFile(atPath: "\(dir)/text.jpg", contents: Data("hello".utf8))
    let jpg = Data(try Fixture("preprocess_pil.safetensors")["exif_jpg.bytes"].scalars(as: UInt8.self))
    _ = FileManager.default.createFile(atPath: "\(dir)/cut.jpg", contents: jpg.prefix(jpg.count / 2))
    _ = FileManager.default.createFile(atPath: "\(dir)/junk.jpg", contents: jpg.prefix(40) + Data(repeating: 7, count: 300))
    let png = Data(try Fixture("preprocess_pil.safetensors")["rgb16_gama_png.bytes"].scalars(as: UInt8.self))
    _ = FileManager.default.createFile(atPath: "\(dir)/cut.png", contents: png.prefix(png.count - 30))
    var flipped = png
    flipped[flipped.startIndex + 60] ^= 0x55   // inside IDAT: zlib or CRC error
    _ = FileManager.default.createFile(atPath: "\(dir)/flipped.png", contents: flipped)
    _ = FileManager.default.createFile(atPath: "\(dir)/sig.png", contents: png.prefix(8))
    for name in ["empty.jpg", "text.jpg", "cut.jpg", "junk.jpg", "cut.png", "flipped.png", "sig.png"] {
        #expect(throws: HasteError.self, "\(name) should not decode") { _ = try ImageDecoder.decodeRGB(path: "\(dir)/\(name)") }
    }
}

/// Pillow's coefficient rules on hand-checkable cases: BOX halving averages pairs, an unchanged size is a copy.
@Test func pilResampleSmallCases() {
    let img = DecodedImage(width: 4, height: 1, channels: 1, pixels: [0, 10, 20, 31])
    #expect(PILResample.resize(img, width: 2, height: 1, filter: .box).pixels == [5, 26])   // (20+31)/2 = 25.5 → 26
    #expect(PILResample.resize(img, width: 4, height: 1, filter: .bicubic).pixels == img.pixels)
}

/// PNG writing: level 0 (the preprocessing default, spec/data.md §1.1) stores rows unfiltered and uncompressed, so
/// the file is the raw rows plus fixed overhead; every level reads back bit-exact.
@Test func pngWriteLevelsRoundTrip() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haste-pngw-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (h, w) = (37, 29)
    let px: [UInt8] = (0..<(h * w * 3)).map { (i: Int) -> UInt8 in UInt8((i * 7 + i / 91) % 256) }
    for level in [0, 1, 6, 9] {
        let path = "\(dir)/l\(level).png"
        try PNGImage.write(px, height: h, width: w, channels: 3, to: path, compressionLevel: level)
        let back = try PNGImage.read(path)
        #expect(back.height == h && back.width == w && back.pixels == px, "level \(level)")
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        let raw = h * (1 + w * 3)
        if level == 0 { #expect(size >= raw && size < raw + 120, "level 0: \(size) bytes for \(raw) raw") }
    }
    #expect(throws: HasteError.self) { try PNGImage.write(px, height: h, width: w, channels: 3, to: "\(dir)/no/such/dir.png") }
}
