import Foundation
import HasteTensor

/// A COCO captions file (`annotations/captions_train2014.json`): the images in ascending id order, each with its
/// file name and its captions in annotation-list order, as U-ViT's `MSCOCODatabase` (pycocotools) sees them
/// (spec/data.md §2.1). Errors name the file and the entry that is wrong.
public struct COCOAnnotations: Sendable {
    public struct Image: Sendable, Equatable {
        public let id: Int
        public let fileName: String
        public var captions: [String]
    }
    public let path: String
    /// Every image of the `images` list, ascending id.
    public let images: [Image]

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "--coco must be a COCO captions file such as annotations/captions_train2014.json (from cocodataset.org, annotations_trainval2014.zip).")
        }
        try self.init(data: data, path: path)
    }

    /// `fileNames: false` (generation, which reads only captions) accepts images without a `file_name`.
    public init(data: Data, path: String, fileNames: Bool = true) throws {
        self.path = path
        func bad(_ what: String) -> HasteError {
            .fileFormat(path: path, detail: "not a COCO captions file: \(what) (expected {\"images\": [{\"id\": 9, \"file_name\": \"COCO_train2014_000000000009.jpg\", ...}], \"annotations\": [{\"image_id\": 9, \"caption\": \"...\"}, ...]})")
        }
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: data) } catch {
            throw bad("not valid JSON (\((error as NSError).userInfo[NSDebugDescriptionErrorKey] ?? error.localizedDescription))")
        }
        guard let root = obj as? [String: Any] else { throw bad("the top level is not a JSON object") }
        guard let imgs = root["images"] as? [Any] else { throw bad("no \"images\" list") }
        guard let anns = root["annotations"] as? [Any] else { throw bad("no \"annotations\" list") }
        var byID: [Int: Int] = [:]
        var list: [Image] = []
        list.reserveCapacity(imgs.count)
        for (n, entry) in imgs.enumerated() {
            guard let e = entry as? [String: Any], let id = Self.integer(e["id"]) else { throw bad("images[\(n)] has no integer \"id\"") }
            let name = e["file_name"] as? String ?? ""
            if fileNames && name.isEmpty { throw bad("images[\(n)] has no non-empty \"file_name\"") }
            guard byID[id] == nil else { throw bad("images[\(n)]: image id \(id) appears twice") }
            byID[id] = list.count
            list.append(Image(id: id, fileName: name, captions: []))
        }
        for (n, entry) in anns.enumerated() {
            guard let e = entry as? [String: Any], let id = Self.integer(e["image_id"]), let caption = e["caption"] as? String else {
                throw bad("annotations[\(n)] has no integer \"image_id\" and string \"caption\" (an instances_*.json file instead of captions_*.json?)")
            }
            guard let i = byID[id] else { throw bad("annotations[\(n)] refers to image id \(id), which is not in \"images\"") }
            list[i].captions.append(caption)
        }
        images = list.sorted { $0.id < $1.id }
    }

    /// A JSON integer (9, not 9.5, "9" or true).
    static func integer(_ v: Any?) -> Int? {
        guard let n = v as? NSNumber, String(cString: n.objCType) != "c" else { return nil }
        return v as? Int
    }

    /// The split a captions file is for, from its name: captions_train2014.json → "train", captions_val2014.json → "val".
    public static func splitName(_ path: String) -> String? {
        let name = (path as NSString).lastPathComponent.lowercased()
        if name.contains("train") { return "train" }
        if name.contains("val") { return "val" }
        return nil
    }
}
