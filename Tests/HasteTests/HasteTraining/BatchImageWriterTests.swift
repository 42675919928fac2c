import Foundation
import Testing
@testable import HasteIO
import HasteTensor
@testable import HasteTraining

/// `haste generate`'s background PNG writer: what it writes reads back as given, and a failed write is not lost:
/// the next `submit` (the run's next batch) throws it, naming the file, and nothing of a later batch is written.
@Test func batchImageWriterWritesInTheBackgroundAndReportsFailures() throws {
    let dir = temporaryDirectory()
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let (h, w) = (5, 7), count = 3
    let pixels = (0..<(count * h * w * 3)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
    let writer = BatchImageWriter()
    let paths = (0..<count).map { "\(dir)/\(String(format: "%06d", $0)).png" }
    try writer.submit(pixels, height: h, width: w, paths: paths)
    try writer.finish()
    for (k, p) in paths.enumerated() {
        let img = try PNGImage.read(p)
        #expect(img.height == h && img.width == w && img.channels == 3)
        #expect(img.pixels == Array(pixels[(k * h * w * 3)..<((k + 1) * h * w * 3)]), "\(p)")
    }

    let missing = "\(dir)/no-such-folder/000003.png"
    try writer.submit(pixels, height: h, width: w, paths: [paths[0] + ".a.png", missing, paths[0] + ".b.png"])
    let later = "\(dir)/000009.png"
    #expect(throws: HasteError.self) { try writer.submit(Array(pixels.prefix(h * w * 3)), height: h, width: w, paths: [later]) }
    #expect(!FileManager.default.fileExists(atPath: later), "the batch after a failed one is not started")
    do { try writer.submit(Array(pixels.prefix(h * w * 3)), height: h, width: w, paths: [later]); try writer.finish() }
    catch { Issue.record("the failure was reported once, the writer goes on: \(error)") }
    #expect(FileManager.default.fileExists(atPath: later))
    #expect(FileManager.default.fileExists(atPath: paths[0] + ".a.png") && FileManager.default.fileExists(atPath: paths[0] + ".b.png"))

    try writer.submit(pixels, height: h, width: w, paths: [paths[0] + ".c.png", missing, paths[0] + ".d.png"])
    do { try writer.finish(); Issue.record("finish did not report the failed write") } catch {
        #expect("\(error)".contains(missing), "the error names the file: \(error)")
    }
}
