import Foundation
import HasteIO
import HasteModels
import HasteTensor

extension Preprocessor {
    /// The converted items: (index, image name, label) from images/ and its dataset.json (written last by the
    /// convert stage, so its presence means the stage finished).
    func convertedItems() throws -> [(idx: Int, name: String, label: Int?)] {
        let json = "\(imagesDir)/dataset.json"
        guard let data = FileManager.default.contents(atPath: json),
              let obj = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) as? [String: Any] else {
            throw HasteError.fileMissing(path: json, hint: "the convert stage has not finished: run `haste preprocess --stage convert` (or all) first.")
        }
        var labels: [String: Int] = [:]
        for row in (obj["labels"] as? [[Any]]) ?? [] where row.count == 2 {
            if let n = row[0] as? String, let l = row[1] as? Int { labels[n] = l }
        }
        let names = (FileManager.default.enumerator(atPath: imagesDir)?.allObjects as? [String] ?? [])
            .filter { $0.hasSuffix(".png") && $0.contains("/img") }.sorted()
        return names.compactMap { n in
            guard let idx = Int(n.dropFirst(9).dropLast(4)) else { return nil }   // 00000/img########.png
            return (idx, n, labels[n])
        }
    }

    /// A converted image, checked to be --resolution square.
    func readCrop(_ name: String) throws -> DecodedImage {
        let png = try PNGImage.read("\(imagesDir)/\(name)"), r = options.resolution
        guard png.width == r && png.height == r else {
            throw HasteError.fileFormat(path: "\(imagesDir)/\(name)", detail: "\(png.width)×\(png.height), expected \(r)×\(r): was images/ made with another --resolution?")
        }
        return png
    }

    /// Batched SD-VAE encoding (spec/data.md §1.2): x/127.5 − 1 → posterior (mean | std) float32 [8, R/8, R/8].
    /// The encoder has no cross-sample ops, but a different batch size changes BLAS blocking and so the last bits
    /// of the moments (STYLE §2.9); items whose .npy exists are skipped. Runs on the VAE's device.
    func encode() throws {
        guard let vae else { return }
        let start = Date()
        let items = Array(try convertedItems().prefix(options.maxImages ?? Int.max))
        let todo = items.filter { !FileManager.default.fileExists(atPath: "\(latentsDir)/\(ReferenceNames.moments($0.idx))") }
        summary.alreadyEncoded = items.count - todo.count
        let progress = ProgressBar(label: "encode ", total: todo.count, enabled: options.progress)
        let r = options.resolution
        for b in stride(from: 0, to: todo.count, by: options.batchSize) {
            let batch = Array(todo[b..<min(b + options.batchSize, todo.count)])
            var pixels: [UInt8] = []
            pixels.reserveCapacity(batch.count * r * r * 3)
            for item in batch {
                pixels += try readCrop(item.name).pixels
            }
            let x = Tensor(pixels, shape: [batch.count, r, r, 3], device: vae.store.device).permuted([0, 3, 1, 2]).contiguous().to(.float32) / 127.5 - 1.0
            let (mean, std) = noGrad { vae.encode(x) }
            let m = Tensor.cat([mean, std], axis: 1)
            for (k, item) in batch.enumerated() {
                let out = "\(latentsDir)/\(ReferenceNames.moments(item.idx))"
                try FileManager.default.createDirectory(atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try NpyFile.write(m.narrowed(0, start: k, length: 1).squeezed(0).contiguous(), to: out)
            }
            summary.encoded += batch.count
            progress.advance(batch.count)
        }
        progress.finish()
        try writeAtomically(ReferenceNames.datasetJSON(items.map { (ReferenceNames.moments($0.idx), $0.label) }), to: "\(latentsDir)/dataset.json")
        summary.encodeSeconds = Date().timeIntervalSince(start)
    }

    /// Packs the folder outputs into `<dest>/dataset.h5`, through `<dest>/dataset.tmp.h5` renamed at the end (a
    /// rerun after a crash redoes the packing). With `--format hdf5` the folder intermediates are then removed.
    func pack() throws {
        let start = Date()
        let items = try convertedItems()
        let withMoments = options.stage != .convert || FileManager.default.fileExists(atPath: "\(latentsDir)/dataset.json")
        let r = options.resolution
        // Moment shape from the first file ([8, R/8, R/8] for the SD-VAE; smaller test VAEs differ).
        let first = try items.first.flatMap { withMoments ? $0 : nil }.map { try NpyFile.header("\(latentsDir)/\(ReferenceNames.moments($0.idx))").shape }
        let (mc, side) = withMoments ? (first?[0] ?? 8, first?[1] ?? r / 8) : (0, 0)
        let classes = (try? String(contentsOfFile: "\(options.dest)/class_names.txt", encoding: .utf8))?
            .split(separator: "\n").map(String.init) ?? []
        let tmp = "\(options.dest)/dataset.tmp.h5"
        let file = try HDF5DatasetFile.create(tmp, count: items.count, resolution: r, momentChannels: mc,
                                              momentSide: side, classNames: classes)
        let progress = ProgressBar(label: "hdf5   ", total: items.count, enabled: options.progress)
        do {
            for (i, item) in items.enumerated() {
                let png = try readCrop(item.name)
                var chw = [UInt8](repeating: 0, count: 3 * r * r)
                chw.withUnsafeMutableBufferPointer { png.copyCHW(to: $0.baseAddress!) }
                var moments: [Float]? = nil
                if withMoments {
                    let path = "\(latentsDir)/\(ReferenceNames.moments(item.idx))"
                    let t = try NpyFile.read(path)
                    guard t.shape == [mc, side, side] else { throw HasteError.fileFormat(path: path, detail: "moments \(t.shape), expected [\(mc), \(side), \(side)]") }
                    moments = t.to(.float32).scalars(as: Float.self)
                }
                try file.write(i, image: chw, moments: moments, label: Int64(item.label ?? -1), filename: item.name)
                progress.advance()
            }
            try file.close()
        } catch {
            try? file.close()
            unlink(tmp)
            throw error
        }
        progress.finish()
        guard rename(tmp, hdf5Path) == 0 else { throw HasteError.fileFormat(path: hdf5Path, detail: "cannot move \(tmp) into place (errno \(errno))") }
        if options.format == .hdf5 && withMoments {
            for d in [imagesDir, latentsDir] { try? FileManager.default.removeItem(atPath: d) }
        }
        summary.packed = items.count
        summary.hdf5Path = hdf5Path
        summary.packSeconds = Date().timeIntervalSince(start)
    }
}
