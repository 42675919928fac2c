import Foundation
import Testing
import HasteIO
import HasteModels
import HasteTensor
import HasteTraining

/// A tiny reference-layout COCO feature folder (spec/data.md §2.1): `items` 16-px PNGs, moments [8, 4, 4] (mean |
/// log-variance), 1 to 3 captions [5, 8] per image, `empty_context.npy` at the root.
func writeTinyCOCO(_ root: String, items: Int = 8) throws {
    try FileManager.default.createDirectory(atPath: "\(root)/train", withIntermediateDirectories: true)
    try NpyFile.write(Tensor.randn([5, 8], seed: 1), to: "\(root)/empty_context.npy")
    for i in 0..<items {
        let px = Tensor.rand([16 * 16 * 3], seed: UInt64(50 + i)).scalars(as: Float.self).map { UInt8($0 * 255) }
        try PNGImage.write(px, height: 16, width: 16, channels: 3, to: "\(root)/train/\(i).png")
        try NpyFile.write(Tensor.randn([8, 4, 4], seed: UInt64(100 + i)), to: "\(root)/train/\(i).npy")
        for k in 0..<(1 + i % 3) { try NpyFile.write(Tensor.randn([5, 8], seed: UInt64(1000 + 10 * i + k)), to: "\(root)/train/\(i)_\(k).npy") }
    }
}

/// A run config for the tiny COCO folder: MMDiT-D2/1 at width 16 (16 image tokens), a random 3-block teacher on a
/// 4×4 grid, alignment until step 3 of 4, checkpoints every 2 steps (8 items / batch 4: 2 batches per epoch).
func writeTinyT2IConfig(_ dir: String, exp: String = "t2i") throws -> String {
    var c = TrainConfig()
    (c.teacherEmbedDim, c.teacherDepth, c.teacherHeads, c.teacherPatchSize, c.teacherGrid, c.encType) = (12, 3, 3, 2, 4, "dinov2-vit-s")
    let teacher = "\(dir)/teacher.safetensors"
    if !FileManager.default.fileExists(atPath: teacher) {
        try SafetensorsWriter.write(DINOv2(try c.teacherConfig(), seed: 9).store.stateDict(), to: teacher)
    }
    let yaml = """
        exp-name: \(exp)
        output-dir: \(dir)/runs
        dataset: coco
        data-dir: \(dir)/coco
        model: MMDiT-D2/1
        hidden-size: 16
        num-heads: 2
        encoder-depth: 2
        projector-dim: 8
        enc-type: dinov2-vit-s
        enc-weights: \(teacher)
        teacher-patch-size: 2
        teacher-grid: 4
        teacher-embed-dim: 12
        teacher-depth: 3
        teacher-heads: 3
        attn-student-layers: [0, 1]
        attn-teacher-layers: [1, 2]
        early-stop-point: 3
        batch-size: 4
        max-train-steps: 4
        checkpointing-steps: 2
        sampling-steps: 1000
        learning-rate: 1.0e-3
        """
    let path = "\(dir)/\(exp).yaml"
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Test func t2iTrainsFromTheCommandLineAndResumesExactly() throws {
    let dir = temporaryDirectory()
    try writeTinyCOCO("\(dir)/coco")
    let whole = try runHaste(["train", try writeTinyT2IConfig(dir)])
    #expect(whole.status == 0, "\(whole.stderr)")
    #expect(whole.stderr.contains("training MMDiT-D2/1") && whole.stderr.contains("no SD-VAE for previews"), "\(whole.stderr)")
    let m = try metrics("\(dir)/runs/t2i")
    #expect(m.count == 4)
    for row in m {
        let step = row["step"] as! Int, attn = row["attn_loss"] as! Double, proj = row["proj_loss"] as! Double
        #expect((row["loss"] as! Double).isFinite)
        if step <= 3 { #expect(attn > 0 && proj != 0, "step \(step) aligns") } else { #expect(attn == 0 && proj == 0) }
    }
    // Interrupted at step 2 (an epoch boundary), resumed to 4: the same losses and weights, bit for bit.
    let split = try writeTinyT2IConfig(dir, exp: "t2i-resumed")
    #expect(try runHaste(["train", split, "--max-train-steps", "2"]).status == 0)
    let resumed = try runHaste(["train", split, "--resume-step", "2"])
    #expect(resumed.status == 0 && resumed.stderr.contains("resumed from"), "\(resumed.stderr)")
    let r = try metrics("\(dir)/runs/t2i-resumed").filter { ($0["step"] as! Int) > 2 }
    #expect(r.count == 2)
    for (a, b) in zip(m.suffix(2), r) {
        for key in ["loss", "proj_loss", "attn_loss", "grad_norm"] { #expect(a[key] as! Double == b[key] as! Double, "step \(a["step"]!) \(key)") }
    }
    let end = try SafetensorsFile(path: Checkpoint.path("\(dir)/runs/t2i", step: 4))
    let end2 = try SafetensorsFile(path: Checkpoint.path("\(dir)/runs/t2i-resumed", step: 4))
    for name in end.names where name.hasPrefix("ema.") || name.hasPrefix("opt.") {
        expectClose(try end2.tensor(name), try end.tensor(name), atol: 0, rtol: 0, name)
    }
    // A class-conditional model on caption data is refused at start-up, naming the fix.
    let sit = try runHaste(["train", split, "--model", "SiT-S/2", "--exp-name", "sit"])
    #expect(sit.status != 0 && sit.stderr.contains("class-conditional") && sit.stderr.contains("MMDiT"), "\(sit.stderr)")
}

/// The root and the split folder are both accepted; items read as the files say, log-variance turned into std.
@Test func cocoFolderReadsTheReferenceLayout() throws {
    let dir = temporaryDirectory()
    try writeTinyCOCO("\(dir)/coco")
    let root = try COCOFeatureFolder(dataDir: "\(dir)/coco"), split = try COCOFeatureFolder(dataDir: "\(dir)/coco/train/")
    #expect(root.path == split.path && root.count == 8 && split.count == 8 && root.contextShape == [5, 8])
    #expect((0..<8).map(root.captionCount) == [1, 2, 3, 1, 2, 3, 1, 2])
    let data = try CaptionDataset(source: root, choice: CaptionChoice(seed: 5, dropProbability: 0.3))
    #expect(data.sampleShape == [4, 4, 4] && data.contextShape == [5, 8])
    let batch = try data.batch([2, 5, 7], epoch: 1)
    let moments = try NpyFile.read("\(dir)/coco/train/5.npy")
    let mean = moments.narrowed(0, start: 0, length: 4), logvar = moments.narrowed(0, start: 4, length: 4)
    expectClose(batch.x0.select(axis: 0, index: 1), Tensor.cat([mean, (logvar * 0.5).exp()], axis: 0), atol: 1e-6, rtol: 1e-6, "mean | std")
    for (j, i) in [2, 5, 7].enumerated() {
        let expected = data.choice.dropped(item: i, epoch: 1) ? try NpyFile.read("\(dir)/coco/empty_context.npy")
            : try NpyFile.read("\(dir)/coco/train/\(i)_\(data.choice.caption(item: i, epoch: 1, count: root.captionCount(i))).npy")
        expectClose(try #require(batch.context).select(axis: 0, index: j), expected, atol: 0, rtol: 0, "caption of item \(i)")
    }
    let png = try PNGImage.read("\(dir)/coco/train/7.png")
    #expect(try #require(batch.images).select(axis: 0, index: 2).scalars(as: UInt8.self)
            == (0..<3).flatMap { ch in stride(from: ch, to: png.pixels.count, by: 3).map { png.pixels[$0] } })
}

/// Bad folders fail at start-up naming the file and what to do.
@Test func badCOCOFoldersAreRefusedNamingTheFile() throws {
    func message(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "accepted" } catch { return "\(error)" }
    }
    let dir = temporaryDirectory()
    try writeTinyCOCO("\(dir)/a")
    try FileManager.default.removeItem(atPath: "\(dir)/a/empty_context.npy")
    var e = message { try COCOFeatureFolder(dataDir: "\(dir)/a") }
    #expect(e.contains("\(dir)/a/empty_context.npy") && e.contains("haste preprocess --coco"), "\(e)")
    e = message { try COCOFeatureFolder(dataDir: "\(dir)/a/train") }
    #expect(e.contains("\(dir)/a/empty_context.npy"), "\(e)")
    e = message { try COCOFeatureFolder(dataDir: "\(dir)/nowhere") }
    #expect(e.contains("\(dir)/nowhere") && e.contains("data-dir must be the COCO feature root"), "\(e)")

    try writeTinyCOCO("\(dir)/b")
    try NpyFile.write(Tensor.randn([5, 9], seed: 2), to: "\(dir)/b/train/0_0.npy")
    e = message { try COCOFeatureFolder(dataDir: "\(dir)/b") }
    #expect(e.contains("0_0.npy") && e.contains("[5, 9]") && e.contains("[5, 8]"), "\(e)")
    let later = try COCOFeatureFolder(dataDir: "\(dir)/b", checkFirstCaption: false)
    e = message { try later.caption(0, 0) }
    #expect(e.contains("0_0.npy"), "\(e)")

    try writeTinyCOCO("\(dir)/c")
    for k in 0..<2 { try FileManager.default.removeItem(atPath: "\(dir)/c/train/4_\(k).npy") }
    e = message { try COCOFeatureFolder(dataDir: "\(dir)/c") }
    #expect(e.contains("4_0.npy") && e.contains("image 4 has no caption"), "\(e)")
    try writeTinyCOCO("\(dir)/d")
    try FileManager.default.removeItem(atPath: "\(dir)/d/train/2_1.npy")
    e = message { try COCOFeatureFolder(dataDir: "\(dir)/d") }
    #expect(e.contains("captions of image 2 are not numbered 0..<2"), "\(e)")
    try writeTinyCOCO("\(dir)/e")
    try FileManager.default.removeItem(atPath: "\(dir)/e/train/6.png")
    e = message { try COCOFeatureFolder(dataDir: "\(dir)/e") }
    #expect(e.contains("6.png"), "\(e)")
    try writeTinyCOCO("\(dir)/f")
    try FileManager.default.removeItem(atPath: "\(dir)/f/train/3.npy")
    e = message { try COCOFeatureFolder(dataDir: "\(dir)/f") }
    #expect(e.contains("3.npy is missing"), "\(e)")
}

/// Every shipped text-to-image config loads and resolves its models for the data it names (COCO: latents 4×32×32,
/// CLIP ViT-L/14 features [77, 768]; the demo: pixels 1×32×32, the random encoder's [77, 64]).
@Test func shippedTextToImageConfigsPassStartUpValidation() throws {
    let root = Launcher.root
    for (file, shape, context) in [("mmdit-xl-2-haste.yaml", [4, 32, 32], [77, 768]), ("mmdit-xl-2-reference.yaml", [4, 32, 32], [77, 768]),
                                   ("demo-t2i.yaml", [1, 32, 32], [77, 64])] {
        let c = try TrainConfig.load(file: "\(root)/configs/\(file)")
        let models = try c.resolveModels(sampleShape: shape, numClasses: c.numClasses, contextShape: context)
        guard case .mmdit(let m) = models.student else { Issue.record("\(file): not an MMDiT"); continue }
        #expect(models.teacher != nil && !models.pairs.isEmpty || c.attnCoeff == 0, "\(file)")
        if file.hasPrefix("mmdit-") {
            #expect(m == { var x = MMDiTConfig(); x.projectorDims = [768]; return x }(), "\(file): the reference MMDiT-XL/2")
            #expect(models.pairs.map(\.student) == (c.attnCoeff == 0 ? [] : [4, 5, 6, 7]) && c.earlyStopPoint == 150_000)
            #expect(c.dataset == "coco" && c.maxTrainSteps == 150_000 && c.projCoeff == 0.5)
        }
        if file == "demo-t2i.yaml" { #expect(c.dataset == "fashion-mnist-captions" && c.textEncoder.isEmpty && m.tokens == 64) }
    }
    #expect(try TrainConfig.load(file: "\(root)/configs/mmdit-xl-2-haste.yaml").attnCoeff == 0.5)
    #expect(try TrainConfig.load(file: "\(root)/configs/mmdit-xl-2-reference.yaml").attnCoeff == 0)
}

/// `data-dir` may name the packed file (or a root holding `coco-train.h5`): training reads the same items from it as
/// from the folder it was packed from.
@Test func cocoTrainingReadsThePackedFileLikeTheFolder() throws {
    let dir = temporaryDirectory()
    try writeTinyCOCO("\(dir)/coco")
    let folder = try COCOFeatureFolder(root: "\(dir)/coco", split: "train")
    try FileManager.default.createDirectory(atPath: "\(dir)/packed", withIntermediateDirectories: true)
    _ = try COCOPreprocessor.pack(folder, imageIDs: (0..<Int64(folder.count)).map { $0 + 100 }, to: "\(dir)/packed/coco-train.h5", progress: false)
    var c = TrainConfig()
    (c.dataset, c.dataDir, c.seed) = ("coco", "\(dir)/coco", 3)
    let fromFolder = try c.openDataset() as! CaptionDataset
    var results: [Batch] = []
    for path in ["\(dir)/packed/coco-train.h5", "\(dir)/packed"] {
        c.dataDir = path
        let packed = try c.openDataset() as! CaptionDataset
        #expect(packed.source is COCOFeatureFile && packed.count == fromFolder.count)
        results.append(try packed.batch([1, 4, 6], epoch: 2))
    }
    let expected = try fromFolder.batch([1, 4, 6], epoch: 2)
    for got in results {
        expectClose(got.x0, expected.x0, atol: 0, rtol: 0, "moments → x0")
        expectClose(try #require(got.context), try #require(expected.context), atol: 0, rtol: 0, "captions")
        #expect(got.images?.scalars(as: UInt8.self) == expected.images?.scalars(as: UInt8.self))
    }
}
