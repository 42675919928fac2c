import Foundation
import HasteIO
import HasteModels
import HasteTensor
import HasteText

public struct COCOPreprocessOptions: Sendable {
    /// Captions file, images folder, feature root (the reference's `coco256_features`), split subfolder.
    public var annotations = "", source = "", root = "", split = "train"
    public var resolution = 256
    public var format = PreprocessOptions.Format.folder
    public var maxImages: Int? = nil
    public var workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// Images per VAE call; their captions go through the text encoder together.
    public var batchSize = 8
    public var pngLevel = 0
    /// Store the reference's distorted PNG (max(0, 2p − 255)) instead of the crop p.
    public var legacyPNG = false
    public var progress = true
    public init() {}
}

public struct COCOPreprocessSummary: Sendable {
    public var images = 0, extracted = 0, alreadyDone = 0, failed = 0, noCaptions = 0, captions = 0, packed = 0
    public var seconds = 0.0, packSeconds = 0.0
    public var reportPath = "", folder = "", hdf5Path: String? = nil

    public var description: String {
        var s = String(format: "coco:    %d images, %d extracted now (%d captions), %d done before, %d bad files, %d without captions (%.1f s",
                       images, extracted, captions, alreadyDone, failed, noCaptions, seconds)
        s += seconds > 0 && extracted > 0 ? String(format: ", %.2f images/s)", Double(extracted) / seconds) : ")"
        if !folder.isEmpty { s += "\nfolder:  \(folder)" }
        if let h = hdf5Path { s += String(format: "\nhdf5:    %d images packed into %@ (%.1f s)", packed, h, packSeconds) }
        if failed + noCaptions > 0 { s += "\nskipped images are listed in \(reportPath)" }
        return s
    }
}

/// `haste preprocess --coco` (spec/data.md §2.1): one split of MS-COCO → the reference feature folder
/// `<root>/<split>/{idx}.png|.npy|_{k}.npy` and `<root>/empty_context.npy`, and optionally the packed
/// `<root>/coco-<split>.h5` (COCOFeatureFile). idx counts the usable images in ascending COCO id order; an image
/// whose file is missing or undecodable, or that has no caption, is skipped and reported (the reference would stop,
/// and its loader needs idx without holes). `<root>/coco-<split>-manifest.tsv` records each image's idx, appended
/// and synced after its files are written, so a killed run loses nothing written and a rerun continues after the
/// last recorded image (files of unrecorded images are rewritten).
public final class COCOPreprocessor {
    public let options: COCOPreprocessOptions
    let vae: AutoencoderKL?, text: CLIPTextEncoder?
    var summary = COCOPreprocessSummary()
    var dir: String { "\(options.root)/\(options.split)" }
    public var manifestPath: String { "\(options.root)/coco-\(options.split)-manifest.tsv" }
    public var reportPath: String { "\(options.root)/coco-\(options.split)-report.tsv" }
    public var hdf5Path: String { "\(options.root)/coco-\(options.split).h5" }

    public init(options: COCOPreprocessOptions, vae: AutoencoderKL?, text: CLIPTextEncoder?) {
        (self.options, self.vae, self.text) = (options, vae, text)
    }

    /// One manifest row: a COCO image id and its idx, or nil with the reason it was skipped.
    struct Row { let id: Int, idx: Int?, reason: String }

    var manifestHeader: String {
        "# haste-coco-manifest 1\tannotations=\((options.annotations as NSString).lastPathComponent)\tresolution=\(options.resolution)\tlegacy-png=\(options.legacyPNG ? 1 : 0)"
    }

    public func run() throws -> COCOPreprocessSummary {
        summary.reportPath = reportPath
        if options.format == .hdf5 && FileManager.default.fileExists(atPath: hdf5Path) {
            summary.hdf5Path = hdf5Path
            return summary   // renamed into place only when complete
        }
        guard let vae, let text else { throw HasteError.config(key: "coco", detail: "extraction needs the SD-VAE and the CLIP text encoder") }
        let ann = try COCOAnnotations(path: options.annotations)
        let images = Array(ann.images.prefix(options.maxImages ?? Int.max))
        guard !images.isEmpty else { throw HasteError.fileFormat(path: options.annotations, detail: "lists no images") }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try AtomicFile.removeLeftovers(in: dir)
        _ = try AtomicFile.removeLeftovers(in: options.root)
        var rows = try readManifest(images)
        try writeEmptyContext(text)
        summary.images = images.count
        summary.alreadyDone = rows.count
        let start = Date()
        let progress = ProgressBar(label: "coco   ", total: images.count - rows.count, enabled: options.progress)
        let manifest = try ManifestAppender(path: manifestPath, header: rows.isEmpty ? manifestHeader : nil)
        var nextIdx = rows.filter { $0.idx != nil }.count
        for b in stride(from: rows.count, to: images.count, by: options.batchSize) {
            let batch = Array(images[b..<min(b + options.batchSize, images.count)])
            let new = try extract(batch, firstIdx: nextIdx, vae: vae, text: text)
            try manifest.append(new.map { "\($0.id)\t\($0.idx.map(String.init) ?? "-")\t\($0.reason)\n" }.joined())
            nextIdx += new.filter { $0.idx != nil }.count
            rows += new
            progress.advance(batch.count)
        }
        progress.finish()
        manifest.close()
        summary.seconds = Date().timeIntervalSince(start)
        summary.failed = rows.filter { $0.idx == nil && $0.reason != Self.noCaptions }.count
        summary.noCaptions = rows.filter { $0.reason == Self.noCaptions }.count
        let byID = Dictionary(uniqueKeysWithValues: images.map { ($0.id, $0.fileName) })
        let report = "image_id\tpath\treason\n" + rows.filter { $0.idx == nil }.map {
            "\($0.id)\t\(options.source)/\(byID[$0.id] ?? "")\t\($0.reason.replacingOccurrences(of: "\n", with: " "))\n"
        }.joined()
        try writeAtomically(report, to: reportPath)
        summary.folder = dir
        if options.format != .folder {
            let ids = rows.compactMap { $0.idx == nil ? nil : Int64($0.id) }
            summary.packSeconds = try Self.pack(COCOFeatureFolder(root: options.root, split: options.split), imageIDs: ids, to: hdf5Path, progress: options.progress)
            summary.packed = ids.count
            summary.hdf5Path = hdf5Path
            if options.format == .hdf5 { try? FileManager.default.removeItem(atPath: dir); summary.folder = "" }
        }
        return summary
    }

    static let noCaptions = "no captions in the annotations file"

    /// The rows already recorded, checked to be for the same images, in order, with the same settings.
    func readManifest(_ images: [COCOAnnotations.Image]) throws -> [Row] {
        guard let data = FileManager.default.contents(atPath: manifestPath) else { return [] }
        var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
        lines.removeLast()   // the text after the last "\n": empty, or a line cut short by a kill (not recorded)
        guard let header = lines.first else { return [] }
        func mismatch(_ what: String) -> HasteError {
            .fileFormat(path: manifestPath, detail: "\(what): this folder was made from other annotations or settings. Delete \(manifestPath) and \(dir)/ to start again, or rerun with the original flags.")
        }
        guard header == manifestHeader else { throw mismatch("it was written with \"\(header)\", this run is \"\(manifestHeader)\"") }
        var rows: [Row] = []
        for (n, line) in lines.dropFirst().enumerated() {
            let f = line.components(separatedBy: "\t")
            guard f.count == 3, let id = Int(f[0]), f[1] == "-" || Int(f[1]) != nil else { throw mismatch("line \(n + 2) is not 'image_id<TAB>idx<TAB>reason'") }
            guard n < images.count, images[n].id == id else { throw mismatch("line \(n + 2) is image id \(id), the annotations' image \(n) (ascending id) is \(n < images.count ? "\(images[n].id)" : "past --max-images")") }
            rows.append(Row(id: id, idx: Int(f[1]), reason: f[2]))
        }
        return rows
    }

    /// `<root>/empty_context.npy` = features of "" (once; an existing one must have this encoder's shape).
    func writeEmptyContext(_ text: CLIPTextEncoder) throws {
        let path = "\(options.root)/empty_context.npy", want = [CLIPTokenizer.contextLength, text.width]
        if FileManager.default.fileExists(atPath: path) {
            let have = try NpyFile.header(path).shape
            guard have == want else {
                throw HasteError.fileFormat(path: path, detail: "shape \(have), but this text encoder makes \(want): another encoder's features are in \(options.root); use another --dest")
            }
            return
        }
        try NpyFile.write(text.encode(""), to: path)
    }

    /// Decodes and crops `batch` (threads), numbers the usable images from `firstIdx`, writes their PNGs, moments
    /// (one VAE call) and caption features (one text-encoder pass), and returns their manifest rows.
    func extract(_ batch: [COCOAnnotations.Image], firstIdx: Int, vae: AutoencoderKL, text: CLIPTextEncoder) throws -> [Row] {
        let r = options.resolution
        var crops = [Result<[UInt8], Error>?](repeating: nil, count: batch.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: batch.count) { i in
            guard !batch[i].captions.isEmpty else { return }
            let result = Result { () throws -> [UInt8] in
                let img = try ImageDecoder.decodeRGB(path: "\(options.source)/\(batch[i].fileName)")
                guard img.width > 0 && img.height > 0 else { throw HasteError.fileFormat(path: batch[i].fileName, detail: "empty image") }
                return cocoCenterCrop(img, size: r).pixels
            }
            lock.lock(); crops[i] = result; lock.unlock()
        }
        var rows: [Row] = [], good: [(idx: Int, image: COCOAnnotations.Image, crop: [UInt8])] = []
        for (i, image) in batch.enumerated() {
            switch crops[i] {
            case nil: rows.append(Row(id: image.id, idx: nil, reason: Self.noCaptions))
            case .failure(let e)?: rows.append(Row(id: image.id, idx: nil, reason: "\(e)"))
            case .success(let crop)?:
                good.append((firstIdx + good.count, image, crop))
                rows.append(Row(id: image.id, idx: good.last!.idx, reason: ""))
            }
        }
        guard !good.isEmpty else { return rows }
        var failure: Error?
        DispatchQueue.concurrentPerform(iterations: good.count) { k in
            let g = good[k], px = options.legacyPNG ? cocoLegacyPNGPixels(g.crop) : g.crop
            do { try PNGImage.write(px, height: r, width: r, channels: 3, to: "\(dir)/\(g.idx).png", compressionLevel: options.pngLevel) } catch {
                lock.lock(); failure = failure ?? error; lock.unlock()
            }
        }
        if let failure { throw failure }
        let x = Tensor(good.flatMap(\.crop), shape: [good.count, r, r, 3], device: vae.store.device)
            .permuted([0, 3, 1, 2]).contiguous().to(.float32) / 127.5 - 1.0
        let moments = noGrad { vae.moments(x) }.to(.cpu)
        for (k, g) in good.enumerated() {
            try NpyFile.write(moments.select(axis: 0, index: k).contiguous(), to: "\(dir)/\(g.idx).npy")
        }
        let captions = good.flatMap(\.image.captions)
        let features = text.encode(captions, batchSize: max(options.batchSize, 32)).to(.cpu)
        var row = 0
        for g in good {
            for k in g.image.captions.indices {
                try NpyFile.write(features.select(axis: 0, index: row).contiguous(), to: "\(dir)/\(g.idx)_\(k).npy")
                row += 1
            }
        }
        summary.extracted += good.count
        summary.captions += captions.count
        return rows
    }
}

/// Appends text to a file and syncs it to disk before returning (the manifest: a row is written only after its files).
final class ManifestAppender {
    let fd: Int32, path: String
    private var closed = false

    init(path: String, header: String?) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HasteError.fileFormat(path: path, detail: "cannot open for appending: \(String(cString: strerror(errno)))") }
        if let header { try append(header + "\n") }
    }

    func append(_ text: String) throws {
        let bytes = Array(text.utf8), total = bytes.count
        var done = 0
        while done < total {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, total - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw HasteError.fileFormat(path: path, detail: "cannot append (disk full?): \(String(cString: strerror(errno)))") }
            done += n
        }
        guard fsync(fd) == 0 else { throw HasteError.fileFormat(path: path, detail: "cannot sync (disk full?): \(String(cString: strerror(errno)))") }
    }

    func close() {
        if !closed { _ = Glibc.close(fd) }
        closed = true
    }
    deinit { close() }
}
