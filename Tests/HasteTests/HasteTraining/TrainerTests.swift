import Foundation
import Testing
import HasteIO
import HasteModels
import HasteNN
import HasteTensor
import HasteTraining

/// 24 random 3×8×8 images in 3 classes: enough for a few steps of a tiny run.
final class SyntheticDataset: TrainingDataset {
    let images: [UInt8], labels: [Int64]
    let count = 24, numClasses = 3, sampleShape = [3, 8, 8], hasImages = true, hasLatents = false
    init() {
        let u = Tensor.rand([24 * 192], seed: 42).scalars(as: Float.self)
        images = u.map { UInt8($0 * 255) }
        labels = (0..<24).map { Int64($0 % 3) }
    }
    func batch(_ indices: [Int]) throws -> Batch {
        var px: [UInt8] = []
        for i in indices { px += images[(i * 192)..<((i + 1) * 192)] }
        let img = Tensor(px, shape: [indices.count, 3, 8, 8])
        return Batch(images: img, x0: img.to(.float32) / 127.5 - 1.0, moments: false,
                     labels: Tensor(indices.map { labels[$0] }, shape: [indices.count]))
    }
}

/// A tiny HASTE run: student 3 blocks, teacher 3 blocks, tokens 16 on both sides.
func tinyRunConfig(_ dir: String) -> TrainConfig {
    var c = TrainConfig()
    (c.outputDir, c.expName, c.model) = (dir, "run", "SiT-S/2")
    (c.hiddenSize, c.depth, c.numHeads, c.encoderDepth, c.projectorDim) = (16, 3, 2, 2, 8)
    (c.encType, c.teacherEmbedDim, c.teacherDepth, c.teacherHeads, c.teacherPatchSize, c.teacherGrid) = ("dinov2-vit-s", 12, 3, 3, 2, 4)
    (c.attnStudentLayers, c.attnTeacherLayers) = ([0, 1], [1, 2])
    (c.batchSize, c.maxTrainSteps, c.checkpointingSteps, c.samplingSteps, c.earlyStopPoint) = (4, 4, 2, 1000, 2)
    (c.learningRate, c.sampleCount, c.sampleNumSteps) = (1e-3, 4, 2)
    c.mixedPrecision = "no"         // float32 on every device (the device tests compare it with the CPU; `auto` is bf16 on CUDA)
    return c
}

/// Writes a random tiny teacher where `tinyRunConfig` expects it and returns the path.
func writeTinyTeacher(_ dir: String, _ c: TrainConfig) throws -> String {
    let teacher = DINOv2(try c.teacherConfig(), seed: 9)
    let path = "\(dir)/teacher.safetensors"
    try SafetensorsWriter.write(teacher.store.stateDict(), to: path)
    return path
}

/// The test process's scratch root: every `temporaryDirectory()` lies under it, and it is removed when the process
/// exits (the runs, checkpoints and samples the tests write; left behind, a day of test runs filled /tmp with
/// thousands of directories). Subprocesses the tests start (haste, mpirun) end before their test returns.
enum TestScratch {
    static let root: String = {
        let root = NSTemporaryDirectory() + "haste-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: TestScratch.root) }
        return root
    }()
}

func temporaryDirectory() -> String {
    let dir = TestScratch.root + "/haste-test-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func metrics(_ run: String) throws -> [[String: Any]] {
    try String(contentsOfFile: "\(run)/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
        try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
    }
}

@Test func earlyStopTurnsAlignmentOffAndFreezesProjectors() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    c.encWeights = try writeTinyTeacher(dir, c)
    let trainer = try Trainer(config: c, dataset: SyntheticDataset())
    try trainer.train()
    let m = try metrics("\(dir)/run")
    #expect(m.count == 4)
    for row in m {
        let step = row["step"] as! Int
        let attn = row["attn_loss"] as! Double, proj = row["proj_loss"] as! Double
        if step <= 2 { #expect(attn > 0 && proj != 0, "step \(step) aligns") } else { #expect(attn == 0 && proj == 0, "step \(step) is denoising only") }
    }
    // Projector weights after the stop equal those at the step-2 checkpoint: AdamW skipped them.
    let at2 = try SafetensorsFile(path: Checkpoint.path("\(dir)/run", step: 2))
    let final = trainer.student.store.stateDict().first { $0.0 == "projectors.0.0.weight" }!.1
    expectClose(final, try at2.tensor("model.projectors.0.0.weight"), atol: 0, rtol: 0, "frozen projector")
    let block = trainer.student.store.stateDict().first { $0.0 == "blocks.0.attn.qkv.weight" }!.1
    #expect(try (block - at2.tensor("model.blocks.0.attn.qkv.weight")).abs().max().item() > 0)
}

@Test func resumingReproducesTheUninterruptedRunBitForBit() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    c.encWeights = try writeTinyTeacher(dir, c)
    try Trainer(config: c, dataset: SyntheticDataset()).train()
    let straight = try metrics("\(dir)/run").map { $0["loss"] as! Double }

    var first = c
    first.expName = "split"
    first.maxTrainSteps = 2
    try Trainer(config: first, dataset: SyntheticDataset()).train()
    var second = first
    second.maxTrainSteps = 4
    second.resumeStep = 2
    try Trainer(config: second, dataset: SyntheticDataset()).train()
    let resumed = try metrics("\(dir)/split").map { $0["loss"] as! Double }
    #expect(resumed == straight)
    #expect(FileManager.default.fileExists(atPath: "\(dir)/split/loss.png"))
}

@Test func configErrorsNameTheKeyAndTheFix() throws {
    func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return "\(error)" }
    }
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("proj-cofe", "0.5")]) }.contains("proj-cofe"))
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("batch-size", "many")]) }.contains("batch-size"))
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("path-type", "spiral")]) }.contains("linear, cosine"))
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    c.attnStudentLayers = [0, 2]                                 // 2 ≥ encoder-depth 2
    #expect(message { _ = try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3) }.contains("attn-student-layers"))
    c = tinyRunConfig(dir)
    c.attnHeads = 5
    #expect(message { _ = try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3) }.contains("attn-heads"))
    c = tinyRunConfig(dir)
    c.teacherGrid = 5
    #expect(message { _ = try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3) }.contains("tokens"))
    c = tinyRunConfig(dir)
    (c.dataset, c.dataDir) = ("imagenet", "\(dir)/nowhere")
    #expect(message { _ = try c.openDataset() }.contains("nowhere"))
    c = tinyRunConfig(dir)
    #expect(message { _ = try Trainer(config: c, dataset: SyntheticDataset()) }.contains("enc-weights"))
}

@Test func configFilesLoadAndFlagsOverrideThem() throws {
    let dir = temporaryDirectory()
    let file = "\(dir)/c.yaml"
    try "model: SiT-B/2\nproj-coeff: 0.25\nattn-student-layers: [1, 2]\nlearning-rate: 2e-4\n".write(toFile: file, atomically: true, encoding: .utf8)
    let c = try TrainConfig.load(file: file, overrides: [("proj-coeff", "0.75"), ("early-stop-point", "2.5e5")])
    #expect(c.model == "SiT-B/2" && c.projCoeff == 0.75 && c.attnStudentLayers == [1, 2] && c.learningRate == 2e-4)
    #expect(c.earlyStopPoint == 250_000 && c.attnCoeff == 0.5)
    let again = try TrainConfig.load(file: nil, overrides: [])
    #expect(again == TrainConfig())
    try c.yaml().write(toFile: "\(dir)/resolved.yaml", atomically: true, encoding: .utf8)
    #expect(try TrainConfig.load(file: "\(dir)/resolved.yaml") == c)
}

@Test func shippedConfigsLoadAndThePaperRunsAreComplete() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    let files = try FileManager.default.contentsOfDirectory(atPath: "\(root)/configs").filter { $0.hasSuffix(".yaml") }
    #expect(files.count >= 5)
    let allKeys = Set(try TrainConfig().yaml().split(separator: "\n").map { String($0.split(separator: ":")[0]) })
    for f in files {
        let c = try TrainConfig.load(file: "\(root)/configs/\(f)")
        if f.hasPrefix("sit-") || f.hasPrefix("mmdit-") {
            let text = try String(contentsOfFile: "\(root)/configs/\(f)", encoding: .utf8)
            let keys = Set(text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { String($0.split(separator: ":")[0]) })
            #expect(keys == allKeys, "\(f) lists every key (missing: \(allKeys.subtracting(keys)))")
            #expect(c.resolution == 256 && c.pathType == .linear)
        }
    }
    let haste = try TrainConfig.load(file: "\(root)/configs/sit-xl-2-haste.yaml")
    #expect(haste.model == "SiT-XL/2" && haste.earlyStopPoint == 250_000 && haste.projCoeff == 0.5 && haste.attnCoeff == 0.5)
    #expect(try TrainConfig.load(file: "\(root)/configs/sit-xl-2-repa.yaml").attnCoeff == 0)
}

/// Pixels that are NaN: every step's loss is non-finite.
final class PoisonedDataset: TrainingDataset {
    let inner = SyntheticDataset()
    var count: Int { inner.count }
    var numClasses: Int { inner.numClasses }
    var sampleShape: [Int] { inner.sampleShape }
    let hasImages = true, hasLatents = false
    func batch(_ indices: [Int]) throws -> Batch {
        let b = try inner.batch(indices)
        return Batch(images: b.images, x0: b.x0 * Double.nan, moments: false, labels: b.labels)
    }
}

@Test func repeatedNonFiniteLossesStopWithACheckpoint() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.encType, c.projCoeff, c.attnCoeff, c.maxBadSteps) = ("none", 0, 0, 3)
    let trainer = try Trainer(config: c, dataset: PoisonedDataset())
    var message = ""
    do { try trainer.train() } catch { message = "\(error)" }
    #expect(message.contains("3 consecutive non-finite steps"))
    #expect(FileManager.default.fileExists(atPath: Checkpoint.path("\(dir)/run", step: 0)))
    let log = try String(contentsOfFile: "\(dir)/run/log.txt", encoding: .utf8)
    #expect(log.contains("update skipped (1 in a row)") && log.contains("update skipped (2 in a row)"))
}

@Test func imageFolderDatasetReadsPNGsWithLabels() throws {
    let dir = temporaryDirectory()
    try FileManager.default.createDirectory(atPath: "\(dir)/00000", withIntermediateDirectories: true)
    var labels: [String] = []
    for i in 0..<3 {
        let px = (0..<(4 * 4 * 3)).map { UInt8(($0 * 7 + i * 50) % 256) }
        try PNGImage.write(px, height: 4, width: 4, channels: 3, to: "\(dir)/00000/img0000000\(i).png")
        labels.append("[\"00000/img0000000\(i).png\", \(i % 2)]")
    }
    try "{\"labels\": [\(labels.joined(separator: ", "))]}".write(toFile: "\(dir)/dataset.json", atomically: true, encoding: .utf8)
    let d = try ImageFolderDataset(root: dir, numClasses: 2)
    #expect(d.count == 3 && d.sampleShape == [3, 4, 4])
    let b = try d.batch([2, 0])
    #expect(b.labels.scalars(as: Int64.self) == [0, 0])
    // CHW order: channel 1 of pixel (0, 1) of image 2 is HWC byte (0·4 + 1)·3 + 1 = 4 → (4·7 + 100) % 256.
    #expect(b.images!.scalars(as: UInt8.self)[16 + 1] == UInt8((4 * 7 + 100) % 256))
    #expect(Swift.abs(b.x0.scalars(as: Float.self)[0] - (Float(100) / 127.5 - 1)) < 1e-6)
    #expect(throws: HasteError.self) { try ImageFolderDataset(root: dir, numClasses: 1) }
}

/// `haste train --data-dir` on latent data (spec/data.md §1.5–1.6) takes either preprocessed format: the
/// reference folder layout and the packed dataset.h5 holding the same items give the same losses, bit for bit;
/// previews of the latent model are decoded by the SD-VAE named by vae-weights.
@Test func latentTrainingReadsFolderAndHDF5Alike() throws {
    let dir = temporaryDirectory()
    let (count, side, latent) = (8, 16, 8)
    let u = Tensor.rand([count * 3 * side * side], seed: 5).scalars(as: Float.self).map { UInt8($0 * 255) }
    let moments = Tensor.randn([count, 8, latent, latent], seed: 6).scalars(as: Float.self).enumerated()
        .map { $0.offset % (8 * latent * latent) < 4 * latent * latent ? $0.element : Swift.abs($0.element) * 0.1 }   // std ≥ 0
    try FileManager.default.createDirectory(atPath: "\(dir)/packed", withIntermediateDirectories: true)
    let h5 = try HDF5DatasetFile.create("\(dir)/packed/dataset.h5", count: count, resolution: side, momentChannels: 8,
                                        momentSide: latent, classNames: ["a", "b", "c"])
    var rows: [String] = []
    for i in 0..<count {
        let chw = Array(u[(i * 3 * side * side)..<((i + 1) * 3 * side * side)])
        var hwc = [UInt8](repeating: 0, count: chw.count)
        for p in 0..<(side * side) { for c in 0..<3 { hwc[p * 3 + c] = chw[c * side * side + p] } }
        let m = Array(moments[(i * 8 * latent * latent)..<((i + 1) * 8 * latent * latent)])
        try FileManager.default.createDirectory(atPath: "\(dir)/folder/images/00000", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(dir)/folder/vae-sd/00000", withIntermediateDirectories: true)
        try PNGImage.write(hwc, height: side, width: side, channels: 3, to: "\(dir)/folder/images/\(ReferenceNames.image(i))")
        try NpyFile.write(Tensor(m, shape: [8, latent, latent]), to: "\(dir)/folder/vae-sd/\(ReferenceNames.moments(i))")
        rows.append("[\"\(ReferenceNames.moments(i))\", \(i % 3)]")
        try h5.write(i, image: chw, moments: m, label: Int64(i % 3), filename: ReferenceNames.image(i))
    }
    try h5.close()
    try "{\"labels\": [\(rows.joined(separator: ", "))]}".write(toFile: "\(dir)/folder/vae-sd/dataset.json", atomically: true, encoding: .utf8)

    // A tiny KL-f8-geometry VAE (diffusers keys + config.json beside it) decodes the folder run's previews.
    var vc = AutoencoderKLConfig()
    (vc.blockOutChannels, vc.layersPerBlock, vc.normGroups) = ([4, 4, 4, 4], 1, 2)
    try FileManager.default.createDirectory(atPath: "\(dir)/vae", withIntermediateDirectories: true)
    try SafetensorsWriter.write(try AutoencoderKL(vc, seed: 4).store.stateDict(), to: "\(dir)/vae/diffusion_pytorch_model.safetensors")
    try #"{"block_out_channels": [4, 4, 4, 4], "layers_per_block": 1, "norm_num_groups": 2, "latent_channels": 4}"#
        .write(toFile: "\(dir)/vae/config.json", atomically: true, encoding: .utf8)

    var losses: [[Double]] = []
    for (name, data) in [("folder", "\(dir)/folder"), ("hdf5", "\(dir)/packed"), ("h5path", "\(dir)/packed/dataset.h5")] {
        var c = tinyRunConfig(dir)
        (c.expName, c.dataset, c.dataDir, c.numClasses, c.maxTrainSteps) = (name, "imagenet", data, 3, 3)
        if name == "folder" { c.vaeWeights = "\(dir)/vae" }
        c.encWeights = try writeTinyTeacher(dir, c)
        let dataset = try c.openDataset()
        #expect(dataset.hasLatents && dataset.sampleShape == [4, latent, latent], "\(name)")
        #expect((dataset is HDF5Dataset) == (name != "folder"))
        try Trainer(config: c, dataset: dataset).train()
        losses.append(try metrics("\(dir)/\(name)").map { $0["loss"] as! Double })
    }
    // Latent previews: decoded to 8·8 = 64 px images, 2×2 grid with 2-px gaps; skipped (with a note) without a VAE.
    let grid = try PNGImage.read("\(dir)/folder/samples/0000001.png")
    #expect(grid.width == 2 * (8 * latent + 2) + 2 && grid.height == grid.width)
    #expect(!FileManager.default.fileExists(atPath: "\(dir)/hdf5/samples/0000001.png"))
    #expect(try String(contentsOfFile: "\(dir)/hdf5/log.txt", encoding: .utf8).contains("set vae-weights"))
    #expect(losses[0].count == 3 && losses[0].allSatisfy(\.isFinite))
    #expect(losses[0] == losses[1] && losses[1] == losses[2])
}

/// A float32 Trainer on an AVX-512 CPU packs its frozen teacher's weights once (`DINOv2.prepackedForInference`;
/// a 48-wide teacher, so every linear packs), and the packed teacher's features and logits are bit for bit the
/// unpacked teacher's on the Trainer's own first batch; under bf16 autocast it keeps W (autocast rounds W).
@Test func trainerPacksItsFrozenTeacherWithoutChangingItsOutput() throws {
    guard CPUKernels.level == 2 else { return }
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.teacherEmbedDim, c.teacherHeads) = (48, 3)
    c.encWeights = try writeTinyTeacher(dir, c)
    let dataset = SyntheticDataset()
    let trainer = try Trainer(config: c, dataset: dataset)
    let packed = try #require(trainer.teacher)
    #expect(packed.store.packedWeights.count == 4 * c.teacherDepth, "the teacher's linears are packed")
    let plain = try loadTeacher(try c.teacherConfig(), weights: c.encWeights)
    #expect(plain.store.packedWeights.isEmpty)
    let images = try #require(try dataset.batch(Array(0..<c.batchSize)).images)
    let objective = Objective(config: c, models: trainer.models)
    let a = objective.teacherPass(packed, images: images), b = objective.teacherPass(plain, images: images)
    #expect(a.patchTokens.scalars(as: Float.self) == b.patchTokens.scalars(as: Float.self), "teacher features")
    #expect(a.attentionLogits.keys.sorted() == b.attentionLogits.keys.sorted() && !a.attentionLogits.isEmpty)
    for (i, l) in a.attentionLogits { #expect(l.scalars(as: Float.self) == b.attentionLogits[i]!.scalars(as: Float.self), "logits \(i)") }

    var autocast = c
    (autocast.expName, autocast.mixedPrecision) = ("bf16", "bf16")
    #expect(try Trainer(config: autocast, dataset: dataset).teacher?.store.packedWeights.isEmpty == true, "bf16: W as loaded")
}
