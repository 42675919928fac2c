import Testing
import HasteModels
import HasteNN
import HasteTensor

@Test func dinov2ResamplesPreprocessesAndMatchesPyTorch() throws {
    let f = try Fixture("dinov2_tiny.safetensors")
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 24, 3, 3, 4)
    let model = DINOv2(c)
    let hub = f.tensors(under: "hub.")
    #expect(hub["pos_embed"]!.shape == [1, 26, 24])
    let adapted = model.adapt(hub)
    expectClose(adapted["pos_embed"]!, f["resampled_pos_embed"], atol: 1e-6, rtol: 1e-5, "antialiased pos-embed resample")
    try model.store.load(adapted, strict: true)
    let x = DINOv2.preprocess(f["images"].to(.uint8), size: 8)
    expectClose(x, f["preprocessed"], atol: 1e-5, rtol: 1e-5, "normalise then bicubic resize")
    let out = noGrad { model(x, logitLayers: [1, 2]) }
    expectClose(out.patchTokens, f["patch_tokens"], atol: 2e-5, rtol: 1e-4, "patch tokens")
    expectClose(out.classToken, f["cls_token"], atol: 2e-5, rtol: 1e-4, "class token")
    expectClose(out.attentionLogits[1]!, f["logits1"], atol: 2e-5, rtol: 1e-4, "logits 1 (class row/col removed)")
    expectClose(out.attentionLogits[2]!, f["logits2"], atol: 2e-5, rtol: 1e-4, "logits 2")
    #expect(out.attentionLogits[0] == nil)
}

@Test func dinov2StateDictKeysAreTheHubs() throws {
    let expected = try fixtureText("dinov2-vitb14.keys.txt")
    var c = try DINOv2Config.named("dinov2-vit-b")
    c.grid = 37
    let shapes = try DINOv2.stateDictShapes(c)
    #expect(shapes.map { "\($0.0) \($0.1.map(String.init).joined(separator: "x"))" } == expected)
}

@Test func dinov2RejectsRegisterAndUnknownVariants() {
    #expect(throws: HasteError.self) { try DINOv2Config.named("dinov2-vit-b-reg") }
    #expect(throws: HasteError.self) { try DINOv2Config.named("mocov3-vit-b") }
    #expect((try? DINOv2Config.named("dinov2-vit-l"))?.depth == 24)
    #expect((try? DINOv2Config.named("dinov2-vit-g"))?.swiGLU == true)
}

/// A frozen teacher never allocates a gradient arena: while it is built it holds one value arena (plus one
/// parameter's initial value at a time), a trainable one a gradient arena of the same size on top; its
/// parameters neither track gradients nor hold one, and it computes the same values.
@Test func frozenDINOv2NeverAllocatesGradients() throws {
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 24, 3, 3, 4)
    let (frozen, f) = TensorMemory.measure { DINOv2(c, seed: 3, frozen: true) }
    let (trainable, t) = TensorMemory.measure { DINOv2(c, seed: 3) }
    let valueBytes = frozen.store.parameters.reduce(0) { $0 + $1.tensor.count * 4 }
    #expect(frozen.store.parameters.allSatisfy { !$0.tensor.requiresGrad && $0.tensor.grad == nil })
    #expect(t.liveBytes - f.liveBytes >= valueBytes, "trainable \(t.liveBytes) B vs frozen \(f.liveBytes) B live")
    // Built into a planned arena (ParameterStore(plannedFrom:)): the frozen one peaks at its arena plus one initial
    // value, below two copies of the weights; the trainable one holds value and gradient arenas.
    #expect(f.peakBytes < valueBytes * 3 / 2 && t.peakBytes >= 2 * valueBytes,
            "trainable \(t.peakBytes) B vs frozen \(f.peakBytes) B at the peak, weights \(valueBytes) B")
    let x = Tensor.randn([2, 3, 8, 8], seed: 4)
    let a = noGrad { frozen(x, logitLayers: [2]) }, b = noGrad { trainable(x, logitLayers: [2]) }
    #expect(a.patchTokens.scalars(as: Float.self) == b.patchTokens.scalars(as: Float.self))
}
