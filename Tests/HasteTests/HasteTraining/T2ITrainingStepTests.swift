import Foundation
import Testing
import HasteIO
@testable import HasteModels
import HasteNN
import HasteTensor
@testable import HasteTraining

/// The fixture's run (Scripts/fixtures/make_mmdit_train_fixture.py, TINY): MMDiT-D3/2 at width 24, 6 caption tokens
/// of width 16, a 3-block teacher of width 10 on a 4×4 grid; attn-coeff 0.7 (applied as written), 2 heads.
func t2iStepConfig() -> TrainConfig {
    var c = TrainConfig()
    (c.dataset, c.model, c.hiddenSize, c.numHeads, c.encoderDepth, c.projectorDim) = ("coco", "MMDiT-D3/2", 24, 3, 2, 16)
    (c.encType, c.teacherEmbedDim, c.teacherDepth, c.teacherHeads, c.teacherPatchSize, c.teacherGrid) = ("dinov2-vit-s", 10, 3, 4, 2, 4)
    (c.attnStudentLayers, c.attnTeacherLayers, c.attnHeads, c.projCoeff, c.attnCoeff) = ([0, 1], [1, 2], 2, 0.5, 0.7)
    return c
}

@Test func t2iTrainingStepLossesAndGradientsMatchPyTorch() throws {
    let f = try Fixture("mmdit_train_step.safetensors")
    let c = t2iStepConfig()
    let models = try c.resolveModels(sampleShape: [4, 8, 8], numClasses: 1, contextShape: [6, 16])
    guard case .mmdit(let mc) = models.student else { Issue.record("coco + MMDiT resolved to \(models.student)"); return }
    #expect(mc.contextTokens == 6 && mc.contextDim == 16 && mc.projectorDims == [10] && mc.encoderDepth == 2 && mc.posEmbedMaxSize == nil)
    #expect(models.pairs.map(\.student) == [0, 1] && models.pairs.map(\.teacher) == [1, 2] && models.heads == 2)
    let student = try MMDiT(mc)
    try student.store.load(f.tensors(under: "model."), strict: true)
    let objective = Objective(config: c, models: models)
    // The stored moments are mean | log-variance (COCO): the dataset turns them into mean | std.
    let batch = Batch(images: nil, x0: Tensor.stack((0..<3).map { CaptionDataset.meanStd(f["moments"].select(axis: 0, index: $0)) }, axis: 0),
                      moments: true, labels: Tensor.zeros([3], dtype: .int64), context: f["context"])
    let draws = Objective.Draws(t: f["t"], noise: f["noise"], latentNoise: f["latent_noise"], dropMask: [true, true, true])
    expectClose(objective.cleanSample(batch, draws), f["x0"], atol: 1e-6, rtol: 1e-5, "x0 from clamped log-variance")
    let teacher = DINOv2Output(patchTokens: f["teacher_feats"], classToken: Tensor.zeros([3, 10]),
                               attentionLogits: Dictionary(uniqueKeysWithValues: (0..<3).map { ($0, f["teacher_logits\($0)"]) }))
    let terms = objective.loss(student: student, batch: batch, draws: draws, teacher: teacher, alignmentActive: true)
    #expect(Swift.abs(terms.denoise - f["loss.denoising"].item()) <= 1e-5 * Swift.abs(f["loss.denoising"].item()))
    #expect(Swift.abs(terms.projection - f["loss.projection"].item()) <= 1e-6 + 1e-5 * Swift.abs(f["loss.projection"].item()))
    #expect(Swift.abs(terms.attention - f["loss.attention"].item()) <= 1e-5 * Swift.abs(f["loss.attention"].item()))
    expectClose(terms.total, f["loss.total"].reshaped([]), atol: 1e-6, rtol: 1e-5, "total = den + 0.5·proj + 0.7·attn")
    student.store.zeroGrad()
    terms.total.backward()
    let grads = f.tensors(under: "grad.")
    #expect(grads.count == student.store.parameters.filter { $0.name != "pos_embed" }.count)
    for (key, g) in grads {
        let p = try #require(student.store.parameters.first { $0.name == key }?.tensor, "parameter \(key)")
        expectClose(try #require(p.grad, "no gradient for \(key)"), g, atol: 2e-5, rtol: 1e-4, "grad \(key)")
    }
}

/// The dropped sample's features are the empty caption's, and the drop mask of the draws does not touch caption data.
@Test func captionConditionPassesTheDatasetsContextThrough() throws {
    let f = try Fixture("mmdit_train_step.safetensors")
    let c = t2iStepConfig()
    let objective = Objective(config: c, models: try c.resolveModels(sampleShape: [4, 8, 8], numClasses: 1, contextShape: [6, 16]))
    let batch = Batch(images: nil, x0: f["x0"], moments: false, labels: Tensor.zeros([3], dtype: .int64), context: f["context"])
    let draws = Objective.Draws(t: f["t"], noise: f["noise"], latentNoise: nil, dropMask: [true, false, true])
    guard case .context(let ctx) = objective.condition(batch, draws) else { Issue.record("caption batch gave labels"); return }
    expectClose(ctx, f["context"], atol: 0, rtol: 0, "context")
    expectClose(ctx.select(axis: 0, index: 1), f["empty_context"], atol: 0, rtol: 0, "dropped sample")
}

/// Caption choice and CFG drop are pure functions of (seed, epoch, item): the same call gives the same answer,
/// epochs differ, the drop rate is cfg-prob (deterministic counts over 20 000 items), and every caption index occurs.
@Test func captionChoiceIsAPureFunctionOfSeedEpochAndItem() {
    let a = CaptionChoice(seed: 3, dropProbability: 0.1), b = CaptionChoice(seed: 3, dropProbability: 0.1)
    let picks0 = (0..<20_000).map { a.caption(item: $0, epoch: 0, count: 5) }
    #expect(picks0 == (0..<20_000).map { b.caption(item: $0, epoch: 0, count: 5) })
    let picks1 = (0..<20_000).map { a.caption(item: $0, epoch: 1, count: 5) }
    #expect(zip(picks0, picks1).filter { $0 != $1 }.count > 14_000)               // ~80 % differ
    #expect(Set(picks0) == Set(0..<5))
    for k in 0..<5 { #expect((3_600...4_400).contains(picks0.filter { $0 == k }.count), "caption \(k)") }
    let drops = (0..<20_000).filter { a.dropped(item: $0, epoch: 0) }.count
    #expect((1_800...2_200).contains(drops), "drops \(drops) of 20 000 at p 0.1")
    #expect((0..<1000).allSatisfy { !CaptionChoice(seed: 3, dropProbability: 0).dropped(item: $0, epoch: 2) })
    #expect((0..<20_000).filter { CaptionChoice(seed: 4, dropProbability: 0.1).dropped(item: $0, epoch: 0) != a.dropped(item: $0, epoch: 0) }.count > 2_000)
}

@Test func studentAndDatasetMustAgreeOnTheCondition() throws {
    var c = t2iStepConfig()
    (c.encType, c.model) = ("none", "SiT-S/2")
    do {
        _ = try c.resolveModels(sampleShape: [4, 8, 8], numClasses: 1, contextShape: [6, 16])
        Issue.record("SiT on caption features was accepted")
    } catch { #expect("\(error)".contains("class-conditional") && "\(error)".contains("MMDiT") && "\(error)".contains("coco")) }
    (c.model, c.dataset) = ("MMDiT-D2/2", "fashion-mnist")
    do {
        _ = try c.resolveModels(sampleShape: [1, 32, 32], numClasses: 10)
        Issue.record("MMDiT on class labels was accepted")
    } catch { #expect("\(error)".contains("text-conditioned") && "\(error)".contains("fashion-mnist-captions")) }
    c.qkNorm = true
    #expect(throws: HasteError.self) { _ = try c.resolveModels(sampleShape: [4, 8, 8], numClasses: 1, contextShape: [6, 16]) }
    #expect(throws: HasteError.self) { try TrainConfig.load(file: nil, overrides: [("text-encoder-width", "96")]) }
}

/// The demo's text side: 40 distinct template-major captions; the random encoder is the same on every start (fixed
/// seed), and the file saved beside the run reads back (CLIPTextModel.load) to the same features.
@Test func demoCaptionsAndRandomTextEncoderAreDeterministic() throws {
    guard let vocab = clipVocabularyPath() else { return }
    #expect(FashionMNISTCaptions.allCaptions.count == 40 && Set(FashionMNISTCaptions.allCaptions).count == 40)
    #expect(FashionMNISTCaptions.allCaptions[0] == "a photo of a t-shirt" && FashionMNISTCaptions.allCaptions[17] == "a sneaker, product shot")
    var c = TrainConfig()
    (c.dataset, c.tokenizerVocab) = ("fashion-mnist-captions", vocab)
    let one = try TextEncoderSetup.make(c), two = try TextEncoderSetup.make(c)
    let texts = ["a photo of a bag", "a bag, product shot", ""]
    let a = one.encoder.encode(texts), b = two.encoder.encode(texts)
    #expect(a.shape == [3, 77, 64])
    // Determinism is in the weights, bit for bit; the features of two model objects may round differently when other
    // tests change OpenBLAS's process-wide thread count meanwhile, so they are compared at float rounding.
    func weights(_ m: CLIPTextModel) -> [[Float]] { m.store.parameters.map { $0.tensor.scalars(as: Float.self) } }
    #expect(weights(one.encoder.model) == weights(two.encoder.model), "same seed, same weights")
    expectClose(a, b, atol: 1e-5, rtol: 0, "two random encoders")
    #expect((a.select(axis: 0, index: 0) - a.select(axis: 0, index: 1)).abs().max().item() > 1e-3, "captions differ")
    let dir = temporaryDirectory()
    try TextEncoderSetup.save(try #require(one.save), runRoot: dir)
    let loaded = try CLIPTextModel.load(TextEncoderSetup.path(runRoot: dir))
    #expect(loaded.config == one.encoder.model.config)
    #expect(weights(loaded) == weights(one.encoder.model), "the saved file holds the same weights")
    expectClose(try CLIPTextEncoder(model: loaded, tokenizer: one.encoder.tokenizer).encode(texts), a, atol: 1e-5, rtol: 0, "reloaded")
    // The dataset: labels' captions, per-epoch templates, drop to the empty caption's features.
    let data = FashionMNISTCaptions(base: try FashionMNIST(split: "t10k"), encoder: one.encoder,
                                    choice: CaptionChoice(seed: 0, dropProbability: 0.5), save: nil)
    let batch = try data.batch(Array(0..<16), epoch: 3)
    let ctx = try #require(batch.context)
    let labels = batch.labels.scalars(as: Int64.self)
    for i in 0..<16 {
        let text = data.caption(item: i, epoch: 3)
        let expected = text.map { one.encoder.encode($0) } ?? data.emptyContext
        expectClose(ctx.select(axis: 0, index: i), expected, atol: 1e-5, rtol: 1e-4, "item \(i): \(text ?? "<dropped>")")
        if let text { #expect(text.contains(FashionMNISTCaptions.classNames[Int(labels[i])])) }
    }
    let prompts = try data.previewPrompts(10)
    #expect(prompts.texts == Array(FashionMNISTCaptions.allCaptions.prefix(10)) && prompts.context.shape == [10, 77, 64])
}
