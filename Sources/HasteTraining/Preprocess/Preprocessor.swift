import Foundation
import HasteIO
import HasteModels
import HasteTensor

public struct PreprocessOptions: Sendable {
    public enum Stage: String, Sendable { case convert, encode, all }
    public enum Format: String, Sendable { case folder, hdf5, both }
    public var source = "", dest = ""
    public var resolution = 256
    public var stage = Stage.all
    public var format = Format.folder
    public var maxImages: Int? = nil
    public var workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
    public var batchSize = 8
    /// zlib level of images/*.png; 0 = stored (spec/data.md §1.1).
    public var pngLevel = 0
    public var progress = true
    public init() {}
}

public struct PreprocessSummary: Sendable {
    public var found = 0, converted = 0, alreadyConverted = 0, failed = 0
    public var encoded = 0, alreadyEncoded = 0, packed = 0
    public var convertSeconds = 0.0, encodeSeconds = 0.0, packSeconds = 0.0
    public var reportPath = "", hdf5Path: String? = nil

    public var description: String {
        var s = String(format: "convert: %d found, %d converted, %d already done, %d skipped as bad (%.1f s)",
                       found, converted, alreadyConverted, failed, convertSeconds)
        s += String(format: "\nencode:  %d encoded, %d already done (%.1f s)", encoded, alreadyEncoded, encodeSeconds)
        if let h = hdf5Path { s += String(format: "\nhdf5:    %d items packed into %@ (%.1f s)", packed, h, packSeconds) }
        if failed > 0 { s += "\nbad inputs are listed in \(reportPath)" }
        return s
    }
}

/// `haste preprocess` (spec/data.md §1): class-folder trees → ADM-cropped PNGs (images/), SD-VAE moments
/// (vae-sd/), both with reference names and dataset.json, and optionally one packed HDF5 file. Every output is
/// written atomically and dataset.json last, so a rerun skips finished items and never trusts half-written ones.
/// Item numbers are positions in the sorted source list: a bad input leaves a gap, so numbering is stable
/// across reruns (the reference loader pairs by sorted name, so gaps are harmless).
public final class Preprocessor {
    public let options: PreprocessOptions
    let vae: AutoencoderKL?
    var summary = PreprocessSummary()
    var imagesDir: String { "\(options.dest)/images" }
    var latentsDir: String { "\(options.dest)/vae-sd" }
    public var hdf5Path: String { "\(options.dest)/dataset.h5" }

    public init(options: PreprocessOptions, vae: AutoencoderKL?) throws {
        guard [256, 512].contains(options.resolution) else {
            throw HasteError.config(key: "resolution", detail: "\(options.resolution) is not 256 or 512")
        }
        if options.stage != .convert && vae == nil {
            throw HasteError.config(key: "vae-weights", detail: "the encode stage needs the SD-VAE: pass --vae-weights FILE (diffusion_pytorch_model.safetensors of stabilityai/sd-vae-ft-mse)")
        }
        self.options = options
        self.vae = vae
        summary.reportPath = "\(options.dest)/preprocess-report.tsv"
    }

    public func run() throws -> PreprocessSummary {
        try FileManager.default.createDirectory(atPath: options.dest, withIntermediateDirectories: true)
        if options.format == .hdf5 && FileManager.default.fileExists(atPath: hdf5Path) {
            summary.hdf5Path = hdf5Path
            return summary   // packed and renamed into place only when complete
        }
        removeStaleTemporaries()
        if options.stage != .encode { try convert() }
        if options.stage != .convert { try encode() }
        if options.format != .folder { try pack() }
        return summary
    }

    /// Temporaries (`*.tmp-<pid>…`) that an interrupted run left in images/ and vae-sd/: never finished work.
    func removeStaleTemporaries() {
        for dir in [imagesDir, latentsDir] {
            for name in (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String]) ?? []
            where AtomicFile.isTemporary((name as NSString).lastPathComponent) {
                try? FileManager.default.removeItem(atPath: "\(dir)/\(name)")
            }
        }
    }

    // MARK: convert

    enum Outcome { case pending, done, existing, failed(String) }

    func convert() throws {
        let start = Date()
        var items = try SourceTree.scan(options.source)
        let limit = min(options.maxImages ?? Int.max, items.items.count)
        items = SourceTree(items: Array(items.items.prefix(limit)), classNames: items.classNames)
        summary.found = limit
        var outcomes = [Outcome](repeating: .pending, count: limit)
        let progress = ProgressBar(label: "convert", total: limit, enabled: options.progress)
        let lock = NSLock()
        var next = 0
        let res = options.resolution, dir = imagesDir, level = options.pngLevel
        DispatchQueue.concurrentPerform(iterations: max(1, min(options.workers, limit))) { _ in
            while true {
                lock.lock(); let i = next; next += 1; lock.unlock()
                guard i < limit else { return }
                let outcome = Self.convertOne(items.items[i].path, to: "\(dir)/\(ReferenceNames.image(i))", resolution: res, pngLevel: level)
                lock.lock(); outcomes[i] = outcome; lock.unlock()
                progress.advance()
            }
        }
        progress.finish()
        var rows: [(String, Int?)] = [], bad: [(String, String)] = []
        for (i, o) in outcomes.enumerated() {
            switch o {
            case .done: summary.converted += 1; rows.append((ReferenceNames.image(i), items.items[i].label))
            case .existing: summary.alreadyConverted += 1; rows.append((ReferenceNames.image(i), items.items[i].label))
            case .failed(let why): bad.append((items.items[i].path, why))
            case .pending: break
            }
        }
        summary.failed = bad.count
        let report = "path\treason\n" + bad.map { "\($0.0)\t\($0.1.replacingOccurrences(of: "\n", with: " "))\n" }.joined()
        try writeAtomically(report, to: summary.reportPath)
        try writeAtomically(items.classNames.map { $0 + "\n" }.joined(), to: "\(options.dest)/class_names.txt")
        try writeAtomically(ReferenceNames.datasetJSON(rows), to: "\(imagesDir)/dataset.json")
        summary.convertSeconds = Date().timeIntervalSince(start)
    }

    /// What `convert` decodes: Pillow's pixel cap, and at most 64:1. The ADM crop scales the short side to the
    /// crop size, so its intermediate is S × S·aspect pixels: a 1×65500 PNG became 256 × 16.8 M (13 GB, minutes),
    /// and the kept crop would be under 1/64 of the picture anyway. 64:1 keeps every photo-like image (ImageNet's
    /// widest are far below it) and bounds the intermediate at 64 · S² pixels (50 MB at S = 512).
    public static let decodeLimits = ImageLimits(maxAspectRatio: 64)

    static func convertOne(_ path: String, to out: String, resolution: Int, pngLevel: Int) -> Outcome {
        if FileManager.default.fileExists(atPath: out) { return .existing }
        do {
            let img = try ImageDecoder.decodeRGB(path: path, limits: decodeLimits)
            guard img.width > 0 && img.height > 0 else { return .failed("empty image") }
            let crop = admCenterCrop(img, size: resolution)
            try FileManager.default.createDirectory(atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try PNGImage.write(crop.pixels, height: resolution, width: resolution, channels: 3, to: out, compressionLevel: pngLevel)
            return .done
        } catch {
            return .failed("\(error)")
        }
    }
}

func writeAtomically(_ text: String, to path: String) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
        throw HasteError.fileFormat(path: path, detail: "cannot write: \(error.localizedDescription)")
    }
}
