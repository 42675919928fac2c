import Foundation
import HasteIO
import HasteTensor

extension COCOPreprocessor {
    /// Packs a feature folder (one split) into `path` ("haste-coco-1"), through `<path>.tmp` renamed at the end.
    /// Returns the seconds it took.
    public static func pack(_ folder: COCOFeatureFolder, imageIDs: [Int64], to path: String, progress: Bool) throws -> Double {
        let start = Date()
        require(imageIDs.count == folder.count, "COCOPreprocessor.pack: \(imageIDs.count) ids for \(folder.count) images")
        let m = (0..<folder.count).reduce(0) { $0 + folder.captionCount($1) }
        let writer = try COCOFeatureFile.Writer(path: path, count: folder.count, captions: m, resolution: folder.resolution,
                                                momentShape: folder.momentShape, contextShape: folder.contextShape, split: folder.split)
        let bar = ProgressBar(label: "hdf5   ", total: folder.count, enabled: progress)
        do {
            for i in 0..<folder.count {
                let caps = try (0..<folder.captionCount(i)).map { try folder.caption(i, $0) }
                try writer.append(image: try folder.image(i), moments: try folder.moments(i), captions: Tensor.stack(caps, axis: 0), imageID: imageIDs[i])
                bar.advance()
            }
            try writer.finish(emptyContext: folder.emptyContext)
        } catch {
            writer.abandon()
            throw error
        }
        bar.finish()
        return Date().timeIntervalSince(start)
    }

    /// `--coco-import`: validates a feature folder made by the reference scripts (every file's header, the counts
    /// the reference loader relies on) and, unless `format` is folder, packs it into `<dest>/coco-<split>.h5`. The
    /// COCO image ids come from `annotations` when given (all its images in ascending id order, as the reference
    /// enumerates them: the counts must agree), else are stored as −1. Returns a summary to print.
    public static func importFolder(root: String, split: String, dest: String, format: PreprocessOptions.Format,
                                    annotations: String?, progress: Bool) throws -> String {
        let folder = try COCOFeatureFolder(root: root, split: split, checkEveryFile: true)
        let captions = (0..<folder.count).map(folder.captionCount)
        let histogram = Dictionary(grouping: captions, by: { $0 }).sorted { $0.key < $1.key }.map { "\($0.value.count)×\($0.key)" }
        var lines = ["\(folder.dir): \(folder.count) images, \(captions.reduce(0, +)) captions (images × captions: \(histogram.joined(separator: ", "))); "
                     + "crops \(folder.resolution) px, moments \(folder.momentShape), caption features \(folder.contextShape): valid"]
        if let want = COCOFeatureFolder.referenceCounts[split], want != folder.count {
            lines.append("note: the reference asserts \(want) \(split) images (spec/data.md §2.2); this folder has \(folder.count)")
        }
        guard format != .folder else { return lines.joined(separator: "\n") }
        var ids = [Int64](repeating: -1, count: folder.count)
        if let annotations {
            let ann = try COCOAnnotations(path: annotations)
            guard ann.images.count == folder.count else {
                throw HasteError.fileFormat(path: annotations, detail: "lists \(ann.images.count) images, the folder \(folder.dir) has \(folder.count): not the annotations it was made from")
            }
            ids = ann.images.map { Int64($0.id) }
        } else {
            lines.append("note: no --coco annotations given: image_ids are stored as -1")
        }
        try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
        let path = "\(dest)/coco-\(split).h5"
        let seconds = try pack(folder, imageIDs: ids, to: path, progress: progress)
        lines.append(String(format: "hdf5:    %d images packed into %@ (%.1f s)", folder.count, path, seconds))
        return lines.joined(separator: "\n")
    }
}
