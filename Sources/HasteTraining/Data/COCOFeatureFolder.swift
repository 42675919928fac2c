import Foundation
import HasteIO
import HasteTensor

/// One split of the reference MS-COCO feature folder (spec/data.md §2.1–2.2), as U-ViT's extraction scripts and
/// `haste preprocess --coco` write it: `<root>/empty_context.npy` and `<root>/<split>/{i}.png`, `{i}.npy` (moments
/// [8, r, r]), `{i}_{k}.npy` (caption features [77, D]). Opening it checks what the reference loader relies on:
/// num_data = #`{i}.npy`, every idx in 0 ..< N has its PNG, moments and captions 0 ..< n_i (n_i ≥ 1), no stray .npy
/// file (it would change the reference's count), and the shapes (of the first item, or with `checkEveryFile` of
/// every file's header: the import validation).
public final class COCOFeatureFolder: CaptionFeatureSource {
    public let root: String, split: String, dir: String
    public var path: String { dir }
    public let count: Int
    let counts: [Int]
    public let resolution: Int
    public let momentShape: [Int], contextShape: [Int]
    public let emptyContext: Tensor
    /// Image counts the reference asserts (spec/data.md §2.2).
    public static let referenceCounts = ["train": 82_783, "val": 40_504]

    public init(root: String, split: String, checkEveryFile: Bool = false) throws {
        (self.root, self.split, dir) = (root, split, "\(root)/\(split)")
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw HasteError.fileMissing(path: dir, hint: "a COCO feature folder holds <root>/empty_context.npy and <root>/\(split)/ with {i}.png, {i}.npy and {i}_{k}.npy (spec/data.md §2.1); give its root and --split.")
        }
        let emptyPath = "\(root)/empty_context.npy"
        guard fm.fileExists(atPath: emptyPath) else {
            throw HasteError.fileMissing(path: emptyPath, hint: "the features of the empty caption belong at the root of the feature folder, beside \(split)/ (the reference writes it once for all splits).")
        }
        emptyContext = try NpyFile.read(emptyPath).to(.float32)
        contextShape = emptyContext.shape
        guard contextShape.count == 2, contextShape[0] >= 1, contextShape[1] >= 1 else {
            throw HasteError.fileFormat(path: emptyPath, detail: "shape \(contextShape), expected [77, D] (CLIP text features)")
        }
        var pngs = Set<Int>(), moments = Set<Int>(), captions: [Int: Set<Int>] = [:], problems: [String] = []
        for name in try fm.contentsOfDirectory(atPath: dir) {
            let (stem, ext) = ((name as NSString).deletingPathExtension, (name as NSString).pathExtension)
            let parts = stem.split(separator: "_", omittingEmptySubsequences: false).map { Self.index(String($0)) }
            switch (ext, parts.count) {
            case ("png", 1) where parts[0] != nil: pngs.insert(parts[0]!)
            case ("npy", 1) where parts[0] != nil: moments.insert(parts[0]!)
            case ("npy", 2) where parts[0] != nil && parts[1] != nil: captions[parts[0]!, default: []].insert(parts[1]!)
            case ("npy", _): problems.append("\(name): a .npy file not named {i}.npy or {i}_{k}.npy (the reference counts every .npy file)")
            default: continue
            }
        }
        count = moments.count
        var counts = [Int](repeating: 0, count: count)
        for i in 0..<count {
            if !moments.contains(i) { problems.append("\(i).npy is missing (there are \(count) {i}.npy files, so idx must run 0..<\(count))") }
            if !pngs.contains(i) { problems.append("\(i).png is missing") }
            let ks = captions[i] ?? []
            if ks.isEmpty { problems.append("image \(i) has no caption file \(i)_0.npy") }
            else if ks.count != ks.max()! + 1 { problems.append("the captions of image \(i) are not numbered 0..<\(ks.count): \(ks.sorted())") }
            counts[i] = ks.count
        }
        for i in captions.keys.sorted() where i >= count { problems.append("\(i)_0.npy: captions of image \(i), which has no \(i).npy") }
        for i in pngs.sorted() where i >= count { problems.append("\(i).png: image \(i) has no \(i).npy") }
        self.counts = counts
        if !problems.isEmpty { throw Self.failure(dir, problems) }
        guard count > 0 else { throw HasteError.fileFormat(path: dir, detail: "holds no {i}.npy files: not a COCO feature folder, or empty") }
        let firstMoments = try NpyFile.header("\(dir)/0.npy").shape
        momentShape = firstMoments
        resolution = try Self.pngSize("\(dir)/0.png")
        guard momentShape.count == 3, momentShape[0] >= 2, momentShape[0] % 2 == 0 else {
            throw HasteError.fileFormat(path: "\(dir)/0.npy", detail: "moments of shape \(momentShape), expected [8, r, r] (VAE mean | log-variance)")
        }
        if checkEveryFile { try checkShapes() }
    }

    static let layoutHint = "data-dir must be the COCO feature root (empty_context.npy and train/) or a split folder (train/, "
        + "with empty_context.npy one level up), as `haste preprocess --coco` or the reference's U-ViT scripts write them"

    /// The training split named by `data-dir`: the feature root (holding `train/`) or a split folder with
    /// `empty_context.npy` one level up. `checkFirstCaption` reads `0_0.npy` now, so a caption of the wrong shape
    /// fails at start-up rather than mid-run.
    public convenience init(dataDir: String, checkFirstCaption: Bool = true) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dataDir, isDirectory: &isDir), isDir.boolValue else {
            throw HasteError.fileMissing(path: dataDir, hint: Self.layoutHint + ".")
        }
        let url = URL(fileURLWithPath: dataDir).standardizedFileURL
        let (root, split) = fm.fileExists(atPath: url.appendingPathComponent("train").path)
            ? (url.path, "train") : (url.deletingLastPathComponent().path, url.lastPathComponent)
        let empty = "\(root)/empty_context.npy"
        guard fm.fileExists(atPath: empty) else {
            throw HasteError.fileMissing(path: empty, hint: "the CLIP features of the empty caption (the CFG null input) are missing: "
                + Self.layoutHint + "; `haste preprocess --coco` writes it.")
        }
        try self.init(root: root, split: split)
        if checkFirstCaption { _ = try caption(0, 0) }
    }

    /// Every file's header against the first item's shapes and empty_context's.
    func checkShapes() throws {
        var problems: [String] = []
        for i in 0..<count {
            let m = "\(dir)/\(i).npy"
            do {
                let h = try NpyFile.header(m)
                if h.shape != momentShape || h.dtype != .float32 { problems.append("\(i).npy: \(h.descr) \(h.shape), expected <f4 \(momentShape)") }
                let side = try Self.pngSize("\(dir)/\(i).png")
                if side != resolution { problems.append("\(i).png: \(side) px, expected \(resolution) like 0.png") }
                for k in 0..<counts[i] {
                    let c = try NpyFile.header("\(dir)/\(i)_\(k).npy")
                    if c.shape != contextShape || c.dtype != .float32 { problems.append("\(i)_\(k).npy: \(c.descr) \(c.shape), expected <f4 \(contextShape) like empty_context.npy") }
                }
            } catch { problems.append("\(error)") }
            if problems.count > 50 { break }
        }
        if !problems.isEmpty { throw Self.failure(dir, problems) }
    }

    static func failure(_ dir: String, _ problems: [String]) -> HasteError {
        let shown = problems.prefix(10).map { "  " + $0 }.joined(separator: "\n")
        return .fileFormat(path: dir, detail: "not a valid COCO feature folder (\(problems.count) problem\(problems.count == 1 ? "" : "s")\(problems.count > 50 ? " or more" : "")):\n\(shown)"
            + (problems.count > 10 ? "\n  …" : "") + "\nRe-extract the split with `haste preprocess --coco ANNOTATIONS.json --source IMAGES --dest ROOT --text-encoder WEIGHTS` (it resumes), or fix the files named.")
    }

    /// "12" → 12; "012", "", "a" → nil (the reference writes plain decimal indices).
    static func index(_ s: String) -> Int? {
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), s == "0" || !s.hasPrefix("0") else { return nil }
        return Int(s)
    }

    /// The side of a square 8-bit RGB PNG, from its IHDR (not decoded).
    static func pngSize(_ path: String) throws -> Int {
        guard let f = FileHandle(forReadingAtPath: path) else { throw HasteError.fileMissing(path: path, hint: "every image of the split needs its {i}.png") }
        defer { try? f.close() }
        let b = Array((try? f.read(upToCount: 26)) ?? Data())
        guard b.count == 26, b.starts(with: [0x89, 0x50, 0x4E, 0x47]), Array(b[12..<16]) == Array("IHDR".utf8) else {
            throw HasteError.fileFormat(path: path, detail: "not a PNG file")
        }
        let w = b[16..<20].reduce(0) { $0 << 8 | Int($1) }, h = b[20..<24].reduce(0) { $0 << 8 | Int($1) }
        guard w == h, b[24] == 8, b[25] == 2 else {
            throw HasteError.fileFormat(path: path, detail: "\(w)×\(h), bit depth \(b[24]), colour type \(b[25]): expected a square 8-bit RGB PNG")
        }
        return w
    }

    public func captionCount(_ i: Int) -> Int { counts[i] }

    public func image(_ i: Int) throws -> Tensor {
        let png = try PNGImage.read("\(dir)/\(i).png").rgb()
        guard png.width == resolution && png.height == resolution else {
            throw HasteError.fileFormat(path: "\(dir)/\(i).png", detail: "\(png.width)×\(png.height), expected \(resolution)×\(resolution)")
        }
        var chw = [UInt8](repeating: 0, count: 3 * resolution * resolution)
        chw.withUnsafeMutableBufferPointer { png.copyCHW(to: $0.baseAddress!) }
        return Tensor(chw, shape: [3, resolution, resolution])
    }

    public func moments(_ i: Int) throws -> Tensor { try read("\(dir)/\(i).npy", momentShape) }
    public func caption(_ i: Int, _ k: Int) throws -> Tensor {
        require(k >= 0 && k < counts[i], "COCOFeatureFolder.caption: caption \(k) of image \(i), which has \(counts[i])")
        return try read("\(dir)/\(i)_\(k).npy", contextShape)
    }

    func read(_ path: String, _ shape: [Int]) throws -> Tensor {
        let t = try NpyFile.read(path)
        guard t.shape == shape else { throw HasteError.fileFormat(path: path, detail: "shape \(t.shape), expected \(shape)") }
        return t.to(.float32)
    }
}
