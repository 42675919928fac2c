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
    /// Threads reading the items of one batch.
    public var readers = Swift.max(1, Swift.min(8, ProcessInfo.processInfo.activeProcessorCount / 2))
    public let hasImages = true
    public let hasLatents = true
    public var count: Int { features.count }

    public init(root: String, numClasses: Int) throws {
        self.root = root
        self.numClasses = numClasses
        let fm = FileManager.default
        let vae = "\(root)/vae-sd", img = "\(root)/images"
        for dir in [vae, img] where !fm.fileExists(atPath: dir) {
            throw HasteError.fileMissing(path: dir, hint: "--data-dir must hold images/ and vae-sd/ (or dataset.h5) as written by `haste preprocess` (or images/ and vae-sd/ from the reference dataset_tools.py).")
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
        let moments = try NpyFile.read("\(vae)/\(first)").shape
        // Moments are [2C, H, W] (mean and std stacked on the channels): anything else is not a preprocessed item.
        guard moments.count == 3, moments[0] >= 2, moments[0] % 2 == 0, moments.allSatisfy({ $0 >= 1 }) else {
            throw HasteError.fileFormat(path: "\(vae)/\(first)", detail: "moments of shape \(moments), expected [2C, H, W] with C ≥ 1 (mean and std of the VAE posterior); re-run `haste preprocess` for this item")
        }
        sampleShape = [moments[0] / 2, moments[1], moments[2]]
    }

    /// Items are read by `readers` threads straight into the batch buffers (PNG HWC → CHW uint8, moments
    /// float32), like the reference's DataLoader workers; the trainer also prefetches the next batch.
    public func batch(_ indices: [Int]) throws -> Batch {
        let n = indices.count, mShape = [2 * sampleShape[0]] + Array(sampleShape.dropFirst())
        let mCount = mShape.reduce(1, *)
        var moments = [Float](repeating: 0, count: n * mCount)
        // The first item fixes the image side (the reference checks all images are the same size).
        let first = try readImage(indices[0]), side = first.width
        var pixels = [UInt8](repeating: 0, count: n * 3 * side * side)
        let lock = NSLock()
        var failure: Error?
        pixels.withUnsafeMutableBufferPointer { px in
            moments.withUnsafeMutableBufferPointer { mo in
                let (pxBase, moBase) = (px.baseAddress!, mo.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: Swift.min(readers, n)) { worker in
                    for k in stride(from: worker, to: n, by: Swift.min(readers, n)) {
                        do {
                            let img = k == 0 ? first : try readImage(indices[k])
                            guard img.width == side && img.height == side else {
                                throw HasteError.fileFormat(path: "\(root)/images/\(images[indices[k]])",
                                                            detail: "\(img.width)×\(img.height), expected \(side)×\(side) like the first image of the batch")
                            }
                            img.copyCHW(to: pxBase + k * 3 * side * side)
                            let path = "\(root)/vae-sd/\(features[indices[k]])"
                            let m = try NpyFile.read(path).to(.float32)
                            guard m.shape == mShape else { throw HasteError.fileFormat(path: path, detail: "moments \(m.shape), expected \(mShape)") }
                            m.backend.copyToHost(m.buffer, UnsafeMutableRawPointer(moBase + k * mCount), byteCount: mCount * 4)
                        } catch {
                            lock.lock(); if failure == nil { failure = error }; lock.unlock()
                        }
                    }
                }
            }
        }
        if let failure { throw failure }
        return Batch(images: Tensor(pixels, shape: [n, 3, side, side]), x0: Tensor(moments, shape: [n] + mShape), moments: true,
                     labels: Tensor(indices.map { labels[$0] }, shape: [n]))
    }

    private func readImage(_ i: Int) throws -> DecodedImage { try PNGImage.read("\(root)/images/\(images[i])") }
}
