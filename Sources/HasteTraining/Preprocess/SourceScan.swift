import Foundation
import HasteTensor

/// The source tree as the reference's dataset_tool.py sees it (spec/data.md §1.1 steps 1–2): files with a PIL
/// image extension, sorted by full path (code-point order, as Python), labelled by the sorted index of their
/// top-level folder (no labels with fewer than two top-level names), or by `<source>/dataset.json` if present.
/// Two trees are refused rather than guessed at: one with no images at all, and one labelled by folder where a
/// top-level folder holds no image. The reference numbers classes from the folders that have files, so an empty
/// folder would silently shift every later label (ImageNet's n01443537 = 1 would become 0 after an empty
/// n01440764) and samples of class k would no longer be class k; torchvision's ImageFolder refuses such trees too.
public struct SourceTree {
    public struct Item: Sendable { public let path: String, relative: String, label: Int? }
    public let items: [Item]
    public let classNames: [String]

    /// Extensions PIL registers for formats it can open (Image.registered_extensions(), common subset).
    static let imageExtensions: Set<String> = ["bmp", "dib", "gif", "jpg", "jpeg", "jpe", "jfif", "png", "apng", "ppm", "pgm",
                                               "pbm", "pnm", "tif", "tiff", "webp", "ico", "tga", "pcx", "sgi", "j2k", "jp2"]

    public static func scan(_ source: String) throws -> SourceTree {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: source, isDirectory: &isDir), isDir.boolValue else {
            throw HasteError.fileMissing(path: source, hint: "--source must be a folder of class folders (e.g. ILSVRC/Data/CLS-LOC/train).")
        }
        guard let walker = fm.enumerator(atPath: source) else { throw HasteError.fileFormat(path: source, detail: "cannot list the folder") }
        var rel: [String] = []
        while let f = walker.nextObject() as? String {
            let ext = (f as NSString).pathExtension.lowercased()
            if imageExtensions.contains(ext) { rel.append(f) }
        }
        guard !rel.isEmpty else {
            throw HasteError.fileFormat(path: source, detail: "no images in this folder or below (looked for the extensions PIL opens: \(imageExtensions.sorted().joined(separator: " "))); --source must be the folder holding the class folders, e.g. ILSVRC/Data/CLS-LOC/train")
        }
        rel.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let top = rel.map { $0.contains("/") ? String($0.split(separator: "/", maxSplits: 1)[0]) : "" }
        let names = Set(top).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        let given = try sourceLabels(source)
        if given == nil && names.count > 1 { try refuseEmptyClassFolders(source, classes: Set(names)) }
        let items = zip(rel, top).map { r, t in
            Item(path: "\(source)/\(r)", relative: r, label: given.map { $0[r] } ?? (names.count > 1 ? index[t] : nil))
        }
        return SourceTree(items: items, classNames: given == nil && names.count > 1 ? names : [])
    }

    /// Throws, naming them, if top-level folders of `source` hold no image while labels come from folder names.
    static func refuseEmptyClassFolders(_ source: String, classes: Set<String>) throws {
        let fm = FileManager.default
        let empty = try fm.contentsOfDirectory(atPath: source).filter { name in
            var isDir: ObjCBool = false
            return !classes.contains(name) && fm.fileExists(atPath: "\(source)/\(name)", isDirectory: &isDir) && isDir.boolValue
        }.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        guard !empty.isEmpty else { return }
        let list = empty.prefix(10).joined(separator: ", ") + (empty.count > 10 ? ", …" : "")
        throw HasteError.fileFormat(path: source, detail: "class folders without any image (\(empty.count) of \(empty.count + classes.count)): "
            + "\(list). Labels are the indices of the sorted names of the folders that hold images, so every class after an "
            + "empty folder would be renumbered. Restore its images (an interrupted copy or extraction?), delete the folder "
            + "if it is not a class, or give every image's label in \(source)/dataset.json "
            + "({\"labels\": [[\"n01440764/x.JPEG\", 0], ...]}).")
    }

    /// `<source>/dataset.json` {"labels": [[relative path, label], ...]}, if the source has one.
    static func sourceLabels(_ source: String) throws -> [String: Int]? {
        let path = "\(source)/dataset.json"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw HasteError.fileFormat(path: path, detail: "not JSON of the form {\"labels\": [[path, label], ...]}")
        }
        guard let rows = obj["labels"] as? [[Any]] else { return [:] }
        var out: [String: Int] = [:]
        for row in rows where row.count == 2 {
            if let p = row[0] as? String, let l = row[1] as? Int { out[p.replacingOccurrences(of: "\\", with: "/")] = l }
        }
        return out
    }
}

/// Reference file names (spec/data.md §1.1 step 4, §1.2 step 3).
public enum ReferenceNames {
    public static func image(_ idx: Int) -> String { let s = String(format: "%08d", idx); return "\(s.prefix(5))/img\(s).png" }
    public static func moments(_ idx: Int) -> String { let s = String(format: "%08d", idx); return "\(s.prefix(5))/img-mean-std-\(s).npy" }

    /// `dataset.json` exactly as Python's json.dump writes it: {"labels": [["00000/img00000000.png", 6], ...]},
    /// or {"labels": null} when any label is missing.
    public static func datasetJSON(_ rows: [(String, Int?)]) -> String {
        if rows.contains(where: { $0.1 == nil }) { return "{\"labels\": null}" }
        return "{\"labels\": [" + rows.map { "[\"\($0.0)\", \($0.1!)]" }.joined(separator: ", ") + "]}"
    }
}
