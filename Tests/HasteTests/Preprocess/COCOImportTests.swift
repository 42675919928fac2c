import Foundation
import Testing
@testable import HasteIO
@testable import HasteTensor
@testable import HasteTraining

/// A reference-style feature folder (as U-ViT's scripts leave it) with small shapes: n images with the given caption
/// counts, moments [8, 4, 4], captions [77, 6], 16 px PNGs. Values are distinct per file.
private func makeFeatureFolder(_ root: String, captions: [Int]) throws {
    try FileManager.default.createDirectory(atPath: "\(root)/train", withIntermediateDirectories: true)
    try NpyFile.write(Tensor((0..<(77 * 6)).map { Float($0) * 0.01 }, shape: [77, 6]), to: "\(root)/empty_context.npy")
    for (i, n) in captions.enumerated() {
        try PNGImage.write((0..<(16 * 16 * 3)).map { UInt8(truncatingIfNeeded: $0 * 7 + i) }, height: 16, width: 16, channels: 3, to: "\(root)/train/\(i).png")
        try NpyFile.write(Tensor((0..<128).map { Float($0 + 1000 * i) }, shape: [8, 4, 4]), to: "\(root)/train/\(i).npy")
        for k in 0..<n { try NpyFile.write(Tensor((0..<(77 * 6)).map { Float($0 - 50 * k + 7 * i) }, shape: [77, 6]), to: "\(root)/train/\(i)_\(k).npy") }
    }
}

/// Importing a valid folder validates it and packs it; the packed file reads back the same items; with the
/// annotations the image ids are kept, with mismatched annotations a clear error.
@Test func cocoImportPacksAValidReferenceFolder() throws {
    try withTemporaryDirectory { tmp in
        try makeFeatureFolder("\(tmp)/ref", captions: [5, 6, 5, 7])
        let text = try COCOPreprocessor.importFolder(root: "\(tmp)/ref", split: "train", dest: "\(tmp)/out", format: .hdf5, annotations: nil, progress: false)
        #expect(text.contains("4 images, 23 captions") && text.contains("valid") && text.contains("82783 train images"), "\(text)")
        let folder = try COCOFeatureFolder(root: "\(tmp)/ref", split: "train")
        let packed = try COCOFeatureFile(path: "\(tmp)/out/coco-train.h5")
        #expect(packed.imageIDs == [-1, -1, -1, -1] && packed.momentShape == [8, 4, 4] && packed.contextShape == [77, 6])
        try expectSameItems(folder, packed)
        // The caption of image 2, k 3 is the file's values (not a neighbour's): offsets are right.
        #expect(try packed.caption(3, 6).scalars(as: Float.self) == NpyFile.read("\(tmp)/ref/train/3_6.npy").scalars(as: Float.self))
        let ann = "\(tmp)/captions_train2014.json"
        try #"{"images": [{"id": 5, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}, {"id": 9, "file_name": "c.jpg"}], "annotations": []}"#.write(toFile: ann, atomically: true, encoding: .utf8)
        expectFileError(ann, "lists 3 images", "has 4") {
            _ = try COCOPreprocessor.importFolder(root: "\(tmp)/ref", split: "train", dest: "\(tmp)/out2", format: .hdf5, annotations: ann, progress: false)
        }
        try #"{"images": [{"id": 5, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}, {"id": 9, "file_name": "c.jpg"}, {"id": 1, "file_name": "d.jpg"}], "annotations": []}"#.write(toFile: ann, atomically: true, encoding: .utf8)
        _ = try COCOPreprocessor.importFolder(root: "\(tmp)/ref", split: "train", dest: "\(tmp)/out2", format: .both, annotations: ann, progress: false)
        #expect(try COCOFeatureFile(path: "\(tmp)/out2/coco-train.h5").imageIDs == [1, 3, 5, 9])
        // Not a COCO file: the format tag is checked.
        let other = try HDF5DatasetFile.create("\(tmp)/dataset.h5", count: 1, resolution: 16, momentChannels: 0, momentSide: 0, classNames: [])
        try other.close()
        expectFileError("\(tmp)/dataset.h5", "haste-dataset-1", "haste-coco-1") { _ = try COCOFeatureFile(path: "\(tmp)/dataset.h5") }
    }
}

/// Each way a reference folder can be broken is named: the file and what is wrong.
@Test func cocoImportNamesWhatIsWrong() throws {
    try withTemporaryDirectory { tmp in
        func broken(_ name: String, _ damage: (String) throws -> Void) throws -> String {
            let root = "\(tmp)/\(name)"
            try makeFeatureFolder(root, captions: [2, 3, 1])
            try damage(root)
            return root
        }
        let fm = FileManager.default
        let noEmpty = try broken("noempty") { try fm.removeItem(atPath: "\($0)/empty_context.npy") }
        expectFileError("\(noEmpty)/empty_context.npy", "root of the feature folder") { _ = try COCOFeatureFolder(root: noEmpty, split: "train") }
        expectFileError("\(tmp)/nowhere/train", "--split") { _ = try COCOFeatureFolder(root: "\(tmp)/nowhere", split: "train") }
        let cases: [(String, (String) throws -> Void, String)] = [
            ("nopng", { try fm.removeItem(atPath: "\($0)/train/1.png") }, "1.png is missing"),
            ("gap", { try fm.removeItem(atPath: "\($0)/train/1_1.npy") }, "captions of image 1 are not numbered 0..<2"),
            ("nocaption", { try fm.removeItem(atPath: "\($0)/train/2_0.npy") }, "image 2 has no caption file 2_0.npy"),
            ("hole", { try fm.removeItem(atPath: "\($0)/train/1.npy") }, "2_0.npy: captions of image 2, which has no 2.npy"),
            ("stray", { try NpyFile.write(Tensor.zeros([2]), to: "\($0)/train/extra.npy") }, "extra.npy: a .npy file not named"),
            ("shape", { try NpyFile.write(Tensor.zeros([77, 5]), to: "\($0)/train/2_0.npy") }, "2_0.npy: <f4 [77, 5], expected <f4 [77, 6]"),
            ("moments", { try NpyFile.write(Tensor.zeros([8, 4, 2]), to: "\($0)/train/1.npy") }, "1.npy: <f4 [8, 4, 2], expected <f4 [8, 4, 4]"),
            ("side", { try PNGImage.write([UInt8](repeating: 0, count: 8 * 8 * 3), height: 8, width: 8, channels: 3, to: "\($0)/train/2.png") }, "2.png: 8 px, expected 16"),
        ]
        for (name, damage, phrase) in cases {
            let root = try broken(name, damage)
            expectFileError("\(root)/train", phrase) {
                _ = try COCOPreprocessor.importFolder(root: root, split: "train", dest: "\(root)/out", format: .hdf5, annotations: nil, progress: false)
            }
            #expect(!fm.fileExists(atPath: "\(root)/out/coco-train.h5"), "\(name): nothing packed")
        }
    }
}

/// Captions files that are not what they should be: the file is named with what is wrong.
@Test func cocoAnnotationErrorsNameTheFileAndTheEntry() throws {
    try withTemporaryDirectory { tmp in
        let cases: [(String, String)] = [
            ("{\"images\": [", "not valid JSON"),
            ("[1, 2]", "the top level is not a JSON object"),
            ("{\"annotations\": []}", "no \"images\" list"),
            ("{\"images\": [], \"annotations\": {}}", "no \"annotations\" list"),
            ("{\"images\": [{\"id\": 1}], \"annotations\": []}", "images[0] has no non-empty \"file_name\""),
            ("{\"images\": [{\"id\": 1, \"file_name\": \"a\"}, {\"id\": 1, \"file_name\": \"b\"}], \"annotations\": []}", "images[1]: image id 1 appears twice"),
            ("{\"images\": [{\"id\": 1, \"file_name\": \"a\"}], \"annotations\": [{\"image_id\": 1, \"bbox\": [0, 0, 1, 1]}]}", "instances_*.json"),
            ("{\"images\": [{\"id\": 1, \"file_name\": \"a\"}], \"annotations\": [{\"image_id\": 2, \"caption\": \"x\"}]}", "annotations[0] refers to image id 2"),
            ("{\"images\": [{\"id\": 1.5, \"file_name\": \"a\"}], \"annotations\": []}", "images[0] has no integer"),
        ]
        for (n, (json, phrase)) in cases.enumerated() {
            let path = "\(tmp)/ann\(n).json"
            try json.write(toFile: path, atomically: true, encoding: .utf8)
            expectFileError(path, phrase) { _ = try COCOAnnotations(path: path) }
        }
        expectFileError("\(tmp)/missing.json", "captions_train2014.json") { _ = try COCOAnnotations(path: "\(tmp)/missing.json") }
        #expect(COCOAnnotations.splitName("a/captions_val2014.json") == "val" && COCOAnnotations.splitName("captions_train2017.json") == "train")
        #expect(COCOAnnotations.splitName("mine.json") == nil)
    }
}
