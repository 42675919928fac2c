import Foundation
import Testing
import HasteDiffusion
import HasteEval
import HasteIO
import HasteModels
import HasteNN
import HasteTensor
@testable import HasteTraining

/// Sampling, FID features and VAE encoding on a device other than the CPU, driven on `HostAsCUDA` (the CPU's
/// kernels as cuda:1: equal bits for the same computation, device checks as on a real GPU).

/// ODE and SDE, with classifier-free guidance inside an interval, pixel and latent models: the samples and the
/// uint8 images from a model on cuda:1 equal the CPU's (the sampler's float64 state stays on the host).
@Test func generationOnTheDeviceEqualsTheCPU() throws {
    let cpu = GenerationModel(sit: try tinyGenerationSiT(), pixelSpace: true, name: "SiT-S/2")
    let onDevice = try tinyGenerationSiT()
    onDevice.store.move(to: HostAsCUDA.device)
    let device = GenerationModel(sit: onDevice, pixelSpace: true, name: "SiT-S/2")
    for mode in GenerateOptions.Mode.allCases {
        var o = tinyGenerateOptions(temporaryDirectory())
        o.mode = mode
        #expect(o.cfgScale > 1 && o.guidanceHigh < 1, "guidance is on for part of the grid")
        let a = try SampleGenerator(options: o, model: cpu, vae: nil, checkpoint: "x.safetensors")
        let b = try SampleGenerator(options: o, model: device, vae: nil, checkpoint: "x.safetensors")
        let sa = a.samples([0, 3, 4]), sb = b.samples([0, 3, 4])
        #expect(sb.device == .cpu)
        expectClose(sa, sb, atol: 0, rtol: 0, "\(mode) samples")
        #expect(a.images([1, 2]).scalars(as: UInt8.self) == b.images([1, 2]).scalars(as: UInt8.self), "\(mode) images")
    }
    // A latent model decoded by a VAE on the device.
    let f = try Fixture("vae_tiny.safetensors")
    var vc = AutoencoderKLConfig()
    (vc.blockOutChannels, vc.layersPerBlock, vc.normGroups) = ([8, 16], 1, 4)
    func vae(on d: Device) throws -> AutoencoderKL {
        let v = try AutoencoderKL(vc)
        try v.store.load(f.tensors(under: "model."), strict: true)
        v.store.move(to: d)
        return v
    }
    let latentSiT = try tinyGenerationSiT(channels: 4)
    latentSiT.store.move(to: HostAsCUDA.device)
    var o = tinyGenerateOptions(temporaryDirectory())
    (o.mode, o.numSteps) = (.ode, 2)
    let a = try SampleGenerator(options: o, model: GenerationModel(sit: try tinyGenerationSiT(channels: 4), pixelSpace: false, name: "SiT-S/2"),
                                vae: try vae(on: .cpu), checkpoint: "c.safetensors")
    let b = try SampleGenerator(options: o, model: GenerationModel(sit: latentSiT, pixelSpace: false, name: "SiT-S/2"),
                                vae: try vae(on: HostAsCUDA.device), checkpoint: "c.safetensors")
    let ia = a.images([0, 1]), ib = b.images([0, 1])
    #expect(ib.shape == [2, 16, 16, 3] && ib.device == .cpu)
    #expect(ia.scalars(as: UInt8.self) == ib.scalars(as: UInt8.self), "latent images")
}

/// A haste training checkpoint loads for generation onto the device (`GenerationModel.load(device:)`): every
/// weight there, and the velocity equal to the CPU-loaded model's.
@Test func generationLoadsCheckpointsOntoTheDevice() throws {
    let dir = temporaryDirectory()
    let ema = try tinyGenerationSiT(seed: 5), raw = try tinyGenerationSiT(seed: 6)
    var config = TrainConfig()
    (config.dataset, config.model, config.hiddenSize, config.depth, config.numHeads) = ("fashion-mnist", "SiT-S/2", 16, 2, 2)
    (config.numClasses, config.encoderDepth, config.projectorDim) = (3, 1, 8)
    let tensors = ema.store.stateDict().map { ("ema." + $0.0, $0.1) } + raw.store.stateDict().map { ("model." + $0.0, $0.1) }
    try SafetensorsWriter.write(tensors, metadata: ["format": Checkpoint.format, "config": try config.yaml()], to: dir + "/0000010.safetensors")
    let onCPU = try GenerationModel.load(dir + "/0000010.safetensors")
    let loaded = try GenerationModel.load(dir + "/0000010.safetensors", device: HostAsCUDA.device)
    #expect(loaded.sit!.store.device == HostAsCUDA.device && loaded.sit!.store.stateDict().allSatisfy { $0.1.device == HostAsCUDA.device })
    let x = Tensor.randn([2, 1, 8, 8], seed: 2), t = Tensor([Float(0.3), 0.9]), y = Tensor([Int64(0), 3])
    let d = HostAsCUDA.device
    expectClose(loaded.sit!(x.to(d), t: t.to(d), y: y.to(d)).velocity.to(.cpu), onCPU.sit!(x, t: t, y: y).velocity, atol: 0, rtol: 0, "ema weights")
}

/// FID features (InceptionV3, random weights in pytorch-fid's layout) of the same images: equal on cuda:1 and
/// on the CPU, pool and logits rows and the accumulated statistics, up to float rounding only: Inception's GEMMs
/// at 299² are large enough for OpenBLAS to split among its threads, and how it splits them depends on the other
/// tests calling it at the same moment (run alone it is bit for bit; beside 7 other tests it differed in the last bits).
/// A tensor left on the CPU would trap.
@Test func fidFeaturesOnTheDeviceEqualTheCPU() throws {
    var state: [String: Tensor] = [:]
    for (i, line) in try fixtureText("inception_pytorch_fid.keys.txt").enumerated() {
        let parts = line.split(separator: " ")
        let shape = parts.count > 1 ? parts[1].split(separator: "x").map { Int($0)! } : []
        let key = String(parts[0])
        if key.hasSuffix("running_var") { state[key] = Tensor.ones(shape) }
        else if key.hasSuffix("num_batches_tracked") { state[key] = Tensor.zeros(shape) }
        else { state[key] = Tensor.randn(shape, seed: UInt64(i)) * 0.05 }
    }
    let pixels = Tensor.rand([3, 3, 20, 20], seed: 11).scalars(as: Float.self).map { UInt8($0 * 255) }
    let images = TensorImages(Tensor(pixels, shape: [3, 3, 20, 20]))
    var features: [ExtractedFeatures] = []
    for device in [Device.cpu, HostAsCUDA.device] {
        let model = try FIDInceptionV3(stateDict: state, device: device)
        let extractor = InceptionFeatureExtractor(model: model, input: .pytorchFID, batchSize: 2, device: device)
        features.append(try extractor.extract(images, keepPool: true, keepLogits: true))
    }
    let (a, b) = (features[0], features[1])
    #expect(b.poolFeatures!.device == .cpu)
    expectClose(a.poolFeatures!, b.poolFeatures!, atol: 1e-6, rtol: 1e-5, "pool")
    expectClose(a.logits!, b.logits!, atol: 1e-6, rtol: 1e-5, "logits")
    expectClose(Tensor(a.pool.mean), Tensor(b.pool.mean), atol: 1e-7, rtol: 1e-5, "pool mean")
    expectClose(Tensor(a.pool.covariance), Tensor(b.pool.covariance), atol: 1e-9, rtol: 1e-4, "pool covariance")
    expectClose(Tensor(a.spatial.mean), Tensor(b.spatial.mean), atol: 1e-7, rtol: 1e-5, "spatial mean")
    #expect(a.poolFeatures!.abs().max().item() > 0)
}

/// `haste preprocess`'s encode stage with the VAE on cuda:1 writes the same moments as on the CPU: same files,
/// values equal up to float rounding (the VAE's GEMMs at 256² are split among OpenBLAS's threads, and the split
/// depends on concurrent tests: see fidFeaturesOnTheDeviceEqualTheCPU and preprocessPipelineEndToEnd).
@Test func vaeEncodeOnTheDeviceEqualsTheCPU() throws {
    let tmp = temporaryDirectory()
    _ = try makeSourceTree("\(tmp)/src")
    var cfg = AutoencoderKLConfig()
    (cfg.blockOutChannels, cfg.layersPerBlock, cfg.normGroups) = ([4, 4, 8, 8], 1, 4)
    var outputs: [[String: Tensor]] = []
    for (k, device) in [Device.cpu, HostAsCUDA.device].enumerated() {
        var o = PreprocessOptions()
        (o.source, o.dest, o.format, o.workers, o.batchSize, o.progress) = ("\(tmp)/src", "\(tmp)/out\(k)", .folder, 2, 2, false)
        let vae = try AutoencoderKL(cfg, seed: 3)
        vae.store.move(to: device)
        let s = try Preprocessor(options: o, vae: vae).run()
        #expect(s.encoded == 3)
        let dir = "\(tmp)/out\(k)/vae-sd"
        let files = (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".npy") }
        outputs.append(Dictionary(uniqueKeysWithValues: try files.map { ($0, try NpyFile.read("\(dir)/\($0)")) }))
    }
    #expect(outputs[0].count == 3 && outputs[0].keys.sorted() == outputs[1].keys.sorted())
    for (name, m) in outputs[0] { expectClose(outputs[1][name]!, m, atol: 1e-5, rtol: 1e-4, name) }
}

/// A model on the device given a CPU input stops with a message naming both devices (the op's check), not a
/// crash inside a kernel.
@Test func aCPUInputToADeviceModelFailsWithADeviceMessage() async {
    let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        let sit = try tinyGenerationSiT()
        sit.store.move(to: HostAsCUDA.device)
        let x = Tensor.zeros([1, 1, 8, 8])
        _ = sit(x, t: Tensor.zeros([1], device: HostAsCUDA.device), y: Tensor([Int64(0)], shape: [1], device: HostAsCUDA.device))
    }
    let message = trapMessage(result)
    #expect(message.contains("on cpu") && message.contains("cuda:1"), "\(message)")
}
