import Foundation
import Testing
@testable import HasteIO
import HasteTensor
@testable import HasteTraining

/// The ADM batch from a folder of PNGs, decoded a window at a time in parallel: the images in index order, across
/// several windows (4 per thread), and the first bad file in index order is the one the error names.
@Test func samplePackerKeepsIndexOrderAndNamesTheFirstBadFile() throws {
    let dir = temporaryDirectory()
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let count = 4 * max(1, Parallel.threads) * 2 + 3, (h, w) = (3, 4), n = h * w * 3
    let pixels = (0..<(count * n)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 / n) }
    let paths = (0..<count).map { "\(dir)/\(String(format: "%06d", $0)).png" }
    try BatchImageWriter.write(pixels, height: h, width: w, paths: paths)
    try SamplePacker.pack(folder: dir, count: count, to: dir + "/batch.npz")
    let arr = try #require(try NpzArchive.read(dir + "/batch.npz")["arr_0"])
    #expect(arr.shape == [count, h, w, 3])
    #expect(arr.scalars(as: UInt8.self) == pixels)

    let bad = count - 5, corrupt = count - 2
    try PNGImage.write([UInt8](repeating: 7, count: 2 * w * 3), height: 2, width: w, channels: 3, to: paths[bad])
    try Data("not a png".utf8).write(to: URL(fileURLWithPath: paths[corrupt]))
    expectFileError(paths[bad], "is 2×4×3, the batch is 3×4×3") { try SamplePacker.pack(folder: dir, count: count, to: dir + "/bad.npz") }
    #expect(!FileManager.default.fileExists(atPath: dir + "/bad.npz"), "no partial batch is left")
    try PNGImage.write(Array(pixels[(bad * n)..<((bad + 1) * n)]), height: h, width: w, channels: 3, to: paths[bad])
    expectFileError(paths[corrupt]) { try SamplePacker.pack(folder: dir, count: count, to: dir + "/bad.npz") }
}
