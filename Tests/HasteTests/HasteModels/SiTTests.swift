import Foundation
import Testing
@testable import HasteModels
import HasteNN
import HasteTensor

/// The fixture's tiny SiT (Scripts/fixtures/models.py): odd sizes, random non-zero weights.
func tinySiTConfig() -> SiTConfig {
    var c = SiTConfig()
    (c.inputSize, c.patchSize, c.inChannels, c.hiddenSize, c.depth, c.numHeads) = (8, 2, 3, 24, 3, 3)
    (c.numClasses, c.encoderDepth, c.projectorDims, c.projectorHidden) = (5, 2, [10], 16)
    return c
}

@Test func sitForwardAndAllGradientsMatchPyTorch() throws {
    let f = try Fixture("sit_tiny.safetensors")
    let model = try SiT(tinySiTConfig())
    try model.store.load(f.tensors(under: "model."), strict: true)
    let out = model(f["x"], t: f["t"], y: f["y"].to(.int64), logitLayers: [0, 1], projections: true)
    expectClose(out.velocity, f["velocity"], atol: 2e-5, rtol: 1e-4, "velocity")
    expectClose(out.attentionLogits[0]!, f["logits0"], atol: 2e-5, rtol: 1e-4, "logits 0")
    expectClose(out.attentionLogits[1]!, f["logits1"], atol: 2e-5, rtol: 1e-4, "logits 1")
    expectClose(out.projections[0], f["proj0"], atol: 2e-5, rtol: 1e-4, "projection")
    let loss = (out.velocity * f["w1"]).sum() + (out.attentionLogits[1]! * f["w2"]).sum() + (out.projections[0] * f["w3"]).sum()
    model.store.zeroGrad()
    loss.backward()
    var checked = 0
    for (key, p) in model.store.parameters where f.has("grad." + key) {
        expectClose(p.grad!, f["grad." + key], atol: 5e-5, rtol: 1e-4, "grad \(key)")
        checked += 1
    }
    #expect(checked == model.store.parameters.count && checked > 30)
}

@Test func sitStateDictKeysAreTheReferences() throws {
    let expected = try fixtureText("sit-xl-2.keys.txt")
    var c = try SiTConfig.named("SiT-XL/2")
    c.projectorDims = [768]
    let shapes = try SiT.stateDictShapes(c)
    #expect(shapes.map { "\($0.0) \($0.1.map(String.init).joined(separator: "x"))" } == expected)
}

@Test func sitStartsAsZeroVelocityAndNamedSizesValidate() throws {
    var c = try SiTConfig.named("SiT-S/2")
    (c.inputSize, c.depth, c.hiddenSize, c.numHeads, c.projectorDims, c.encoderDepth) = (8, 2, 32, 4, [], 2)
    let m = try SiT(c, seed: 3)
    let out = m(Tensor.randn([2, 4, 8, 8], seed: 1), t: Tensor([Float(0.2), 0.9]), y: Tensor([Int64(1), 1000]))
    #expect(out.velocity.abs().max().item() == 0)           // adaLN-Zero: exactly 0 at step 0
    #expect(throws: HasteError.self) { try SiTConfig.named("SiT-M/2") }
    #expect(throws: HasteError.self) { try SiTConfig.named("SiT-B/3") }
}

@Test func positionAndTimestepTablesMatchTheSpecVectors() {
    let pos = Embeddings.sincos2D(dim: 1152, grid: 16).scalars(as: Float.self)
    func at(_ n: Int, _ k: Int) -> Float { pos[n * 1152 + k] }
    #expect(Swift.abs(at(1, 0) - 0.841471) < 1e-6 && Swift.abs(at(1, 1) - 0.8240513) < 1e-6)
    #expect(at(1, 576) == 0 && at(1, 864) == 1)
    #expect(Swift.abs(at(16, 576) - 0.841471) < 1e-6 && at(16, 288) == 1)
    #expect(Swift.abs(at(18, 288) + 0.4161468) < 1e-6 && Swift.abs(at(18, 289) + 0.3581212) < 1e-6)
    let e = Embeddings.timestep(Tensor([Float(0.5)]), dim: 256).scalars(as: Float.self)
    #expect(Swift.abs(e[0] - 0.8775826) < 1e-6 && Swift.abs(e[1] - 0.8936933) < 1e-6 && Swift.abs(e[128] - 0.4794255) < 1e-6)
    #expect(Swift.abs(e[255] - 5.373e-05) < 1e-7)
}

/// Lines of a committed text fixture.
func fixtureText(_ name: String) throws -> [String] {
    guard let url = Bundle.module.url(forResource: "Fixtures/" + name, withExtension: nil) else {
        throw HasteError.fileMissing(path: name, hint: "Regenerate with Scripts/make_fixtures.py")
    }
    return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
}

/// The adaLN modulation's pieces (`modulationChunks`: one copy into (k, N, D)) are `chunk(k, axis: -1)`'s values,
/// contiguous, and give the same gradient bit for bit, on the CPU and the emulated device (where the pieces'
/// gradients gather in place instead of by an add and a copy each).
@Test(arguments: [Device.cpu, EmulatedCUDA.device])
func modulationChunksAreChunkBitForBit(device: Device) {
    func run(_ split: (Tensor) -> [Tensor]) -> ([[UInt32]], [UInt32]) {
        let mod = (Tensor.randn([3, 6 * 5], seed: 8) * 2).to(device)
        mod.requiresGrad = true
        let pieces = split(mod)
        let terms = pieces.enumerated().map { i, p in (p * Tensor.randn([3, 5], seed: 20 + UInt64(i)).to(device)).sum() }
        terms.dropFirst().reduce(terms[0], +).backward()
        #expect(pieces.count == 6 && pieces.allSatisfy { $0.isContiguous && $0.shape == [3, 5] })
        return (pieces.map(floatBits), floatBits(mod.grad!))
    }
    let chunked = run { $0.chunk(6, axis: -1).map { $0.contiguous() } }, copied = run { modulationChunks($0, 6) }
    #expect(chunked.0 == copied.0, "pieces")
    #expect(chunked.1 == copied.1, "gradient")
}

/// SiT computes silu(c) once for its blocks and final layer (`SiTBlock.modulated`): the velocity is the blocks'
/// own `callAsFunction` chain's bit for bit (each computing silu(c)), and c's gradient the same sum in another order.
@Test func sitSharesTheModulationsSiLU() throws {
    let model = try SiT(tinySiTConfig(), seed: 4)
    for (i, p) in model.store.parameters.enumerated() { p.tensor.copyValues(from: Tensor.randn(p.tensor.shape, seed: 60 + UInt64(i)) * 0.2) }
    let x = Tensor.randn([2, 3, 8, 8], seed: 5), t = Tensor([Float(0.3), 0.9], shape: [2]), y = Tensor([Int64(1), 4])
    let shared = model(x, t: t, y: y).velocity
    // The same forward with each block taking c itself.
    let n = 2, d = model.config.hiddenSize
    // The patch embedding as SiT computes it (patchify + one linear: the conv's values, but not its summation order,
    // which the BLAS kernels pick per CPU; STYLE §2.9).
    let (p, g, k) = (model.config.patchSize, model.config.inputSize / model.config.patchSize, model.config.inChannels * model.config.patchSize * model.config.patchSize)
    let patches = x.reshaped([n, model.config.inChannels, g, p, g, p]).permuted([0, 2, 4, 1, 3, 5]).contiguous().reshaped([n, g * g, k])
    var h = patches.linear(model.patchWeight.reshaped([d, k]), model.patchBias) + model.posEmbed
    let c = model.tMLP(Embeddings.timestep(t, dim: 256)) + Tensor.embedding(model.labelTable, y)
    for block in model.blocks { h = block(h, c, logits: false).0 }
    let each = model.finalLayer(h, c).unpatchify(patch: model.config.patchSize, channels: model.config.inChannels)
    #expect(floatBits(shared.detached()) == floatBits(each.detached()))
    // Gradients: the same within float32 summation order.
    let up = Tensor.randn(shared.shape, seed: 6)
    // (copied out before the second call: the gradients may be the store's own slots)
    let g1 = model.store.gradients(of: (shared * up).sum()).map { ($0.0, Tensor($0.1.scalars(as: Float.self), shape: $0.1.shape)) }
    let g2 = model.store.gradients(of: (each * up).sum())
    #expect(g1.count == g2.count && g1.count > 10)
    for ((name, a), (_, b)) in zip(g1, g2) { expectClose(a, b, atol: 1e-6, rtol: 1e-5, name) }
}
