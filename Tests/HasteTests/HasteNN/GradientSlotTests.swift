import Testing
import HasteDistributed
import HasteModels
@testable import HasteNN
@testable import HasteTensor
import HasteTraining

/// Gradient slots after `zeroGrad` (issue 15, small-batch speed): zeroGrad marks the slots stale instead of filling
/// the arena, the walk's first accumulation overwrites a stale slot (a Linear's dW/db GEMM straight into it), later
/// ones add, and a slot no walk reached reads as zero wherever it is read. Every slot starts each test poisoned with
/// NaN, so a stale value added to, or read without being filled, shows.
@Suite struct GradientSlotTests {
    /// Every kind of leaf the walk meets: Linear weights and biases (written in place), a weight two Linear calls
    /// share (two terms, summed, then accumulated), an elementwise gain (a fresh gradient, copied in) and a Linear
    /// only some losses reach.
    struct Net {
        let store: ParameterStore
        let a: Linear, shared: Linear, unused: Linear, gain: Tensor
        init() {
            let store = ParameterStore(seed: 4)
            a = Linear(store.root["a"], 4, 3)
            shared = Linear(store.root["shared"], 3, 3)
            gain = store.root.parameter("gain", [3], .constant(1.5))
            unused = Linear(store.root["unused"], 4, 3)
            store.finalize()
            self.store = store
        }
        func loss(_ x: Tensor, reachUnused: Bool = false) -> Tensor {
            let h = shared(shared(a(x)).tanh()) * gain
            return (reachUnused ? h + unused(x) : h).square().sum()
        }
        /// Fresh gradients of `loss` (torch.autograd.grad: no slot is touched), zeros where it does not reach.
        func reference(_ loss: Tensor) -> [[Float]] { store.gradients(of: loss).map { $0.1.scalars(as: Float.self) } }
        func poison() { for (_, p) in store.parameters { p.grad!.copyValues(from: Tensor.full(p.shape, .nan)) } }
        /// The slots' memory as it is, without filling a stale one.
        var raw: [[Float]] { store.parameters.map { $0.tensor.gradValue!.scalars(as: Float.self) } }
    }

    static let x1 = Tensor.randn([5, 4], seed: 11), x2 = Tensor.randn([5, 4], seed: 12)

    @Test func zeroGradMarksSlotsStaleAndTheWalkOverwritesThem() {
        let net = Net()
        let expected = net.reference(net.loss(Self.x1))
        net.poison()
        net.store.zeroGrad()
        #expect(net.store.parameters.allSatisfy { $0.tensor.gradIsStale }, "zeroGrad fills nothing")
        #expect(net.raw.allSatisfy { $0.allSatisfy(\.isNaN) })
        net.loss(Self.x1).backward()
        for ((key, p), (raw, want)) in zip(net.store.parameters, zip(net.raw, expected)) where !key.hasPrefix("unused") {
            #expect(!p.gradIsStale && raw == want, "\(key): the walk's value, not NaN + g")
        }
        // The Linear no walk reached is still stale (its memory last step's), and reads as zero everywhere.
        let unused = [net.unused.weight, net.unused.bias!]
        #expect(unused.allSatisfy { $0.gradIsStale && $0.gradValue!.scalars(as: Float.self).allSatisfy(\.isNaN) })
        let total = expected.joined().reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        let norm = clipGradNorm(net.store, maxNorm: 1e9)                   // reads the arena: fills the stale slots
        #expect(abs(norm - total) <= 1e-6 * total, "norm \(norm) vs \(total)")
        #expect(unused.allSatisfy { !$0.gradIsStale && $0.grad!.scalars(as: Float.self).allSatisfy { $0 == 0 } })
        #expect(net.raw == expected)
    }

    @Test func laterAccumulationsAddAndPartlyReachedSlotsStartFromZero() {
        let net = Net()
        let g1 = net.reference(net.loss(Self.x1)), g2 = net.reference(net.loss(Self.x2, reachUnused: true))
        net.poison()
        net.store.zeroGrad()
        net.loss(Self.x1).backward()                          // `unused` not reached: stays stale
        net.loss(Self.x2, reachUnused: true).backward()       // reached now: overwritten; the others add
        let sums = zip(g1, g2).map { zip($0, $1).map { $0 + $1 } }
        for ((key, p), (got, want)) in zip(net.store.parameters, zip(net.raw, sums)) {
            #expect(!p.gradIsStale && got == want, "\(key) after two accumulations")
        }
        // A single reached slot read through `grad` right after zeroGrad is zero; then the walk adds to it.
        net.store.zeroGrad()
        #expect(net.a.weight.grad!.scalars(as: Float.self).allSatisfy { $0 == 0 } && !net.a.weight.gradIsStale)
        net.loss(Self.x1).backward()
        #expect(net.raw[0] == g1[0].map { 0 + $0 })
    }

    /// A skipped step (non-finite gradients, then zeroGrad as the Trainer's bad-step path) leaves nothing behind.
    @Test func aSkippedStepLeavesNoNonFiniteGradient() {
        let net = Net()
        let good = net.reference(net.loss(Self.x1))
        net.store.zeroGrad()
        (net.loss(Self.x2, reachUnused: true) * Double.nan).backward()
        #expect(clipGradNorm(net.store, maxNorm: 1).isNaN)
        net.store.zeroGrad()
        net.loss(Self.x1).backward()
        #expect(net.raw.dropLast(2) == good.dropLast(2), "the slots this walk reached")
        #expect(clipGradNorm(net.store, maxNorm: 1e9).isFinite)
        #expect(net.raw == good)
        let adam = AdamW(store: net.store, lr: 0.1)
        adam.step()
        #expect(net.store.parameters.allSatisfy { $0.tensor.scalars(as: Float.self).allSatisfy(\.isFinite) })
    }

    /// Data parallelism sums buckets straight from the arena: a slot this walk did not reach goes in as zero.
    @Test func aReducerSumsUnreachedStaleSlotsAsZero() throws {
        let net = Net()
        let comm = MultiplyingCommunicator(size: 2)
        let reducer = GradientReducer(store: net.store, comm: comm, bucketElements: 8)
        comm.base = net.store.gradientArena.buffer.pointer(Float.self)
        let expected = net.reference(net.loss(Self.x1))
        net.poison()
        net.store.zeroGrad()
        net.loss(Self.x1).backward(observer: reducer)
        try reducer.finish()
        #expect(comm.launches == reducer.buckets)
        #expect(net.raw == expected.map { $0.map { $0 * 2 } }, "every slot summed once; the unreached ones as zeros")
    }

    /// A tiny SiT (the PyTorch fixture's weights): backward into the slots gives exactly the fresh gradients, and a
    /// second backward adds them; `sitForwardAndAllGradientsMatchPyTorch` checks the values against PyTorch.
    @Test func sitGradientsInTheSlotsAreTheFreshOnes() throws {
        let f = try Fixture("sit_tiny.safetensors")
        let model = try SiT(tinySiTConfig())
        try model.store.load(f.tensors(under: "model."), strict: true)
        func loss() -> Tensor {
            let out = model(f["x"], t: f["t"], y: f["y"].to(.int64), logitLayers: [0, 1], projections: true)
            return (out.velocity * f["w1"]).sum() + (out.attentionLogits[1]! * f["w2"]).sum() + (out.projections[0] * f["w3"]).sum()
        }
        let fresh = model.store.gradients(of: loss()).map { $0.1.scalars(as: Float.self) }
        for (_, p) in model.store.parameters { p.grad!.copyValues(from: Tensor.full(p.shape, .nan)) }
        model.store.zeroGrad()
        loss().backward()
        for ((key, p), want) in zip(model.store.parameters, fresh) {
            #expect(p.gradValue!.scalars(as: Float.self) == want, "\(key)")
        }
        loss().backward()
        for ((key, p), want) in zip(model.store.parameters, fresh) {
            #expect(p.grad!.scalars(as: Float.self) == want.map { $0 + $0 }, "\(key) twice")
        }
    }

    /// The walk offers a slot to a node (`InPlaceGradientBackward`) only when the node's term is the slot's whole
    /// accumulation: a stale owned slot, its last consumer, no term pending, not a `gradients(of:)` walk.
    @Test func theWalkOffersSlotsOnlyWhenTheWriteIsTheAccumulation() {
        let store = ParameterStore()
        let w = store.root.parameter("w", [2, 3], .zeros)
        store.finalize()
        let offers = Offers()
        func probe(_ inputs: [Tensor]) -> Tensor { Tensor.zeros([1]).recorded(Probe(inputs: inputs, offers: offers)) }
        func grad() -> [Float] { w.grad!.scalars(as: Float.self) }
        store.zeroGrad()
        probe([w]).backward()
        #expect(offers.take() == [[true]] && grad() == Array(repeating: 1, count: 6))
        probe([w]).backward()                                   // not stale any more: added
        #expect(offers.take() == [[false]] && grad() == Array(repeating: 2, count: 6))
        store.zeroGrad()
        probe([w, w]).backward()                                // two terms of one node
        #expect(offers.take() == [[false, false]] && grad() == Array(repeating: 3, count: 6))
        store.zeroGrad()
        (probe([w]) + probe([w])).backward()                    // two nodes: the second has a term pending
        #expect(offers.take() == [[false], [false]] && grad() == Array(repeating: 2, count: 6))
        let plain = Tensor.zeros([2, 3])
        plain.requiresGrad = true
        probe([plain]).backward()                               // not a store's slot
        #expect(offers.take() == [[false]] && plain.grad!.scalars(as: Float.self) == Array(repeating: 1, count: 6))
        store.zeroGrad()
        _ = gradients(of: probe([w]), wrt: [w])                 // captured, not accumulated
        #expect(offers.take() == [[false]] && w.gradIsStale)
    }

    final class Offers {
        private var log: [[Bool]] = []
        func note(_ into: [Tensor?]) { log.append(into.map { $0 != nil }) }
        func take() -> [[Bool]] { defer { log = [] }; return log }
    }

    /// Gives input k the gradient k + 1 everywhere, written into the offered slot when there is one.
    struct Probe: InPlaceGradientBackward {
        let inputs: [Tensor], offers: Offers
        func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, into: inputs.map { _ in nil }) }
        func gradients(_ dy: Tensor, into: [Tensor?]) -> [Tensor?] {
            offers.note(into)
            return inputs.indices.map { k in
                let g = Tensor.full(inputs[k].shape, Double(k + 1))
                guard let slot = into[k] else { return g }
                slot.copyValues(from: g)
                return slot
            }
        }
    }
}
