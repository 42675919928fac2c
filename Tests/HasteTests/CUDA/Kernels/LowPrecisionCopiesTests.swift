import Testing
import Foundation
@testable import HasteTensor
@testable import HasteNN
@testable import HasteCUDA
import HasteModels
import HasteTraining

/// A training step's bf16 weights from one cast of the parameter arena (`ParameterStore.lowPrecisionCopies`, read by
/// `Tensor.narrowed` under `LowPrecisionCopies.current`) instead of one cast per weight: the same bits for the
/// student's step and the teacher's forward, fewer launches, and no copy handed out once a tensor views other storage.
@Suite(.serialized) struct LowPrecisionCopiesTests {
    static let device = EmulatedCUDA.device


    /// A SiT training step (with logits, so the aligned attention path narrows too) under `Trainer.autocast`: the
    /// velocity and every gradient bit for bit with and without the arena cast.
    @Test func sitStepIsTheSameWithOneArenaCast() throws {
        let sit = try tinyGenerationSiT()
        sit.store.move(to: Self.device)
        let x = Tensor.randn([2, 1, 8, 8], seed: 41).to(Self.device), up = Tensor.randn([2, 1, 8, 8], seed: 42).to(Self.device)
        let t = Tensor([Float(0.25), 0.6], shape: [2]).to(Self.device), y = Tensor([Int64(2), 0]).to(Self.device)
        func step() -> [[UInt32]] {
            sit.store.setRequiresGrad(true)
            defer { sit.store.setRequiresGrad(false) }
            let out = Trainer.autocast(.bfloat16, narrowing: sit.store) { sit(x, t: t, y: y, logitLayers: [0]) }
            let loss = (out.velocity * up).sum() + out.attentionLogits[0]!.to(.float32).square().sum()
            return [floatBits(out.velocity.detached())] + sit.store.gradients(of: loss).map { floatBits($0.1) }
        }
        let tally = LowPrecisionCopies.Tally()
        let arena = LowPrecisionCopies.$tally.withValue(tally) { step() }
        let each = LowPrecisionCopies.$arenaCastAllowed.withValue(false) { step() }
        #expect(arena == each, "velocity and gradients with the arena cast")
        #expect(tally.served >= 20, "\(tally.served) copies read")
        // silu(c) is narrowed once for the 2 blocks' and the final layer's modulation GEMMs: its copy is read 3 times.
        let siluTally = LowPrecisionCopies.Tally()
        let velocity = LowPrecisionCopies.$tally.withValue(siluTally) {
            noGrad { Autocast.run(.bfloat16) { sit(x, t: t, y: y).velocity } }      // no arena copies: silu(c)'s alone
        }
        let velocityEach = LowPrecisionCopies.$arenaCastAllowed.withValue(false) { noGrad { Autocast.run(.bfloat16) { sit(x, t: t, y: y).velocity } } }
        #expect(siluTally.served == 3 && floatBits(velocity) == floatBits(velocityEach), "silu(c)'s copy read \(siluTally.served) times")
        // (The launches it saves are pinned by BenchTrainCommandTests' host-only counts: a separate process, where
        // this emulator's launch count also has the other tests' running beside.)
        // Nothing to do in float32, on the CPU, or without an arena.
        #expect(sit.store.lowPrecisionCopies(.float16) == nil)
        let cpu = try tinyGenerationSiT()
        #expect(cpu.store.lowPrecisionCopies(.bfloat16) == nil)
    }

    /// The frozen DINOv2 teacher's bf16 forward (with logits), as `Trainer.teacherOutput` runs it: the same bits.
    @Test func teacherForwardIsTheSameWithOneArenaCast() {
        let model = tinyRandomDINOv2(valueSeed: 200, on: Self.device)
        let x = Tensor.randn([2, 3, 8, 8], seed: 7).to(Self.device)
        func run() -> [[UInt32]] {
            let out = noGrad { Trainer.autocast(.bfloat16, narrowing: model.store) { model(x, logitLayers: [1, 2]) } }
            return [out.patchTokens, out.classToken, out.attentionLogits[1]!, out.attentionLogits[2]!].map(floatBits)
        }
        let each = LowPrecisionCopies.$arenaCastAllowed.withValue(false) { run() }
        #expect(run() == each)
    }

    /// bf16 sampling (`SampleGenerator.images`: every model evaluation of the batch reads one arena cast): the same
    /// images, and the model's weights are the arena's copies inside the sampler.
    @Test func bf16SamplingIsTheSameWithOneArenaCast() throws {
        let sit = try tinyGenerationSiT()
        sit.store.setRequiresGrad(false)
        sit.store.move(to: Self.device)
        let model = GenerationModel(sit: sit, pixelSpace: true, name: "SiT-S/2")
        var o = tinyGenerateOptions(temporaryDirectory())
        o.precision = .bfloat16
        func images() throws -> [UInt8] {
            try SampleGenerator(options: o, model: model, vae: nil, checkpoint: "x.safetensors").images([0, 3]).scalars(as: UInt8.self)
        }
        let tally = LowPrecisionCopies.Tally()
        let arena = try LowPrecisionCopies.$tally.withValue(tally) { try images() }
        let each = try LowPrecisionCopies.$arenaCastAllowed.withValue(false) { try images() }
        #expect(arena == each && arena.count == 2 * 8 * 8 * 3)
        // Each of the 4 SDE steps' model evaluations narrows the 2 blocks' 10 weights and biases at least.
        #expect(tally.served >= 4 * 20, "\(tally.served) copies read")
    }

    /// A copy is handed out for the elements it was made of (storage, offset, count; in the asking tensor's shape),
    /// only for its dtype, and not once the tensor views other storage.
    @Test func copiesAreHandedOutOnlyWhileTheirTensorIsUnmoved() {
        let store = ParameterStore(seed: 3)
        let layer = Linear(store.root["fc"], 8, 4)
        store.finalize(on: Self.device)
        let copies = store.lowPrecisionCopies(.bfloat16)!
        #expect(copies.count == 2)
        let want = noGrad { layer.weight.to(.bfloat16) }
        #expect(floatBits(copies.copy(of: layer.weight, .bfloat16)!) == floatBits(want))
        #expect(copies.copy(of: layer.weight, .float16) == nil)
        #expect(copies.copy(of: Tensor.zeros([4, 8]).to(Self.device), .bfloat16) == nil, "another tensor")
        // A contiguous view of the same elements (as SiT reads its patch embedding's conv weight) gets the copy in its
        // shape; a view of fewer of them, or starting elsewhere, none.
        let view = copies.copy(of: layer.weight.reshaped([32]), .bfloat16)
        #expect(view?.shape == [32] && view.map(floatBits) == floatBits(want))
        #expect(copies.copy(of: layer.weight.narrowed(0, start: 0, length: 2), .bfloat16) == nil)
        #expect(copies.copy(of: layer.weight.narrowed(0, start: 1, length: 3), .bfloat16) == nil)
        // Narrowing inside the scope reads the copy (no cast), outside casts.
        let inside = LowPrecisionCopies.$current.withValue(copies) { layer.weight.narrowed(.bfloat16) }
        #expect(inside === copies.copy(of: layer.weight, .bfloat16))
        #expect(layer.weight.narrowed(.bfloat16) !== inside)
        store.move(to: .cpu)                                        // re-pointed: the copy is stale
        #expect(copies.copy(of: layer.weight, .bfloat16) == nil)
    }
}
