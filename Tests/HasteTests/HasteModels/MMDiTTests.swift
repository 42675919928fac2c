import Foundation
import Testing
import HasteDiffusion
import HasteModels
import HasteNN
import HasteTensor
import HasteTraining

/// The fixture's tiny MMDiT (Scripts/fixtures/make_mmdit_fixture.py, TINY): PyTorch default random init,
/// a 6×6 position table cropped to the 4×4 grid.
func tinyMMDiTConfig() -> MMDiTConfig {
    var c = MMDiTConfig()
    (c.inputSize, c.patchSize, c.inChannels, c.depth, c.hiddenSize, c.numHeads) = (8, 2, 4, 3, 24, 3)
    (c.contextTokens, c.contextDim, c.posEmbedMaxSize) = (5, 32, 6)
    (c.encoderDepth, c.projectorDims, c.projectorHidden) = (2, [10], 16)
    return c
}

/// The fixture's weights, on `device`.
private func fixtureMMDiT(_ f: Fixture, on device: Device = .cpu) throws -> MMDiT {
    let model = try MMDiT(tinyMMDiTConfig())
    try model.store.load(f.tensors(under: "model."), strict: true)
    model.store.move(to: device)
    return model
}

/// x_t on the linear path from the fixture's x0, noise and t.
private func noisy(_ f: Fixture) -> Tensor {
    let c = PathType.linear.coefficients(f["t"].reshaped([2, 1, 1, 1]))
    return c.alpha * f["x0"] + c.sigma * f["noise"]
}

/// One HASTE t2i step's terms as the fixture computes them: denoising, projection vs the teacher features,
/// attention (student blocks 0, 1 vs teacher 1, 2, first 2 heads), total with coefficients 0.5 and 0.5.
private func losses(_ out: SiTOutput, _ f: Fixture, on device: Device = .cpu)
    -> (den: Tensor, proj: Tensor, attn: Tensor, total: Tensor) {
    let d = { (t: Tensor) in t.to(device) }
    let den = Losses.denoising(prediction: out.velocity, x0: d(f["x0"]), noise: d(f["noise"]), t: d(f["t"]), path: .linear)
    let proj = Losses.projection(out.projections, [d(f["teacher_feats"])])
    let teacher = Dictionary(uniqueKeysWithValues: (0..<3).map { ($0, d(f["teacher_logits\($0)"])) })
    let attn = Losses.attention(student: out.attentionLogits, teacher: teacher, pairs: [(0, 1), (1, 2)], heads: 2)
    return (den, proj, attn, den + proj * 0.5 + attn * 0.5)
}

private let gradKeys = ["x_embedder.proj.weight", "t_embedder.mlp.0.weight", "context_embedder.bias",
                        "joint_blocks.0.context_block.attn.qkv.weight", "joint_blocks.0.x_block.adaLN_modulation.1.weight",
                        "joint_blocks.1.x_block.attn.qkv.bias", "joint_blocks.2.context_block.adaLN_modulation.1.weight",
                        "joint_blocks.2.x_block.mlp.fc2.weight", "final_layer.linear.weight", "projectors.0.0.weight"]

@Test func mmditForwardLogitsAndProjectionsMatchPyTorch() throws {
    let f = try Fixture("mmdit_tiny.safetensors")
    let model = try fixtureMMDiT(f)
    let out = model(noisy(f), t: f["t"], context: f["context"], logitLayers: [0, 1], projections: true)
    expectClose(out.velocity, f["output"], atol: 1e-5, rtol: 1e-4, "output")
    expectClose(out.attentionLogits[0]!, f["logits0"], atol: 1e-5, rtol: 1e-4, "logits 0")
    expectClose(out.attentionLogits[1]!, f["logits1"], atol: 1e-5, rtol: 1e-4, "logits 1")
    #expect(out.attentionLogits.count == 2 && out.projections.count == 1)
    expectClose(out.projections[0], f["proj0"], atol: 1e-5, rtol: 1e-4, "projection")
    // Without taps: the same output, no logits, no projections (projectors not run).
    let plain = model(noisy(f), t: f["t"], context: f["context"])
    expectClose(plain.velocity, out.velocity, atol: 0, rtol: 0, "output without taps")
    #expect(plain.attentionLogits.isEmpty && plain.projections.isEmpty)
}

@Test func mmditTrainingStepLossesAndGradientsMatchPyTorch() throws {
    let f = try Fixture("mmdit_tiny.safetensors")
    let model = try fixtureMMDiT(f)
    let out = model(noisy(f), t: f["t"], context: f["context"], logitLayers: [0, 1], projections: true)
    let l = losses(out, f)
    expectClose(l.den, f["loss.denoising"].reshaped([]), atol: 1e-6, rtol: 1e-5, "denoising loss")
    expectClose(l.proj, f["loss.projection"].reshaped([]), atol: 1e-6, rtol: 1e-5, "projection loss")
    expectClose(l.attn, f["loss.attention"].reshaped([]), atol: 1e-6, rtol: 1e-5, "attention loss")
    expectClose(l.total, f["loss.total"].reshaped([]), atol: 1e-6, rtol: 1e-5, "total loss")
    model.store.zeroGrad()
    l.total.backward()
    for key in gradKeys {
        let p = try #require(model.store.parameters.first { $0.name == key }?.tensor, "parameter \(key)")
        expectClose(p.grad!, f["grad." + key], atol: 2e-5, rtol: 1e-4, "grad \(key)")
    }
}

@Test func mmditStateDictKeysAndParameterCountAreTheReferences() throws {
    let expected = try fixtureText("mmdit-xl-2.keys.txt")
    let c = try MMDiTConfig.named("MMDiT-XL/2")
    #expect(c == MMDiTConfig() && c.depth == 24 && c.hiddenSize == 768 && c.numHeads == 24 && c.posEmbedMaxSize == 16)
    let shapes = try MMDiT.stateDictShapes(c)   // declared only: nothing allocated
    #expect(shapes.map { "\($0.0) \($0.1.map(String.init).joined(separator: "x"))" } == expected)
    let count = { (s: [(String, [Int])]) in s.filter { $0.0 != "pos_embed" }.reduce(0) { $0 + $1.1.reduce(1, *) } }
    #expect(count(shapes) == 512_415_504)
    #expect(count(shapes.filter { $0.0.hasPrefix("projectors.") }) == 7_344_896)
    #expect(shapes.first!.1 == [1, 256, 768])
    // The pre-only context stream of the last block: adaLN (shift, scale) and qkv only.
    #expect(shapes.contains { $0.0 == "joint_blocks.23.context_block.adaLN_modulation.1.weight" && $0.1 == [1536, 768] })
    #expect(!shapes.contains { $0.0.hasPrefix("joint_blocks.23.context_block.attn.proj") || $0.0.hasPrefix("joint_blocks.23.context_block.mlp") })
    // Named sizes and validation.
    let small = try MMDiTConfig.named("MMDiT-D4/2")
    #expect(small.depth == 4 && small.hiddenSize == 128 && small.numHeads == 4 && small.encoderDepth == 4)
    #expect(throws: HasteError.self) { try MMDiTConfig.named("MMDiT-L/2") }
    var big = MMDiTConfig()
    big.inputSize = 64                       // 512 px: grid 32 > the reference's forced 16×16 table
    #expect(throws: HasteError.self) { try big.validate() }
}

/// PyTorch's default init (spec §4): every weight and bias U(±1/√fanIn) (conv: fanIn = C·p·p), the sin-cos
/// table cropped at the centre; adaLN-Zero as an option makes the output exactly 0.
@Test func mmditDefaultInitIsPyTorchsAndAdaLNZeroIsOptional() throws {
    let model = try MMDiT(tinyMMDiTConfig(), seed: 7)
    let state = Dictionary(uniqueKeysWithValues: model.store.stateDict())
    for (key, p) in model.store.parameters {
        let weight = key.hasSuffix(".bias") ? state[String(key.dropLast(4)) + "weight"]! : p
        let bound = 1 / Double(weight.shape.dropFirst().reduce(1, *)).squareRoot()
        let v = p.scalars(as: Double.self)
        let maxAbs = v.map(Swift.abs).max()!
        #expect(maxAbs <= bound && maxAbs > 0.5 * bound, "\(key): max |w| \(maxAbs), bound \(bound)")
        if v.count >= 1000 {
            let mean = v.reduce(0, +) / Double(v.count), meanSq = v.reduce(0) { $0 + $1 * $1 } / Double(v.count)
            #expect(Swift.abs(mean) < 0.1 * bound && Swift.abs(meanSq / (bound * bound) - 1.0 / 3) < 0.05, "\(key): U(±b) moments")
        }
    }
    // pos_embed = the 6×6 table; the forward adds its centred 4×4 window (rows/cols 1...4).
    let table = Embeddings.sincos2D(dim: 24, grid: 6)
    expectClose(state["pos_embed"]!.reshaped([36, 24]), table, atol: 0, rtol: 0, "pos_embed")
    var c = tinyMMDiTConfig()
    c.posEmbedMaxSize = nil
    c.adaLNZeroInit = true
    let zero = try MMDiT(c, seed: 7)
    #expect(zero.store["pos_embed"]!.shape == [1, 16, 24])
    let out = zero(Tensor.randn([2, 4, 8, 8], seed: 1), t: Tensor([Float(0.2), 0.9]), context: Tensor.randn([2, 5, 32], seed: 2))
    #expect(out.velocity.abs().max().item() == 0)
    #expect(zero.store["joint_blocks.0.x_block.attn.qkv.weight"]!.abs().max().item() > 0)
}

/// The crop: a model whose table is the 4×4 grid, given the 6×6 model's weights with pos_embed replaced by the
/// centre window, computes the same output.
@Test func mmditCropsThePositionTableAtTheCentre() throws {
    let f = try Fixture("mmdit_tiny.safetensors")
    var c = tinyMMDiTConfig()
    c.posEmbedMaxSize = nil
    let uncropped = try MMDiT(c)
    var state = f.tensors(under: "model.")
    state["pos_embed"] = state["pos_embed"]!.reshaped([1, 6, 6, 24]).narrowed(1, start: 1, length: 4)
        .narrowed(2, start: 1, length: 4).contiguous().reshaped([1, 16, 24])
    try uncropped.store.load(state, strict: true)
    let a = uncropped(noisy(f), t: f["t"], context: f["context"]).velocity
    expectClose(a, f["output"], atol: 1e-5, rtol: 1e-4, "output with a pre-cropped table")
}

/// A train_t2i.py-style checkpoint (model, ema, args, steps) loads with the configuration read off its keys
/// and args; a state dict with a missing key fails naming it.
@Test func mmditLoadsReferenceCheckpoints() throws {
    let f = try Fixture("mmdit_tiny.safetensors")
    guard let url = Bundle.module.url(forResource: "Fixtures/pth/mmdit_tiny_ckpt.pt", withExtension: nil) else {
        Issue.record("missing fixture pth/mmdit_tiny_ckpt.pt"); return
    }
    var expected = tinyMMDiTConfig()
    expected.contextTokens = 77              // not in the weights
    for select in CheckpointSelection.allCases {
        let model = try ReferenceCheckpoint.loadMMDiT(path: url.path, select: select)
        #expect(model.config == expected)
        let out = model(noisy(f), t: f["t"], context: f["context"])
        expectClose(out.velocity, f["output"], atol: 1e-5, rtol: 1e-4, "\(select) output")
    }
    var state = f.tensors(under: "model.")
    state["joint_blocks.1.x_block.mlp.fc2.bias"] = nil
    state["joint_blocks.2.context_block.attn.proj.weight"] = Tensor.zeros([24, 24])
    let model = try MMDiT(tinyMMDiTConfig())
    do {
        try model.store.load(state, strict: true)
        Issue.record("a strict load with a missing and an unexpected key succeeded")
    } catch {
        #expect("\(error)".contains("joint_blocks.1.x_block.mlp.fc2.bias") && "\(error)".contains("joint_blocks.2.context_block.attn.proj.weight"))
    }
}
