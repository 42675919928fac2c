import Foundation
import Testing
import HasteDiffusion
import HasteIO
import HasteModels
import HasteTensor
@testable import HasteTraining

/// The MMDiT of each checkpoint kind is settled from its shapes, stored config or args and the flags: a haste
/// training checkpoint (ema./model., pixel space from its config), a bare state dict (a named size implies its
/// heads; a custom width needs --num-heads) and a reference train_t2i.py `.pt`.
@Test func mmditCheckpointsAreIdentifiedFromTheirShapes() throws {
    let f = T2IFiles.shared
    let loaded = try GenerationModel.load(f.checkpoint)
    let c = try #require(loaded.mmdit).config
    #expect(loaded.sit == nil && loaded.pixelSpace && loaded.name == "MMDiT-D2/2" && loaded.sampleShape == [1, 8, 8])
    let sizes: [Int] = [c.depth, c.hiddenSize, c.numHeads, c.patchSize, c.inChannels, c.contextDim, c.encoderDepth]
    #expect(sizes == [2, 64, 2, 2, 1, 64, 1])
    #expect(c.projectorDims == [6] && c.projectorHidden == 8)
    let x = Tensor.randn([2, 1, 8, 8], seed: 2), t = Tensor([Float(0.3), 0.9]), ctx = Tensor.randn([2, 77, 64], seed: 3)
    let ema = try tinyT2IMMDiT(projectors: [6], seed: 5), raw = try tinyT2IMMDiT(projectors: [6], seed: 6)
    // Two model objects (one loaded, one built): equal weights, but OpenBLAS's thread count is process-wide and other tests
    // change it concurrently, so the GEMMs may round differently; wrong weights would differ by far more (see below).
    expectClose(loaded.mmdit!(x, t: t, context: ctx).velocity, ema(x, t: t, context: ctx).velocity, atol: 1e-5, rtol: 0, "ema weights")
    let model = try #require(try GenerationModel.load(f.checkpoint, select: "model").mmdit)
    expectClose(model(x, t: t, context: ctx).velocity, raw(x, t: t, context: ctx).velocity, atol: 1e-5, rtol: 0, "model weights")
    #expect((model(x, t: t, context: ctx).velocity - ema(x, t: t, context: ctx).velocity).abs().max().item() > 0.01)

    let plain = try GenerationModel.load(f.plain)
    #expect(plain.name == "MMDiT-D2/2" && !plain.pixelSpace && plain.mmdit?.config.numHeads == 2)
    var flags = GenerationModel.Flags()
    flags.numClasses = 10
    #expect(thrownText { _ = try GenerationModel.load(f.plain, flags: flags) }.contains("no classes: drop --num-classes"))
    flags = GenerationModel.Flags()
    flags.model = "SiT-XL/2"
    let sitName = thrownText { _ = try GenerationModel.load(f.plain, flags: flags) }
    #expect(sitName.contains("MMDiT sizes are MMDiT-XL/2 or MMDiT-D<depth>/<patch>"), "\(sitName)")
    flags.model = "MMDiT-XL/2"
    let xl = thrownText { _ = try GenerationModel.load(f.plain, flags: flags) }
    #expect(xl.contains("weights have depth 2, width 64, patch 2, but --model MMDiT-XL/2 has depth 24, width 768"), "\(xl)")

    let dir = temporaryDirectory(), custom = dir + "/custom.safetensors"
    try SafetensorsWriter.write(try tinyT2IMMDiT(hidden: 48, heads: 4).store.stateDict(), to: custom)
    let noHeads = thrownText { _ = try GenerationModel.load(custom) }
    #expect(noHeads.contains("width 48 and depth 2") && noHeads.contains("--num-heads"), "\(noHeads)")
    flags = GenerationModel.Flags()
    flags.numHeads = 4
    #expect(try GenerationModel.load(custom, flags: flags).mmdit?.config.numHeads == 4)
}

/// A train_t2i.py checkpoint (model, ema, Namespace args with resolution and encoder_depth) loads as the
/// reference loader reads it; its width 24 over depth 3 is no named size, so the heads must be given.
@Test func mmditReferenceTorchCheckpointsLoadForGeneration() throws {
    let url = try #require(Bundle.module.url(forResource: "Fixtures/pth/mmdit_tiny_ckpt.pt", withExtension: nil))
    let noHeads = thrownText { _ = try GenerationModel.load(url.path) }
    #expect(noHeads.contains("--num-heads"), "\(noHeads)")
    var flags = GenerationModel.Flags()
    flags.numHeads = 3
    let loaded = try GenerationModel.load(url.path, flags: flags)
    let direct = try ReferenceCheckpoint.loadMMDiT(path: url.path, select: .ema, numHeads: 3)
    #expect(!loaded.pixelSpace && loaded.mmdit?.config == direct.config && loaded.sampleShape == [4, 8, 8])
    #expect(loaded.name == "MMDiT")
    flags.resolution = 128
    #expect(thrownText { _ = try GenerationModel.load(url.path, flags: flags) }.contains("makes 64-px images"))
}

/// Prompt samples cycle through the prompts; COCO samples take the captioned images by ascending id, one
/// caption each chosen by the seed (the same for the same seed, different for others); prompt files refuse
/// empty lines by number; malformed annotation files are named with what is wrong.
@Test func captionPlansAreFunctionsOfTheSampleIndex() throws {
    let prompts = try CaptionPlan(prompts: ["a cat", "a dog", "a bird"])
    #expect((0..<7).map { prompts.caption($0).text } == ["a cat", "a dog", "a bird", "a cat", "a dog", "a bird", "a cat"])
    #expect(prompts.table(count: 2) == "{\"index\": 0, \"caption\": \"a cat\"}\n{\"index\": 1, \"caption\": \"a dog\"}\n")
    #expect(throws: HasteError.self) { _ = try CaptionPlan(prompts: ["a cat", "  "]) }

    let dir = temporaryDirectory(), coco = dir + "/captions.json"
    try writeTinyCOCOCaptions(coco)
    let plan = try CaptionPlan(cocoAnnotations: coco, seed: 0)
    #expect((0..<6).map { plan.caption($0).imageID } == [7, 19, 42, 7, 19, 42])
    let captions: [Int: Set<String>] = [7: ["a red bus", "A bus in the city", "double-decker bus"], 19: ["two cats \"sleeping\""],
                                        42: ["A dog on a beach.", "A dog running by the sea"]]
    for i in 0..<30 { #expect(captions[plan.caption(i).imageID!]!.contains(plan.caption(i).text)) }
    #expect(try CaptionPlan(cocoAnnotations: coco, seed: 0).table(count: 30) == plan.table(count: 30))
    let seeds = (0..<8).map { try! CaptionPlan(cocoAnnotations: coco, seed: UInt64($0)).table(count: 9) }
    #expect(Set(seeds).count > 1)
    #expect(plan.table(count: 1).hasPrefix("{\"index\": 0, \"image_id\": 7, \"caption\": "))

    let file = dir + "/prompts.txt"
    try "a cat\r\na dog\n".write(toFile: file, atomically: true, encoding: .utf8)
    #expect(try CaptionPlan.promptsFile(file) == ["a cat", "a dog"])
    try "a cat\n\na dog\n".write(toFile: file, atomically: true, encoding: .utf8)
    #expect(thrownText { _ = try CaptionPlan.promptsFile(file) }.contains("line 2 is empty"))
    #expect(thrownText { _ = try CaptionPlan.promptsFile(dir + "/none.txt") }.contains("--prompts-file"))
    for (text, phrase) in [("[1, 2]", "the top level is not a JSON object"), ("{\"images\": []}", "no \"annotations\" list"),
                           ("{\"images\": [{\"id\": 1}], \"annotations\": []}", "has no caption annotations"),
                           ("{\"images\": [{\"id\": 1}, {\"id\": 2}], \"annotations\": [{\"image_id\": 1, \"caption\": \"x\"}, {\"image_id\": 2}]}",
                            "annotations[1] has no integer \"image_id\""),
                           ("{\"images\": [{\"id\": 1}], \"annotations\": [{\"image_id\": 5, \"caption\": \"x\"}]}", "image id 5, which is not in")] {
        try text.write(toFile: coco, atomically: true, encoding: .utf8)
        let message = thrownText { _ = try CaptionPlan(cocoAnnotations: coco, seed: 0) }
        #expect(message.contains(coco) && message.contains(phrase), "\(message)")
    }
}

/// One ODE step from t = 1 is x = z − v, so the sample shows the guided velocity: with scale 1 (or a guidance
/// interval that excludes t = 1) it is the conditional velocity alone; with scale 3 it is
/// v("") + 3·(v(prompt) − v("")), the unconditional pass using the features of the empty string.
@Test func textGuidanceRunsAgainstTheEmptyPrompt() throws {
    let f = T2IFiles.shared
    let model = try GenerationModel.load(f.checkpoint)
    let mmdit = try #require(model.mmdit)
    let encoder = try f.encoder()
    let text = try TextConditioning(captions: try CaptionPlan(prompts: ["a cat", "a dog"]), encoder: encoder, model: mmdit, encoderPath: f.clip64)
    func samples(_ scale: Double, high: Double = 1) throws -> Tensor {
        var o = GenerateOptions()
        (o.sampleDir, o.numFidSamples, o.mode, o.numSteps, o.cfgScale, o.guidanceHigh, o.globalSeed) = (temporaryDirectory(), 2, .ode, 1, scale, high, 9)
        return try SampleGenerator(options: o, model: model, vae: nil, checkpoint: f.checkpoint, text: text).samples([0, 1])
    }
    let z = SampleNoise(seed: 9, indices: [0, 1]).normal([1, 8, 8]), t = Tensor([Float(1), 1])
    let cond = mmdit(z, t: t, context: encoder.encode(["a cat", "a dog"])).velocity
    let uncond = mmdit(z, t: t, context: Tensor.cat([encoder.encode([""]), encoder.encode([""])], axis: 0)).velocity
    let one = try samples(1)
    expectClose(one, z - cond, atol: 1e-6, rtol: 0, "cfg 1 = the conditional velocity")
    // t = 1 is outside [0, 0.5]: the conditional velocity alone (not bit-equal: the guided batch holds both halves,
    // so its GEMMs have other shapes and may round differently).
    expectClose(try samples(3, high: 0.5), one, atol: 1e-6, rtol: 0, "cfg 3 outside its interval = cfg 1")
    expectClose(try samples(3), z - (uncond + (cond - uncond) * 3), atol: 1e-5, rtol: 0, "cfg 3 against the empty prompt")
    #expect((try samples(3) - one).abs().max().item() > 1e-3)
}

/// Rerunning into a folder that holds samples of other prompts is refused (the PNGs would be mixed); the same
/// prompts resume.
@Test func sampleFoldersOfOtherCaptionsAreNotResumed() throws {
    let f = T2IFiles.shared
    let model = try GenerationModel.load(f.checkpoint)
    let encoder = try f.encoder()
    var o = GenerateOptions()
    (o.sampleDir, o.numFidSamples, o.mode, o.numSteps, o.cfgScale) = (temporaryDirectory(), 2, .ode, 1, 1)
    func generator(_ prompts: [String]) throws -> SampleGenerator {
        let text = try TextConditioning(captions: try CaptionPlan(prompts: prompts), encoder: encoder, model: model.mmdit!, encoderPath: f.clip64)
        return try SampleGenerator(options: o, model: model, vae: nil, checkpoint: f.checkpoint, text: text)
    }
    let first = try generator(["a cat", "a dog"])
    #expect(try first.run() == first.npzPath)
    #expect(try String(contentsOfFile: first.captionsPath, encoding: .utf8) == "{\"index\": 0, \"caption\": \"a cat\"}\n{\"index\": 1, \"caption\": \"a dog\"}\n")
    #expect(try generator(["a cat", "a dog"]).run() == first.npzPath)
    let other = thrownText { _ = try generator(["a cat", "a fish"]).run() }
    #expect(other.contains("other captions") && other.contains("line 2"), "\(other)")
    #expect(CaptionedGrid.wrap("a photo of a very long sneaker", width: 10) == ["a photo of", "a very", "long", "sneaker"])
    #expect(CaptionedGrid.wrap("abcdefghijklmnop", width: 6) == ["abcdef", "ghijkl", "mnop"])
}

