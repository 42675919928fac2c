import Foundation
import Testing
import HasteEval
import HasteIO
import HasteModels
import HasteTensor
@testable import HasteTraining

// FID during training (Sources/HasteTraining/TrainingFID.swift) and the Fashion-MNIST evaluation set.

let fashionMNISTInstalled = FileManager.default.fileExists(atPath: "\(FashionMNIST.defaultDirectory)/t10k-images-idx3-ubyte.gz")

/// The evaluation images are the training set's padded 32×32 grey images replicated to RGB — the same bytes
/// the fixture script fed PyTorch (Scripts/fixtures/fid.py `fashion_mnist`).
@Test(.enabled(if: fashionMNISTInstalled, "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"))
func fashionMNISTImagesMatchTheFixtureImages() throws {
    let images = try FashionMNISTImages(split: "t10k")
    #expect(images.count == 10_000)
    let expected = try Fixture("fid_inception.safetensors")["images_square"].permuted([0, 3, 1, 2])
    expectClose(try images.images(0..<4), expected, atol: 0, rtol: 0)
    let set = try FashionMNISTImages.openEvalSet("fashion-mnist:t10k")
    #expect(set.images?.count == 10_000 && set.stored == nil)
    #expect(throws: HasteError.self) { try FashionMNISTImages.openEvalSet("fashion-mnist:valid") }
}

@Test func fidConfigKeysParse() throws {
    let c = try TrainConfig.load(file: nil, overrides: [("fid-every", "500"), ("fid-ref", "runs/ref.safetensors"), ("fid-samples", "250")])
    #expect(c.fidEvery == 500 && c.fidRef == FileManager.default.currentDirectoryPath + "/runs/ref.safetensors" && c.fidSamples == 250)
    #expect(TrainConfig().fidEvery == 0 && TrainConfig().fidWeights == InceptionWeightsFile.defaultPath)
}

/// Two steps of a tiny run with fid-every 2: the FID of 2 EMA samples (8×8 RGB, resized to 299) against
/// statistics saved from the fixture images lands in metrics.jsonl at step 2 only, and fid.png is drawn.
@Test(.enabled(if: inceptionCached, Comment(rawValue: inceptionSkip)))
func trainingLogsFIDIntoMetrics() throws {
    let dir = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let run = try RealInceptionRun.shared.get()
    let ref = "\(dir)/ref.safetensors"
    try StatsFile(pool: FeatureStatistics(features: run.pool), spatial: FeatureStatistics(features: run.spatial),
                  mode: .adm, weights: "default_1.pt").write(to: ref)
    var c = tinyRunConfig(dir)
    (c.encType, c.maxTrainSteps, c.checkpointingSteps) = ("none", 2, 1000)
    (c.fidEvery, c.fidSamples, c.fidRef, c.fidWeights) = (2, 2, ref, inceptionPath)
    let trainer = try Trainer(config: c, dataset: SyntheticDataset())
    try trainer.train()
    let lines = try metrics(trainer.run.root)
    #expect(lines.count == 2 && lines[0]["fid"] == nil)
    let fid = try #require(lines[1]["fid"] as? Double)
    #expect(fid.isFinite && fid > 0)
    #expect(FileManager.default.fileExists(atPath: "\(trainer.run.root)/fid.png"))
}
