import Foundation
import Testing
@testable import HasteIO
@testable import HasteTraining

/// `haste preprocess --coco` as a user runs it: tiny VAE and CLIP files with their config.json, the synthetic vocabulary,
/// --format hdf5 (folder removed after packing, the .h5 readable); without --text-encoder a clear error that names
/// --coco-import; --coco-import of the result's folder form validates it.
@Test func cocoPreprocessCommandEndToEnd() throws {
    try withTemporaryDirectory { tmp in
        let w = try COCOWorld(tmp)
        let dest = "\(tmp)/features"
        let none = try runHaste(["preprocess", "--coco", w.annotations, "--source", w.images, "--dest", dest])
        #expect(none.status == 64 && none.stderr.contains("--text-encoder") && none.stderr.contains("--coco-import FEATURES_DIR"), "\(none)")
        let common = ["preprocess", "--coco", w.annotations, "--source", w.images, "--dest", dest, "--quiet", "--text-encoder", w.clip,
                      "--tokenizer-vocab", w.vocab, "--vae-weights", w.vaeFile, "--resolution", "256", "--batch-size", "3"]
        let r = try runHaste(common + ["--format", "both"])
        #expect(r.status == 0, "\(r)")
        let packed = try COCOFeatureFile(path: "\(dest)/coco-train.h5")
        #expect(packed.count == 3 && packed.imageIDs == [7, 13, 100] && packed.contextShape == [77, 8])
        let folder = try COCOFeatureFolder(root: dest, split: "train")
        try expectSameItems(folder, packed)
        let report = try FileInspector.inspect("\(dest)/coco-train.h5", verify: true)
        #expect(report.format == "hdf5" && report.metadata["format"] == "haste-coco-1" && report.metadata["resolution"] == "256")
        let shapes = Dictionary(uniqueKeysWithValues: report.tensors.map { ($0.name, $0.shape) })
        #expect(shapes == ["images": [3, 3, 256, 256], "moments": [3, 8, 32, 32], "image_ids": [3], "caption_offsets": [4],
                           "captions": [6, 77, 8], "empty_context": [77, 8]], "\(shapes)")
        let imported = try runHaste(["preprocess", "--coco-import", dest, "--quiet"])
        #expect(imported.status == 0, "\(imported)")
        let bad = try runHaste(["preprocess", "--coco-import", "\(tmp)/images", "--quiet"])
        #expect(bad.status != 0 && bad.stderr.contains("neither train/ nor val/"), "\(bad)")
        let wrong = try runHaste(["preprocess", "--source", w.images, "--dest", dest, "--text-encoder", w.clip])
        #expect(wrong.status == 64 && wrong.stderr.contains("--text-encoder is for MS-COCO"), "\(wrong)")
    }
}
