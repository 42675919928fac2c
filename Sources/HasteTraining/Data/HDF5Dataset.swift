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

    public func batch(_ indices: [Int]) throws -> Batch {
        let r = file.resolution, m = file.momentChannels * file.momentSide * file.momentSide
        var pixels: [UInt8] = [], moments: [Float] = []
        pixels.reserveCapacity(indices.count * 3 * r * r)
        moments.reserveCapacity(indices.count * m)
        for i in indices {
            pixels += try file.image(i)
            moments += try file.moments(i)
        }
        return Batch(images: Tensor(pixels, shape: [indices.count, 3, r, r]),
                     x0: Tensor(moments, shape: [indices.count, file.momentChannels, file.momentSide, file.momentSide]),
                     moments: true, labels: Tensor(indices.map { labels[$0] }, shape: [indices.count]))
    }
}
