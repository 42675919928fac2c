import Foundation
import HasteIO
import HasteTensor

/// The reference MS-COCO feature folder (spec/data.md §2.1–2.2): a split folder of `{i}.png` (the 256 px crop),
/// `{i}.npy` (VAE moments, mean | log-variance, [8, 32, 32]) and `{i}_{k}.npy` (CLIP features of caption k,
/// [77, 768]), with `empty_context.npy` at the dataset root. `data-dir` is the root (holding `train/`) or a split
/// folder with `empty_context.npy` one level up. Items are numbered 0..<n without gaps, every item has a PNG and
/// captions 0..<n_i (n_i ≥ 1), and every caption has the empty context's shape; anything else is refused naming
/// the file.
public final class COCOFeatureFolder: CaptionFeatureSource {
    /// The split folder read.
    public let path: String
    public let count: Int
    let captionCounts: [Int]
    public let emptyContext: Tensor
    public var contextShape: [Int] { emptyContext.shape }

    static let layoutHint = "data-dir must be the COCO feature root (empty_context.npy and train/) or a split folder (train/, "
        + "with empty_context.npy one level up), as `haste preprocess --coco` or the reference's U-ViT scripts write them"

    /// `checkFirstCaption`: read `0_0.npy` now, so a wrong feature shape fails at start-up rather than mid-run.
    public init(dataDir: String, checkFirstCaption: Bool = true) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dataDir, isDirectory: &isDir), isDir.boolValue else {
            throw HasteError.fileMissing(path: dataDir, hint: COCOFeatureFolder.layoutHint + ".")
        }
        let root = URL(fileURLWithPath: dataDir).standardizedFileURL
        let split: URL, empty: URL
        if fm.fileExists(atPath: root.appendingPathComponent("train").path) {
            (split, empty) = (root.appendingPathComponent("train"), root.appendingPathComponent("empty_context.npy"))
        } else {
            (split, empty) = (root, root.deletingLastPathComponent().appendingPathComponent("empty_context.npy"))
        }
        guard fm.fileExists(atPath: empty.path) else {
            throw HasteError.fileMissing(path: empty.path, hint: "the CLIP features of the empty caption (the CFG null input) are missing: "
                + COCOFeatureFolder.layoutHint + "; `haste preprocess --coco` writes it.")
        }
        path = split.path
        let e = try NpyFile.read(empty.path)
        guard e.rank == 2, e.shape.allSatisfy({ $0 >= 1 }) else {
            throw HasteError.fileFormat(path: empty.path, detail: "shape \(e.shape), expected [tokens, width] (CLIP: [77, 768])")
        }
        emptyContext = e.to(.float32)
        (count, captionCounts) = try COCOFeatureFolder.scan(split.path)
        if checkFirstCaption { _ = try caption(0, 0) }
    }

    /// Item count and caption counts from the file names, checking the numbering.
    static func scan(_ dir: String) throws -> (Int, [Int]) {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        var items = Set<Int>(), pngs = Set<Int>(), captions: [Int: Set<Int>] = [:]
        for name in names {
            if let i = index(name, suffix: ".png") { pngs.insert(i); continue }
            guard name.hasSuffix(".npy") else { continue }
            let parts = name.dropLast(4).split(separator: "_", omittingEmptySubsequences: false)
            if parts.count == 1, let i = Int(parts[0]), i >= 0 { items.insert(i) }
            if parts.count == 2, let i = Int(parts[0]), let k = Int(parts[1]), i >= 0, k >= 0 { captions[i, default: []].insert(k) }
        }
        let n = items.count
        guard n > 0 else {
            throw HasteError.fileFormat(path: dir, detail: "holds no {i}.npy moment files: " + layoutHint)
        }
        if let gap = (0..<n).first(where: { !items.contains($0) }) {
            throw HasteError.fileMissing(path: "\(dir)/\(gap).npy", hint: "items must be numbered 0..<\(n) without gaps (the folder has \(n) moment files, up to \(items.max()!).npy); re-run the preprocessing of this item.")
        }
        var counts: [Int] = []
        counts.reserveCapacity(n)
        for i in 0..<n {
            guard pngs.contains(i) else {
                throw HasteError.fileMissing(path: "\(dir)/\(i).png", hint: "every item needs its 256 px crop for the teacher; re-run the preprocessing of this item.")
            }
            let ks = captions[i] ?? []
            guard !ks.isEmpty else {
                throw HasteError.fileMissing(path: "\(dir)/\(i)_0.npy", hint: "image \(i) has no caption features ({i}_{k}.npy); every image needs at least one caption.")
            }
            if let gap = (0..<ks.count).first(where: { !ks.contains($0) }) {
                throw HasteError.fileMissing(path: "\(dir)/\(i)_\(gap).npy", hint: "captions of image \(i) must be numbered 0..<\(ks.count) without gaps.")
            }
            counts.append(ks.count)
        }
        if let stray = captions.keys.first(where: { $0 >= n }) {
            throw HasteError.fileMissing(path: "\(dir)/\(stray).npy", hint: "caption features \(stray)_*.npy exist without the item's moments.")
        }
        return (n, counts)
    }

    static func index(_ name: String, suffix: String) -> Int? {
        guard name.hasSuffix(suffix), let i = Int(name.dropLast(suffix.count)), i >= 0 else { return nil }
        return i
    }

    public func captionCount(_ i: Int) -> Int { captionCounts[i] }

    public func image(_ i: Int) throws -> Tensor {
        let file = "\(path)/\(i).png"
        let png = try PNGImage.read(file).rgb()
        guard png.width == png.height else {
            throw HasteError.fileFormat(path: file, detail: "\(png.width)×\(png.height): the crops must be square")
        }
        var pixels = [UInt8](repeating: 0, count: 3 * png.width * png.height)
        pixels.withUnsafeMutableBufferPointer { png.copyCHW(to: $0.baseAddress!) }
        return Tensor(pixels, shape: [3, png.height, png.width])
    }

    public func moments(_ i: Int) throws -> Tensor {
        let file = "\(path)/\(i).npy"
        let m = try NpyFile.read(file)
        guard m.rank == 3, m.shape[0] >= 2, m.shape[0] % 2 == 0 else {
            throw HasteError.fileFormat(path: file, detail: "moments of shape \(m.shape), expected [2C, r, r] (mean | log-variance, [8, 32, 32] for SD-VAE)")
        }
        return m.to(.float32)
    }

    public func caption(_ i: Int, _ k: Int) throws -> Tensor {
        let file = "\(path)/\(i)_\(k).npy"
        let c = try NpyFile.read(file)
        guard c.shape == contextShape else {
            throw HasteError.fileFormat(path: file, detail: "caption feature of shape \(c.shape), expected \(contextShape) like empty_context.npy; re-encode this caption with the same text encoder")
        }
        return c.to(.float32)
    }
}
