import Foundation
import HasteIO
import HasteTensor

/// The packed ImageNet layout written by `haste preprocess --format hdf5|both` ("haste-dataset-1"): the same
/// items as ReferenceLayoutDataset (image uint8 [3, R, R], moments float32 [8, R/8, R/8], int64 label) from
/// one file, so an epoch reads one file instead of two per item.
public final class HDF5Dataset: TrainingDataset {
    public let file: HDF5DatasetFile
    let labels: [Int64]
    public let numClasses: Int
    public let sampleShape: [Int]
    public let hasImages = true
    public let hasLatents = true
    public var count: Int { file.count }

    public init(path: String, numClasses: Int) throws {
        file = try HDF5DatasetFile.open(path)
        self.numClasses = numClasses
        guard file.momentChannels > 0 else {
            throw HasteError.fileFormat(path: path, detail: "holds no VAE moments: rerun `haste preprocess --stage all --format hdf5` with --vae-weights")
        }
        labels = try file.labels()
        if labels.contains(-1) { throw HasteError.unlabelled(path: path) }
        if let bad = labels.first(where: { $0 < 0 || $0 >= Int64(numClasses) }) {
            throw HasteError.config(key: "num-classes", detail: "\(path) has label \(bad), outside 0..<\(numClasses)")
        }
        guard file.count > 0 else { throw HasteError.fileFormat(path: path, detail: "the dataset is empty") }
        sampleShape = [file.momentChannels / 2, file.momentSide, file.momentSide]
    }

    /// Items read straight into the batch buffers (libhdf5 here is the serial build: one reader).
    public func batch(_ indices: [Int]) throws -> Batch {
        let n = indices.count, r = file.resolution, m = file.momentChannels * file.momentSide * file.momentSide
        var pixels = [UInt8](repeating: 0, count: n * 3 * r * r), moments = [Float](repeating: 0, count: n * m)
        try pixels.withUnsafeMutableBufferPointer { px in
            try moments.withUnsafeMutableBufferPointer { mo in
                for (k, i) in indices.enumerated() {
                    try file.readImage(i, into: px.baseAddress! + k * 3 * r * r)
                    try file.readMoments(i, into: mo.baseAddress! + k * m)
                }
            }
        }
        return Batch(images: Tensor(pixels, shape: [n, 3, r, r]),
                     x0: Tensor(moments, shape: [n, file.momentChannels, file.momentSide, file.momentSide]),
                     moments: true, labels: Tensor(indices.map { labels[$0] }, shape: [n]))
    }
}
