import Foundation
import Testing
@testable import HasteIO
@testable import HasteTensor
@testable import HasteTraining

/// Hand-written hostile files (issue #14): no PyTorch, no downloads.
enum HostileImages {
    /// A baseline JPEG up to its SOS marker (one grey component, flat quantisation, no Huffman tables: libjpeg
    /// supplies the standard ones) plus 380 zero bytes of scan data: 474 bytes that declare any size.
    static func jpegHeader(width: Int, height: Int) -> Data {
        func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
        var b: [UInt8] = [0xFF, 0xD8]                                             // SOI
        b += [0xFF, 0xDB] + be16(67) + [0] + [UInt8](repeating: 1, count: 64)     // DQT: table 0
        b += [0xFF, 0xC0] + be16(11) + [8] + be16(height) + be16(width) + [1, 1, 0x11, 0]   // SOF0, 1 component
        b += [0xFF, 0xDA] + be16(8) + [1, 1, 0x00, 0, 63, 0]                       // SOS
        return Data(b + [UInt8](repeating: 0, count: 380))
    }

    /// One PNG chunk: length, type, data, CRC-32 over type and data.
    static func pngChunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        let crc = body.withUnsafeBytes { FileSpan.crc32($0.baseAddress!, $0.count) }
        func be32(_ v: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }
        return be32(UInt32(data.count)) + body + be32(crc)
    }

    /// A PNG whose IHDR declares width × height 8-bit RGB, then one IDAT holding an empty zlib stream (no pixels).
    static func pngHeader(width: Int, height: Int) -> Data {
        func be32(_ v: Int) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }
        let ihdr = be32(width) + be32(height) + [8, 2, 0, 0, 0]
        return Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + pngChunk("IHDR", ihdr)
                    + pngChunk("IDAT", [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]) + pngChunk("IEND", []))
    }

    /// A valid 12×9 RGB PNG written by libpng (zlib level 6).
    static func smallPNG(_ dir: String) throws -> Data {
        let px = (0..<(12 * 9 * 3)).map { UInt8(($0 * 37) % 256) }
        try PNGImage.write(px, height: 9, width: 12, channels: 3, to: "\(dir)/small.png")
        return try Data(contentsOf: URL(fileURLWithPath: "\(dir)/small.png"))
    }
}

/// The message of the HasteError `body` throws ("" if it does not throw one).
func errorText(_ body: () throws -> Void) -> String {
    do { try body(); return "" } catch { return "\(error)" }
}

/// Decompression bombs are refused from the header by both decoders: a 474-byte JPEG declaring 30000×30000 and a
/// PNG header declaring the same are over Pillow's pixel cap; 16×65500 (JPEG) and 1×65500 (PNG) are over the
/// preprocessor's 64:1 aspect limit, whose boundary (1×64 kept, 1×65 refused) is exact.
@Test func imageBombsAreRefusedFromTheHeader() throws {
    try withTemporaryDirectory { dir in
        let bomb = HostileImages.jpegHeader(width: 30000, height: 30000)
        #expect(bomb.count == 474)
        let jpegBomb = errorText { _ = try JPEGImage.decode(bomb, path: "bomb.jpg") }
        #expect(jpegBomb.contains("30000×30000") && jpegBomb.contains("decompression-bomb limit of 178956970"), "\(jpegBomb)")
        let pngBomb = errorText { _ = try PNGImage.decode(HostileImages.pngHeader(width: 30000, height: 30000), path: "bomb.png") }
        #expect(pngBomb.contains("30000×30000") && pngBomb.contains("decompression-bomb"), "\(pngBomb)")

        let limits = Preprocessor.decodeLimits
        let tall = HostileImages.jpegHeader(width: 16, height: 65500)
        let tallText = errorText { _ = try JPEGImage.decode(tall, path: "tall.jpg", limits: limits) }
        #expect(tallText.contains("16×65500 is over 64:1"), "\(tallText)")
        // Without the aspect limit the same file reaches the decoder, which finds the scan data cut short.
        let plain = errorText { _ = try JPEGImage.decode(tall, path: "tall.jpg") }
        #expect(plain.contains("Premature end of JPEG file"), "\(plain)")

        for (h, refused) in [(64, false), (65, true), (65500, true)] {
            try PNGImage.write([UInt8](repeating: 200, count: h * 3), height: h, width: 1, channels: 3, to: "\(dir)/thin\(h).png")
            let text = errorText { _ = try ImageDecoder.decodeRGB(path: "\(dir)/thin\(h).png", limits: limits) }
            #expect(text.contains("1×\(h) is over 64:1") == refused, "1×\(h): \(text)")
            #expect(try ImageDecoder.decodeRGB(path: "\(dir)/thin\(h).png").height == h, "no aspect limit by default")
        }
        let edge = try ImageDecoder.decodeRGB(path: "\(dir)/thin64.png", limits: limits)
        #expect(admCenterCrop(edge, size: 256).pixels == [UInt8](repeating: 200, count: 256 * 256 * 3))
    }
}

/// libpng's failures say what is wrong, one class each: a file cut inside IDAT is truncated, a flipped CRC byte
/// is a bad CRC naming the chunk, IDAT bytes changed (CRC recomputed, so only zlib can notice) are a bad zlib
/// stream. None of them is "out of memory" (what every PNG error used to say).
@Test func pngErrorsSayWhatIsWrong() throws {
    try withTemporaryDirectory { dir in
        let good = try HostileImages.smallPNG(dir)
        let bytes = [UInt8](good)
        let idat = try #require((0..<bytes.count - 4).first { bytes[$0..<$0 + 4].elementsEqual("IDAT".utf8) })
        let length = bytes[(idat - 4)..<idat].reduce(0) { $0 << 8 | Int($1) }
        let zlib = Array(bytes[(idat + 4)..<(idat + 4 + length)])
        var badZlib = zlib
        badZlib[0] ^= 0x01                                       // CMF byte: the zlib header check fails
        let rechunked = Array(bytes[..<(idat - 4)]) + HostileImages.pngChunk("IDAT", badZlib) + Array(bytes[(idat + 8 + length)...])
        var badCRC = bytes
        badCRC[29] ^= 0x55                                       // last byte of IHDR's CRC
        let cases: [(String, [UInt8], String)] = [
            ("truncated", Array(bytes[..<(idat + 4 + length / 2)]), "truncated PNG"),
            ("crc", badCRC, "bad CRC in the IHDR chunk"),
            ("zlib", rechunked, "bad zlib stream in the image data"),
        ]
        for (name, data, phrase) in cases {
            let text = errorText { _ = try PNGImage.decode(Data(data), path: "\(name).png") }
            #expect(text.hasPrefix("\(name).png: ") && text.contains(phrase) && !text.contains("out of memory"), "\(name): \(text)")
        }
        #expect(try PNGImage.decode(good, path: "small.png").width == 12)
    }
}

/// `haste preprocess` skips every hostile file with its reason in preprocess-report.tsv and converts the rest.
@Test func preprocessReportsAndSkipsHostileImages() throws {
    try withTemporaryDirectory { dir in
        let fm = FileManager.default
        for c in ["a", "b"] { try fm.createDirectory(atPath: "\(dir)/src/\(c)", withIntermediateDirectories: true) }
        try PNGImage.write([UInt8](repeating: 50, count: 40 * 30 * 3), height: 30, width: 40, channels: 3, to: "\(dir)/src/a/ok.png")
        try PNGImage.write([UInt8](repeating: 50, count: 65500 * 3), height: 65500, width: 1, channels: 3, to: "\(dir)/src/a/thin.png")
        _ = fm.createFile(atPath: "\(dir)/src/b/bomb.jpg", contents: HostileImages.jpegHeader(width: 30000, height: 30000))
        _ = fm.createFile(atPath: "\(dir)/src/b/tall.jpg", contents: HostileImages.jpegHeader(width: 16, height: 65500))
        var o = PreprocessOptions()
        (o.source, o.dest, o.stage, o.workers, o.progress) = ("\(dir)/src", "\(dir)/out", .convert, 2, false)
        let s = try Preprocessor(options: o, vae: nil).run()
        #expect(s.found == 4 && s.converted == 1 && s.failed == 3)
        let report = try String(contentsOfFile: "\(dir)/out/preprocess-report.tsv", encoding: .utf8)
        for (file, why) in [("a/thin.png", "1×65500 is over 64:1"), ("b/bomb.jpg", "decompression-bomb"), ("b/tall.jpg", "16×65500 is over 64:1")] {
            #expect(report.contains("\(dir)/src/\(file)\t") && report.contains(why), "\(file): \(report)")
        }
    }
}

/// Labels come from sorted class-folder names: a folder without images is an error naming it (the reference
/// would silently renumber every later class), unless `<source>/dataset.json` gives the labels; a tree
/// without any image is an error naming the folder.
@Test func emptyClassFoldersAndEmptyTreesAreErrors() throws {
    try withTemporaryDirectory { dir in
        let fm = FileManager.default
        for c in ["n0", "n1", "n2"] { try fm.createDirectory(atPath: "\(dir)/src/\(c)", withIntermediateDirectories: true) }
        try fm.createDirectory(atPath: "\(dir)/src/n1/sub", withIntermediateDirectories: true)
        _ = fm.createFile(atPath: "\(dir)/src/n1/sub/notes.txt", contents: Data("not an image".utf8))
        for c in ["n0", "n2"] {
            try PNGImage.write([UInt8](repeating: 9, count: 20 * 20 * 3), height: 20, width: 20, channels: 3, to: "\(dir)/src/\(c)/x.png")
        }
        var o = PreprocessOptions()
        (o.source, o.dest, o.stage, o.progress) = ("\(dir)/src", "\(dir)/out", .convert, false)
        expectFileError("\(dir)/src", "class folders without any image (1 of 3): n1.", "renumbered") {
            _ = try Preprocessor(options: o, vae: nil).run()
        }
        #expect(!fm.fileExists(atPath: "\(dir)/out/images/dataset.json"), "nothing converted")

        try #"{"labels": [["n0/x.png", 0], ["n2/x.png", 2]]}"#.write(toFile: "\(dir)/src/dataset.json", atomically: true, encoding: .utf8)
        _ = try Preprocessor(options: o, vae: nil).run()
        let json = try String(contentsOfFile: "\(dir)/out/images/dataset.json", encoding: .utf8)
        #expect(json == #"{"labels": [["00000/img00000000.png", 0], ["00000/img00000001.png", 2]]}"#)

        try fm.createDirectory(atPath: "\(dir)/bare/n0", withIntermediateDirectories: true)
        _ = fm.createFile(atPath: "\(dir)/bare/n0/readme.txt", contents: Data())
        o.source = "\(dir)/bare"
        expectFileError("\(dir)/bare", "no images in this folder or below", "--source") { _ = try Preprocessor(options: o, vae: nil).run() }
    }
}
