import Foundation
import HasteTensor

/// The source tree as the reference's dataset_tool.py sees it (spec/data.md §1.1 steps 1–2): files with a PIL
/// image extension, sorted by full path (code-point order, as Python), labelled by the sorted index of their
/// top-level folder (no labels with fewer than two top-level names), or by `<source>/dataset.json` if present.
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
        rel.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let top = rel.map { $0.contains("/") ? String($0.split(separator: "/", maxSplits: 1)[0]) : "" }
        let names = Set(top).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        let given = try sourceLabels(source)
        let items = zip(rel, top).map { r, t in
            Item(path: "\(source)/\(r)", relative: r, label: given.map { $0[r] } ?? (names.count > 1 ? index[t] : nil))
        }
        return SourceTree(items: items, classNames: given == nil && names.count > 1 ? names : [])
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
