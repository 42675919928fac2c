import Foundation
import Testing
import HasteTensor
import HasteIO
@testable import HasteEval

/// An ADM batch with a zero dimension (no images, or images of 0 pixels) is an error naming the file, as are
/// arrays that are not uint8 [N, H, W, 3]; a well-formed batch streams its images as (n, 3, H, W).
@Test func zeroSizeImageBatchesAreRefusedWithAMessage() throws {
    try withTemporaryDirectory { dir in
        for shape in [[0, 8, 8, 3], [2, 0, 8, 3], [2, 8, 0, 3]] {
            let path = dir + "/empty-\(shape.map(String.init).joined(separator: "x")).npz"
            try NpzWriter.write([("arr_0", Tensor.zeros(shape, dtype: .uint8))], to: path)
            expectFileError(path, "'arr_0'", "\(shape)", "no images or empty images") { _ = try NpzImages(NpzArchive(path: path)) }
            expectFileError(path, "no images or empty images") { _ = try EvalSet.open(path) }
        }
        try NpzWriter.write([("arr_0", Tensor.zeros([2, 8, 8, 4], dtype: .uint8))], to: dir + "/rgba.npz")
        expectFileError(dir + "/rgba.npz", "ADM batches hold uint8 images [N, H, W, 3]") { _ = try NpzImages(NpzArchive(path: dir + "/rgba.npz")) }
        let pixels = Tensor((0..<(2 * 3 * 4 * 3)).map { UInt8($0) }, shape: [2, 3, 4, 3])
        try NpzWriter.write([("arr_0", pixels)], to: dir + "/ok.npz")
        let images = try NpzImages(NpzArchive(path: dir + "/ok.npz"))
        #expect(images.count == 2)
        #expect(rawBytes(try images.images(1..<2)) == rawBytes(pixels.narrowed(0, start: 1, length: 1).permuted([0, 3, 1, 2])))
    }
}
