import Foundation
import HasteIO
import HasteTensor

/// The reference ImageNet layout (spec/data.md §1.5): `<data-dir>/images/*/img########.png` and
/// `<data-dir>/vae-sd/*/img-mean-std-########.npy` with labels in `vae-sd/dataset.json`. Items are paired by
/// their shared 8-digit index and the names are verified (spec README #22), not by independent sort order.
public final class ReferenceLayoutDataset: TrainingDataset {
    public let root: String
    let images: [String], features: [String]
    let labels: [Int64]
    public let numClasses: Int
    public let sampleShape: [Int]
    public let hasImages = true
    public let hasLatents = true
    public var count: Int { features.count }

    public init(root: String, numClasses: Int) throws {
        self.root = root
        self.numClasses = numClasses
        let fm = FileManager.default
        let vae = "\(root)/vae-sd", img = "\(root)/images"
        for dir in [vae, img] where !fm.fileExists(atPath: dir) {
            throw HasteError.fileMissing(path: dir, hint: "--data-dir must hold images/ and vae-sd/ as written by `haste preprocess` (or the reference dataset_tools.py).")
        }
        let json = "\(vae)/dataset.json"
        guard let data = fm.contents(atPath: json),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw HasteError.fileFormat(path: json, detail: "expected {\"labels\": [[\"00000/img-mean-std-00000000.npy\", 6], ...]}")
        }
        if obj["labels"] is NSNull { throw HasteError.unlabelled(path: json) }
        guard let rows = obj["labels"] as? [[Any]] else {
            throw HasteError.fileFormat(path: json, detail: "expected {\"labels\": [[\"00000/img-mean-std-00000000.npy\", 6], ...]}")
        }
        var feats: [String] = [], labs: [Int64] = []
        for row in rows {
            guard row.count == 2, let name = row[0] as? String, let label = row[1] as? Int else {
                throw HasteError.fileFormat(path: json, detail: "a label row is not [path, int]: \(row)")
            }
            guard label >= 0 && label < numClasses else {
                throw HasteError.config(key: "num-classes", detail: "\(json) has label \(label) for \(name), outside 0..<\(numClasses)")
            }
            feats.append(name.replacingOccurrences(of: "\\", with: "/"))
            labs.append(Int64(label))
        }
        let order = feats.indices.sorted { feats[$0] < feats[$1] }
        features = order.map { feats[$0] }
        labels = order.map { labs[$0] }
        images = try features.map { f in
            // 00000/img-mean-std-00000000.npy ↔ 00000/img00000000.png
            let name = f.replacingOccurrences(of: "img-mean-std-", with: "img").replacingOccurrences(of: ".npy", with: ".png")
            guard fm.fileExists(atPath: "\(img)/\(name)") else {
                throw HasteError.fileMissing(path: "\(img)/\(name)", hint: "images/ and vae-sd/ are out of step: re-run `haste preprocess` for the missing items.")
            }
            return name
        }
        guard let first = features.first else { throw HasteError.fileFormat(path: json, detail: "the dataset is empty") }
        sampleShape = try NpyFile.read("\(vae)/\(first)").shape.enumerated().map { $0.offset == 0 ? $0.element / 2 : $0.element }
    }

    public func batch(_ indices: [Int]) throws -> Batch {
        var moments: [Tensor] = [], pixels: [Tensor] = []
        for i in indices {
            let m = try NpyFile.read("\(root)/vae-sd/\(features[i])").to(.float32)
            guard m.shape == [2 * sampleShape[0]] + Array(sampleShape.dropFirst()) else {
                throw HasteError.fileFormat(path: "\(root)/vae-sd/\(features[i])", detail: "moments \(m.shape), expected \([2 * sampleShape[0]] + Array(sampleShape.dropFirst()))")
            }
            moments.append(m.unsqueezed(0))
            let png = try PNGImage.read("\(root)/images/\(images[i])")
            pixels.append(Tensor(png.pixels, shape: [1, png.height, png.width, 3]).permuted([0, 3, 1, 2]).contiguous())
        }
        return Batch(images: Tensor.cat(pixels, axis: 0), x0: Tensor.cat(moments, axis: 0), moments: true,
                     labels: Tensor(indices.map { labels[$0] }, shape: [indices.count]))
    }
}
