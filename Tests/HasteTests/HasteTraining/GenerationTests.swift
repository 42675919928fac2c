import Foundation
import Testing
import HasteDiffusion
import HasteIO
import HasteModels
import HasteTensor
@testable import HasteTraining

/// A tiny pixel-space SiT (1×8×8, 3 classes) with random non-zero weights (adaLN-Zero init would give v = 0).
func tinyGenerationSiT(channels: Int = 1, seed: UInt64 = 1, projectors: [Int] = []) throws -> SiT {
    var c = try SiTConfig.named("SiT-S/2")
    (c.inChannels, c.inputSize, c.hiddenSize, c.depth, c.numHeads, c.numClasses, c.encoderDepth) = (channels, 8, 16, 2, 2, 3, 1)
    (c.projectorDims, c.projectorHidden) = (projectors, 8)
    let sit = try SiT(c, seed: seed)
    var state: [String: Tensor] = [:]
    for (i, (k, v)) in sit.store.stateDict().enumerated() where k != "pos_embed" {
        state[k] = Tensor.randn(v.shape, seed: seed &* 1000 &+ UInt64(i)) * 0.2
    }
    try sit.store.load(state, strict: false)
    sit.store.setRequiresGrad(false)
    return sit
}

func tinyGenerateOptions(_ dir: String) -> GenerateOptions {
    var o = GenerateOptions()
    (o.sampleDir, o.numFidSamples, o.perProcBatchSize, o.mode, o.numSteps) = (dir, 5, 1, .sde, 4)
    (o.cfgScale, o.guidanceHigh, o.globalSeed) = (2.0, 0.7, 3)
    return o
}

/// Batch composition changes only float rounding: batches of 2 and of 3 give the same samples (SDE and ODE).
@Test func generatedSamplesDoNotDependOnBatching() throws {
    let model = GenerationModel(sit: try tinyGenerationSiT(), pixelSpace: true, name: "SiT-S/2")
    for mode in GenerateOptions.Mode.allCases {
        var o = tinyGenerateOptions(temporaryDirectory())
        o.mode = mode
        let g = try SampleGenerator(options: o, model: model, vae: nil, checkpoint: "x.safetensors")
        let by2 = Tensor.cat([g.samples([0, 1]), g.samples([2, 3]), g.samples([4])], axis: 0)
        let by3 = Tensor.cat([g.samples([0, 1, 2]), g.samples([3, 4])], axis: 0)
        expectClose(by2, by3, atol: 1e-5, rtol: 0, "\(mode) batches of 2 vs 3")
        expectClose(g.samples([4, 1]), Tensor.cat([by3.narrowed(0, start: 4, length: 1), by3.narrowed(0, start: 1, length: 1)], axis: 0),
                    atol: 1e-5, rtol: 0, "\(mode) order")
    }
}

/// A full run, a run split into shards 0/2 and 1/2, and an interrupted run resumed give byte-identical
/// `.npz` files (uint8 RGB NHWC, grey replicated); the folder follows generate.py's naming.
@Test func shardsAndResumeGiveIdenticalBatches() throws {
    let model = GenerationModel(sit: try tinyGenerationSiT(), pixelSpace: true, name: "SiT-S/2")
    let ckpt = "/runs/demo/checkpoints/0000050.safetensors"
    let full = try SampleGenerator(options: tinyGenerateOptions(temporaryDirectory()), model: model, vae: nil, checkpoint: ckpt)
    #expect((full.folder as NSString).lastPathComponent == "SiT-S-2-0000050-size-8-vae-none-cfg-2.0-seed-3-sde-high-0.7")
    var reports: [GenerationProgress] = []
    let fullNpz = try #require(try full.run { reports.append($0) })
    #expect(reports.last.map { ($0.done, $0.total) } ?? (0, 0) == (5, 5))
    let reference = try Data(contentsOf: URL(fileURLWithPath: fullNpz))

    let dir = temporaryDirectory()
    var o = tinyGenerateOptions(dir)
    o.shard = (1, 2)
    let shard1 = try SampleGenerator(options: o, model: model, vae: nil, checkpoint: ckpt)
    #expect(shard1.shardIndices == [1, 3])
    #expect(try shard1.run() == nil)                       // shard 0's samples are still missing
    #expect(shard1.missing() == [0, 2, 4])
    o.shard = (0, 2)
    let npz = try #require(try SampleGenerator(options: o, model: model, vae: nil, checkpoint: ckpt).run())
    #expect(try Data(contentsOf: URL(fileURLWithPath: npz)) == reference)

    // Resume: two PNGs lost (as if killed), the rerun makes only those.
    for i in [1, 4] { try FileManager.default.removeItem(atPath: full.pngPath(i)) }
    try FileManager.default.removeItem(atPath: fullNpz)
    var resumed: [GenerationProgress] = []
    _ = try full.run { resumed.append($0) }
    #expect(resumed.last?.total == 2)
    #expect(try Data(contentsOf: URL(fileURLWithPath: fullNpz)) == reference)

    let batch = try NpzArchive(path: fullNpz).tensor("arr_0")
    #expect(batch.dtype == .uint8 && batch.shape == [5, 8, 8, 3])
    let v = batch.scalars(as: Int.self)
    let grey = stride(from: 0, to: v.count, by: 3).allSatisfy { (i: Int) -> Bool in v[i] == v[i + 1] && v[i] == v[i + 2] }
    #expect(grey)
}

/// Pixels → uint8 as generate.py: (x + 1)/2 · 255, clamped, truncated (not rounded).
@Test func imagesTruncateLikeTheReference() throws {
    let x = Tensor([Float(-1.5), -1, -0.5, 0, 0.999, 1, 2, 0.004], shape: [1, 1, 2, 4])
    let u8 = ((x + 1.0) / 2.0 * 255.0).clamp(min: 0, max: 255).to(.uint8).scalars(as: Int.self)
    #expect(u8 == [0, 0, 63, 127, 254, 255, 255, 128])          // torch gives the same
    #expect(SampleGenerator.folderName(model: "SiT-XL/2", checkpoint: "ckpts/2500000.pt", resolution: 256, vae: "ema", cfg: 1.65,
                                       seed: 0, mode: "sde", high: 0.72) == "SiT-XL-2-2500000-size-256-vae-ema-cfg-1.65-seed-0-sde-high-0.72")
    #expect(SampleGenerator.pythonFloat(1) == "1.0" && SampleGenerator.pythonFloat(1e-5) == "1e-05")
}

/// A haste training checkpoint: `ema.` weights by default (or `model.`), the SiT sizes from its stored config,
/// channels, side, classes and projector widths read off the weights.
@Test func loadsHasteCheckpoints() throws {
    let dir = temporaryDirectory()
    let ema = try tinyGenerationSiT(seed: 5, projectors: [6]), raw = try tinyGenerationSiT(seed: 6, projectors: [6])
    var config = TrainConfig()
    (config.dataset, config.model, config.hiddenSize, config.depth, config.numHeads) = ("fashion-mnist", "SiT-S/2", 16, 2, 2)
    (config.numClasses, config.encoderDepth, config.projectorDim) = (3, 1, 8)
    let tensors = ema.store.stateDict().map { ("ema." + $0.0, $0.1) } + raw.store.stateDict().map { ("model." + $0.0, $0.1) }
    try SafetensorsWriter.write(tensors, metadata: ["format": Checkpoint.format, "config": try config.yaml()], to: dir + "/0000010.safetensors")
    let loaded = try GenerationModel.load(dir + "/0000010.safetensors")
    #expect(loaded.pixelSpace && loaded.sampleShape == [1, 8, 8] && loaded.name == "SiT-S/2")
    #expect(loaded.sit!.config.projectorDims == [6] && loaded.sit!.config.numClasses == 3)
    let x = Tensor.randn([2, 1, 8, 8], seed: 2), t = Tensor([Float(0.3), 0.9]), y = Tensor([Int64(0), 3])
    expectClose(loaded.sit!(x, t: t, y: y).velocity, ema(x, t: t, y: y).velocity, atol: 0, rtol: 0, "ema weights")
    let m = try GenerationModel.load(dir + "/0000010.safetensors", select: "model")
    expectClose(m.sit!(x, t: t, y: y).velocity, raw(x, t: t, y: y).velocity, atol: 0, rtol: 0, "model weights")
    #expect(throws: HasteError.self) { _ = try GenerationModel.load(dir + "/missing.safetensors") }
    #expect(throws: HasteError.self) { _ = try GenerationModel.load(dir + "/0000010.pt") }
}

/// A reference HASTE/REPA .pt (torch pickle) loads natively, EMA by default, sizes inferred from its keys.
@Test func generationReadsReferenceTorchCheckpoints() throws {
    guard let url = Bundle.module.url(forResource: "Fixtures/pth/train_ckpt.pt", withExtension: nil) else {
        Issue.record("fixture pth/train_ckpt.pt missing"); return
    }
    let direct = try ReferenceCheckpoint.loadSiT(path: url.path, select: .ema, numHeads: 2)
    var flags = GenerationModel.Flags()
    flags.model = "SiT-S/2"
    #expect(throws: HasteError.self) { _ = try GenerationModel.load(url.path, flags: flags) }   // 6 heads do not divide width 8
    #expect(throws: HasteError.self) { _ = try GenerationModel.load(url.path) }                  // width 8: heads unknown
    flags = GenerationModel.Flags()
    flags.numHeads = 2
    let loaded = try GenerationModel.load(url.path, flags: flags)
    #expect(!loaded.pixelSpace && loaded.sit!.config == direct.config)
    let x = Tensor.randn([1, 3, 8, 8], seed: 4), t = Tensor([Float(0.5)]), y = Tensor([Int64(1)])
    expectClose(loaded.sit!(x, t: t, y: y).velocity, direct(x, t: t, y: y).velocity, atol: 0, rtol: 0, "ema weights")
}

/// Latent models decode through the VAE (here the tiny fixture VAE: 8×8 latents → 16×16 images); a missing
/// VAE file names where to download it.
@Test func latentModelsDecodeThroughTheVAE() throws {
    let f = try Fixture("vae_tiny.safetensors")
    var vc = AutoencoderKLConfig()
    (vc.blockOutChannels, vc.layersPerBlock, vc.normGroups) = ([8, 16], 1, 4)
    let vae = try AutoencoderKL(vc)
    try vae.store.load(f.tensors(under: "model."), strict: true)
    let model = GenerationModel(sit: try tinyGenerationSiT(channels: 4), pixelSpace: false, name: "SiT-S/2")
    var o = tinyGenerateOptions(temporaryDirectory())
    (o.mode, o.numSteps) = (.ode, 2)
    let g = try SampleGenerator(options: o, model: model, vae: vae, checkpoint: "c.safetensors")
    let images = g.images([0, 1])
    #expect(images.shape == [2, 16, 16, 3] && images.dtype == .uint8)
    let expected = vae.decode(g.samples([0, 1]) / 0.18215)
    let u8 = ((expected + 1.0) / 2.0 * 255.0).clamp(min: 0, max: 255).to(.uint8).permuted([0, 2, 3, 1]).contiguous()
    #expect(images.scalars(as: Int.self) == u8.scalars(as: Int.self))
    do {
        _ = try VAELoader.load("ft-ema", weights: "/nonexistent/vae.safetensors")
        Issue.record("expected a missing-file error")
    } catch let e as HasteError {
        #expect("\(e)".contains("huggingface.co/stabilityai/sd-vae-ft-ema") && "\(e)".contains("--vae-weights"))
    }
    #expect(throws: HasteError.self) { _ = try VAELoader.shortName("kl-f16") }
}
