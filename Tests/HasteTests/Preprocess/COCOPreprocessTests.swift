import Foundation
import Testing
@testable import HasteIO
@testable import HasteModels
@testable import HasteTensor
@testable import HasteText
@testable import HasteTraining

/// U-ViT's crop (centred square, PIL LANCZOS) equals Pillow 13's exactly on synthetic images (Scripts/fixtures/
/// coco_crop.py: upsampling 61×97 → 256, downsampling 150×113 and 40×40 → 48), and the legacy PNG values equal
/// torchvision save_image's for every pixel value.
@Test func cocoCropMatchesPillowLanczos() throws {
    let f = try Fixture("coco_crop_pil.safetensors")
    for name in ["wide", "tall", "square"] {
        let input = f["\(name).input"], want = f["\(name).crop"]
        let img = DecodedImage(width: input.shape[1], height: input.shape[0], channels: 3, pixels: input.scalars(as: UInt8.self))
        let crop = cocoCenterCrop(img, size: want.shape[0])
        #expect([crop.height, crop.width, 3] == want.shape)
        #expect(maxDiff(crop.pixels, want.scalars(as: UInt8.self)) == 0, "\(name): max difference \(maxDiff(crop.pixels, want.scalars(as: UInt8.self)))")
    }
    #expect(cocoLegacyPNGPixels((0...255).map(UInt8.init)) == f["legacy_png"].scalars(as: UInt8.self))
}

/// The whole extraction on the tiny world: reference names and idx order, PNG = crop, moments = quant_conv(encoder)
/// of the crop (mean | log-variance), caption files = text features of each caption in list order, empty context;
/// bad, missing and captionless images reported; the packed file equals the folder; a rerun redoes nothing.
@Test func cocoPreprocessWritesTheReferenceLayout() throws {
    try withTemporaryDirectory { tmp in
        let w = try COCOWorld(tmp)
        let dest = "\(tmp)/coco256_features"
        let s = try COCOPreprocessor(options: w.options(dest: dest, format: .both), vae: w.vae, text: w.text).run()
        #expect(s.images == 6 && s.extracted == 3 && s.failed == 2 && s.noCaptions == 1 && s.captions == 6 && s.packed == 3, "\(s)")
        let split = "\(dest)/train"
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: split))
        #expect(names == ["0.png", "0.npy", "0_0.npy", "0_1.npy", "1.png", "1.npy", "1_0.npy", "2.png", "2.npy", "2_0.npy", "2_1.npy", "2_2.npy"], "\(names.sorted())")
        for (idx, id) in [7, 13, 100].enumerated() {
            let crop = cocoCenterCrop(w.sources[id]!, size: 256).pixels
            #expect(try PNGImage.read("\(split)/\(idx).png").pixels == crop, "\(idx).png is the crop of image \(id)")
            let x = Tensor(crop, shape: [1, 256, 256, 3]).permuted([0, 3, 1, 2]).contiguous().to(.float32) / 127.5 - 1.0
            let want = noGrad { w.vae.moments(x) }.squeezed(0).contiguous()
            let h = try NpyFile.header("\(split)/\(idx).npy")
            #expect(h.descr == "<f4" && h.version == "1.0" && !h.fortranOrder && h.shape == [8, 32, 32])
            // Batched with another image in the run (BLAS blocking): float rounding only.
            expectClose(try NpyFile.read("\(split)/\(idx).npy"), want, atol: 1e-5, rtol: 1e-4, "moments of \(idx)")
            for (k, caption) in w.captions[id]!.enumerated() {
                expectClose(try NpyFile.read("\(split)/\(idx)_\(k).npy"), w.text.encode(caption), atol: 1e-5, rtol: 1e-4, "\(idx)_\(k) = '\(caption)'")
            }
        }
        // Unclamped log-variance, not std: the tiny VAE's channels 4–7 have negative values.
        #expect(try NpyFile.read("\(split)/0.npy").narrowed(0, start: 4, length: 4).contiguous().scalars(as: Float.self).contains { $0 < 0 })
        expectClose(try NpyFile.read("\(dest)/empty_context.npy"), w.text.encode(""), atol: 1e-6, rtol: 1e-6, "empty context")
        #expect(w.text.tokenize([""])[0].prefix(3) == [CLIPTokenizer.startOfText, CLIPTokenizer.endOfText, CLIPTokenizer.padding])
        let report = try String(contentsOfFile: "\(dest)/coco-train-report.tsv", encoding: .utf8)
        #expect(report.hasPrefix("image_id\tpath\treason\n"))
        for (id, why) in [(42, "42.png"), (55, "55.png"), (77, "no captions")] {
            #expect(report.contains("\n\(id)\t") && report.contains(why), "report lacks image \(id): \(report)")
        }
        let folder = try COCOFeatureFolder(root: dest, split: "train", checkEveryFile: true)
        let packed = try COCOFeatureFile(path: "\(dest)/coco-train.h5")
        #expect(packed.imageIDs == [7, 13, 100] && packed.split == "train" && folder.resolution == 256)
        #expect((0..<3).map(packed.captionCount) == [2, 1, 3])
        try expectSameItems(folder, packed)
        // A rerun finds every image recorded; a stale temporary file is removed.
        _ = FileManager.default.createFile(atPath: "\(split)/3.npy.tmp-1-2", contents: Data([1]))
        let again = try COCOPreprocessor(options: w.options(dest: dest, format: .both), vae: w.vae, text: w.text).run()
        #expect(again.extracted == 0 && again.alreadyDone == 6, "\(again)")
        #expect(!FileManager.default.fileExists(atPath: "\(split)/3.npy.tmp-1-2"))
    }
}

/// A run stopped part way (here: --max-images 3, then a manifest row cut short by a kill, and files of an image
/// whose row was never written) continues where it stopped and ends with the same folder as one uninterrupted run.
@Test func cocoPreprocessResumesAfterAPartialRun() throws {
    try withTemporaryDirectory { tmp in
        let w = try COCOWorld(tmp)
        let whole = "\(tmp)/whole", parts = "\(tmp)/parts"
        _ = try COCOPreprocessor(options: w.options(dest: whole, resolution: 64), vae: w.vae, text: w.text).run()
        var first = w.options(dest: parts, resolution: 64)
        first.maxImages = 3   // ids 7, 13, 42: idx 0 and 1
        let s1 = try COCOPreprocessor(options: first, vae: w.vae, text: w.text).run()
        #expect(s1.extracted == 2 && s1.failed == 1)
        let manifest = "\(parts)/coco-train-manifest.tsv"
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: manifest))
        try h.seekToEnd(); try h.write(contentsOf: Data("55\t-\tmis".utf8)); try h.close()   // killed mid-row
        try Data([0, 1, 2]).write(to: URL(fileURLWithPath: "\(parts)/train/2_0.npy"))           // written, not recorded
        let s2 = try COCOPreprocessor(options: w.options(dest: parts, resolution: 64), vae: w.vae, text: w.text).run()
        #expect(s2.alreadyDone == 3 && s2.extracted == 1 && s2.failed == 2 && s2.noCaptions == 1, "\(s2)")
        let a = try COCOFeatureFolder(root: whole, split: "train"), b = try COCOFeatureFolder(root: parts, split: "train")
        #expect(a.count == 3 && b.count == 3)
        for i in 0..<3 {
            #expect(try a.image(i).scalars(as: UInt8.self) == b.image(i).scalars(as: UInt8.self))
            expectClose(try b.moments(i), try a.moments(i), atol: 1e-5, rtol: 1e-4, "moments \(i)")
            for k in 0..<a.captionCount(i) { expectClose(try b.caption(i, k), try a.caption(i, k), atol: 1e-5, rtol: 1e-4, "caption \(i)_\(k)") }
        }
        let rows = try String(contentsOfFile: manifest, encoding: .utf8).split(separator: "\n").dropFirst()
            .map { $0.split(separator: "\t", omittingEmptySubsequences: false).prefix(2).joined(separator: " ") }
        #expect(rows == ["7 0", "13 1", "42 -", "55 -", "77 -", "100 2"], "\(rows)")
        // Other settings than the recorded ones are refused, naming the manifest.
        var legacy = w.options(dest: parts, resolution: 64)
        legacy.legacyPNG = true
        expectFileError(manifest, "legacy-png=1", "Delete") { _ = try COCOPreprocessor(options: legacy, vae: w.vae, text: w.text).run() }
    }
}

/// --coco-legacy-png stores the reference's distorted PNG; the moments are still those of the true crop.
@Test func cocoLegacyPNGReproducesTheReference() throws {
    try withTemporaryDirectory { tmp in
        let w = try COCOWorld(tmp)
        var o = w.options(dest: "\(tmp)/legacy", resolution: 64)
        (o.legacyPNG, o.maxImages) = (true, 1)
        _ = try COCOPreprocessor(options: o, vae: w.vae, text: w.text).run()
        let crop = cocoCenterCrop(w.sources[7]!, size: 64).pixels
        let stored = try PNGImage.read("\(tmp)/legacy/train/0.png").pixels
        #expect(stored == crop.map { UInt8(max(0, 2 * Int($0) - 255)) })
        let x = Tensor(crop, shape: [1, 64, 64, 3]).permuted([0, 3, 1, 2]).contiguous().to(.float32) / 127.5 - 1.0
        expectClose(try NpyFile.read("\(tmp)/legacy/train/0.npy"), noGrad { w.vae.moments(x) }.squeezed(0), atol: 1e-5, rtol: 1e-4, "moments of the true crop")
    }
}
