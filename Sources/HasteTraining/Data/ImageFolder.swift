import Foundation
import HasteIO
import HasteTensor

/// Pixel-space training on a folder of same-size PNGs with a `dataset.json` label list — the `images/` half of
/// the reference layout (spec/data.md §1.1) — for models that denoise pixels: x0 = pixels/127.5 − 1, and the
/// teacher sees the same pixels.
public final class ImageFolderDataset: TrainingDataset {
    public let root: String
    let files: [String], labels: [Int64]
    public let numClasses: Int
    public let sampleShape: [Int]
    public let hasImages = true
    public let hasLatents = false
    public var count: Int { files.count }

    public init(root: String, numClasses: Int) throws {
        let json = "\(root)/dataset.json"
        guard let data = FileManager.default.contents(atPath: json) else {
            throw HasteError.fileMissing(path: json, hint: "--data-dir must hold PNGs and a dataset.json label list (as `haste preprocess` writes images/).")
        }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let rows = obj["labels"] as? [[Any]] else {
            throw HasteError.fileFormat(path: json, detail: "expected {\"labels\": [[\"00000/img00000000.png\", 6], ...]}")
        }
        var pairs: [(String, Int64)] = []
        for row in rows {
            guard row.count == 2, let name = row[0] as? String, let label = row[1] as? Int, label >= 0, label < numClasses else {
                throw HasteError.fileFormat(path: json, detail: "label row \(row) is not [path, class in 0..<\(numClasses)] (set num-classes)")
            }
            pairs.append((name.replacingOccurrences(of: "\\", with: "/"), Int64(label)))
        }
        pairs.sort { $0.0 < $1.0 }
        guard let first = pairs.first else { throw HasteError.fileFormat(path: json, detail: "the dataset is empty") }
        let png = try PNGImage.read("\(root)/\(first.0)")
        guard png.height == png.width else {
            throw HasteError.fileFormat(path: "\(root)/\(first.0)", detail: "images must be square crops, got \(png.width)×\(png.height)")
        }
        (self.root, self.numClasses) = (root, numClasses)
        files = pairs.map(\.0)
        labels = pairs.map(\.1)
        sampleShape = [3, png.height, png.width]
    }

    public func batch(_ indices: [Int]) throws -> Batch {
        let side = sampleShape[1], size = 3 * side * side
        var pixels = [UInt8](repeating: 0, count: indices.count * size)
        try pixels.withUnsafeMutableBufferPointer { out in
            for (k, i) in indices.enumerated() {
                let png = try PNGImage.read("\(root)/\(files[i])")
                guard png.height == side && png.width == side else {
                    throw HasteError.fileFormat(path: "\(root)/\(files[i])", detail: "\(png.width)×\(png.height), but the dataset's images are \(side)×\(side)")
                }
                png.copyCHW(to: out.baseAddress! + k * size)
            }
        }
        let images = Tensor(pixels, shape: [indices.count, 3, side, side])
        return Batch(images: images, x0: images.to(.float32) / 127.5 - 1.0, moments: false,
                     labels: Tensor(indices.map { labels[$0] }, shape: [indices.count]))
    }
}
