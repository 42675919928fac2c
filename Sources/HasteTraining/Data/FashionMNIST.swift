import Foundation
import HasteIO
import HasteTensor

/// Fashion-MNIST from the Debian package dataset-fashion-mnist (idx files, gzip), padded 28 → 32 with
/// background (0), as a 10-class pixel-space set: student input [1, 32, 32] in [-1, 1], teacher images the
/// grey channel replicated to RGB.
public final class FashionMNIST: TrainingDataset {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public let pixels: [UInt8]      // [n, 32, 32]
    public let labels: [Int64]
    public let numClasses = 10
    public let sampleShape = [1, 32, 32]
    public let hasImages = true
    public let hasLatents = false
    public var count: Int { labels.count }
    public static let classNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    /// `split`: "train" (60 000) or "t10k" (10 000).
    public init(directory: String = FashionMNIST.defaultDirectory, split: String = "train") throws {
        let imagesPath = "\(directory)/\(split)-images-idx3-ubyte.gz", labelsPath = "\(directory)/\(split)-labels-idx1-ubyte.gz"
        for p in [imagesPath, labelsPath] where !FileManager.default.fileExists(atPath: p) {
            throw HasteError.fileMissing(path: p, hint: "Install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (Scripts/setup.sh does it) or pass --data-dir.")
        }
        let img = try Gzip.decompress(file: imagesPath), lab = try Gzip.decompress(file: labelsPath)
        func be32(_ d: Data, _ at: Int) -> Int { d[d.startIndex + at ..< d.startIndex + at + 4].reduce(0) { $0 << 8 | Int($1) } }
        guard img.count >= 16, be32(img, 0) == 2051, lab.count >= 8, be32(lab, 0) == 2049 else {
            throw HasteError.fileFormat(path: imagesPath, detail: "not an idx image/label file pair (bad magic numbers)")
        }
        let n = be32(img, 4), rows = be32(img, 8), cols = be32(img, 12)
        guard rows == 28, cols == 28, be32(lab, 4) == n, img.count >= 16 + n * 784, lab.count >= 8 + n else {
            throw HasteError.fileFormat(path: imagesPath, detail: "unexpected idx sizes: \(n) images of \(rows)×\(cols)")
        }
        var padded = [UInt8](repeating: 0, count: n * 1024)
        img.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
            for i in 0..<n { for r in 0..<28 { for c in 0..<28 { padded[i * 1024 + (r + 2) * 32 + c + 2] = src[16 + i * 784 + r * 28 + c] } } }
        }
        pixels = padded
        labels = lab.withUnsafeBytes { (src: UnsafeRawBufferPointer) in (0..<n).map { Int64(src[8 + $0]) } }
    }

    public func batch(_ indices: [Int]) throws -> Batch {
        let b = indices.count
        var grey = [UInt8](repeating: 0, count: b * 1024)
        for (k, i) in indices.enumerated() { grey.replaceSubrange(k * 1024 ..< (k + 1) * 1024, with: pixels[i * 1024 ..< (i + 1) * 1024]) }
        let g = Tensor(grey, shape: [b, 1, 32, 32])
        let x0 = g.to(.float32) / 127.5 - 1.0                                             // (B, 1, 32, 32) in [-1, 1]
        let rgb = Tensor.cat([g, g, g], axis: 1)                                          // (B, 3, 32, 32) uint8
        return Batch(images: rgb, x0: x0, moments: false, labels: Tensor(indices.map { labels[$0] }, shape: [b]))
    }
}
