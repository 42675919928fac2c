import Testing
import HasteDiffusion
import HasteModels
import HasteNN
import HasteTensor

/// grad-checkpointing of SiT and MMDiT blocks (issue 15, item 2): one HASTE training step (denoising + 0.5·projection
/// + 0.5·attention, the logits of blocks 0 and 1, the projector after block 2) gives the same loss and every
/// parameter gradient bit for bit with and without checkpointing: the recompute makes the same values and the
/// checkpoint node keeps each gradient sum's order (Autograd/Checkpoint.swift). Same model object, same inputs,
/// one after the other: a repeat of one computation, where bit equality is the right test (STYLE §2.9).

/// A tiny SiT with every weight random (adaLN-Zero would leave the blocks' gradients at zero at step 0).
private func tinyCheckpointSiT(depth: Int = 4, hidden: Int = 32, inputSize: Int = 8) throws -> SiT {
    var c = SiTConfig()
    (c.inputSize, c.patchSize, c.inChannels, c.hiddenSize, c.depth, c.numHeads) = (inputSize, 2, 4, hidden, depth, 2)
    (c.numClasses, c.encoderDepth, c.projectorDims, c.projectorHidden) = (3, 3, [12], 16)
    let model = try SiT(c, seed: 5)
    randomize(model.store)
    return model
}

private func randomize(_ store: ParameterStore) {
    noGrad {
        for (k, p) in store.parameters.enumerated() {
            p.tensor.copyValues(from: Tensor.randn(p.tensor.shape, seed: 100 &+ UInt64(k)) * 0.2)
        }
    }
}

/// The step's loss and the gradient of every parameter (name order), from zeroed gradients.
private func step(_ store: ParameterStore, _ forward: () -> SiTOutput, tokens: Int, heads: Int, batch: Int)
    -> (loss: [Float], grads: [String: [Float]]) {
    store.zeroGrad()
    let out = forward()
    let x0 = Tensor.randn(out.velocity.shape, seed: 1), noise = Tensor.randn(out.velocity.shape, seed: 2)
    let t = Tensor.rand([batch], seed: 3)
    let den = Losses.denoising(prediction: out.velocity, x0: x0, noise: noise, t: t, path: .linear)
    let proj = Losses.projection(out.projections, [Tensor.randn([batch, tokens, 12], seed: 4)])
    let teacher = [0: Tensor.randn([batch, heads, tokens, tokens], seed: 5), 1: Tensor.randn([batch, heads, tokens, tokens], seed: 6)]
    let attn = Losses.attention(student: out.attentionLogits, teacher: teacher, pairs: [(0, 0), (1, 1)], heads: heads)
    let loss = den + proj * 0.5 + attn * 0.5
    loss.backward()
    var grads: [String: [Float]] = [:]
    for p in store.parameters { grads[p.name] = p.tensor.grad!.scalars(as: Float.self) }
    return (loss.scalars(as: Float.self), grads)
}

private func expectSame(_ a: (loss: [Float], grads: [String: [Float]]), _ b: (loss: [Float], grads: [String: [Float]]),
                        sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.loss == b.loss, "loss \(a.loss) with checkpointing vs \(b.loss) without", sourceLocation: sourceLocation)
    #expect(a.grads.keys.sorted() == b.grads.keys.sorted(), sourceLocation: sourceLocation)
    for (name, g) in b.grads.sorted(by: { $0.key < $1.key }) {
        let c = a.grads[name] ?? []
        let worst = zip(c, g).map { Swift.abs($0 - $1) }.max() ?? .infinity
        #expect(c == g, "gradient of \(name) differs (max |Δ| \(worst))", sourceLocation: sourceLocation)
    }
}

@Test func sitStepWithCheckpointingIsBitIdentical() throws {
    let model = try tinyCheckpointSiT()
    let x = Tensor.randn([2, 4, 8, 8], seed: 7), t = Tensor.rand([2], seed: 8), y = Tensor([Int64(0), 3], shape: [2])
    func run(_ ckpt: Bool) -> (loss: [Float], grads: [String: [Float]]) {
        step(model.store, { model(x, t: t, y: y, logitLayers: [0, 1], projections: true, checkpointing: ckpt) },
             tokens: 16, heads: 2, batch: 2)
    }
    let plain = run(false), ckpt = run(true)
    expectSame(ckpt, plain)
    #expect(plain.grads["blocks.1.mlp.fc1.weight"]!.contains { $0 != 0 } && plain.grads["projectors.0.0.weight"]!.contains { $0 != 0 })
    expectSame(run(false), plain)                    // the reference itself repeats exactly
}

@Test func mmditStepWithCheckpointingIsBitIdentical() throws {
    var c = tinyMMDiTConfig()                         // depth 3: the last block's context stream is pre-only
    c.projectorDims = [12]
    let model = try MMDiT(c, seed: 6)
    let x = Tensor.randn([2, 4, 8, 8], seed: 7), t = Tensor.rand([2], seed: 8)
    let context = Tensor.randn([2, c.contextTokens, c.contextDim], seed: 9)
    func run(_ ckpt: Bool) -> (loss: [Float], grads: [String: [Float]]) {
        step(model.store, { model(x, t: t, context: context, logitLayers: [0, 1], projections: true, checkpointing: ckpt) },
             tokens: 16, heads: 2, batch: 2)
    }
    let plain = run(false), ckpt = run(true)
    expectSame(ckpt, plain)
    #expect(plain.grads["joint_blocks.0.context_block.mlp.fc1.weight"]!.contains { $0 != 0 })
}

/// The peak of live tensor storage over one training step (forward, loss, backward) of a SiT of depth 8 at 64
/// tokens: with checkpointing only the blocks' inputs and one block's activations at a time are live, so the
/// peak is lower. `TensorMemory.measure` counts only this step's storage: the same bytes on every run.
@Test func checkpointingLowersTheStepsPeakTensorMemory() throws {
    let model = try tinyCheckpointSiT(depth: 8, hidden: 64, inputSize: 16)
    let x = Tensor.randn([2, 4, 16, 16], seed: 7), t = Tensor.rand([2], seed: 8), y = Tensor([Int64(1), 2], shape: [2])
    func peak(_ ckpt: Bool) -> Int {
        TensorMemory.measure {
            _ = step(model.store, { model(x, t: t, y: y, logitLayers: [0, 1], projections: true, checkpointing: ckpt) },
                     tokens: 64, heads: 2, batch: 2)
        }.counts.peakBytes
    }
    let plain = peak(false), ckpt = peak(true)
    #expect(ckpt < plain, "peak \(ckpt) B with checkpointing vs \(plain) B without")
    #expect(peak(true) == ckpt && peak(false) == plain, "the byte counts repeat")
}
