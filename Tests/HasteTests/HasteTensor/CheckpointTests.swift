import Testing
@testable import HasteTensor

/// `Tensor.checkpoint` (issue 15, item 2): a block with a captured parameter, a random draw, two outputs (the
/// main one and a side one read by another loss term) and an input that is also used outside the block (four
/// gradient terms, so their summation order shows) gives the loss and every gradient bit for bit as the same
/// block without the checkpoint; the generator ends where the forward left it.
private struct ToyStep {
    let w = Tensor.randn([5, 5], seed: 11), b = Tensor.randn([5], seed: 12), x0 = Tensor.randn([3, 5], seed: 13)
    init() { for t in [w, b, x0] { t.requiresGrad = true } }

    /// (loss, the block's outputs, the generator)
    func forward(checkpoint: Bool) -> (loss: Tensor, outputs: [Tensor], generator: RandomGenerator) {
        let generator = RandomGenerator(seed: 7)
        let (w, b) = (self.w, self.b)
        let body: ([Tensor]) -> [Tensor] = { a in
            let h = (a[0].linear(w, b) + generator.normal([3, 5]) * 0.1).geluTanh()   // (3, 5)
            return [h + a[0], (h * a[0]).sum()]                                          // main, side
        }
        let x = x0.geluTanh()
        let out = checkpoint ? Tensor.checkpoint([x], generators: [generator], body) : body([x])
        let loss = (out[0] * out[0]).sum() + out[1] * 0.5 + x.silu().sum()
        return (loss, out, generator)
    }

    func gradients(checkpoint: Bool, retain: Bool = false) -> (loss: Float, grads: [[Float]], offset: UInt64) {
        for t in [w, b, x0] { t.grad = nil }
        let (loss, _, generator) = forward(checkpoint: checkpoint)
        loss.backward(retainGraph: retain)
        if retain {                                  // a retained graph walks again (recomputing again) to the same sums
            let first = [w, b, x0].map { $0.grad!.scalars(as: Float.self) }
            for t in [w, b, x0] { t.grad = nil }
            loss.backward()
            #expect([w, b, x0].map { $0.grad!.scalars(as: Float.self) } == first, "second walk of a retained graph")
        }
        return (loss.scalars(as: Float.self)[0], [w, b, x0].map { $0.grad!.scalars(as: Float.self) }, generator.offset)
    }
}

@Test func checkpointGivesTheSameLossAndGradientsBitForBit() {
    let toy = ToyStep()
    let plain = toy.gradients(checkpoint: false), ckpt = toy.gradients(checkpoint: true)
    #expect(ckpt.loss == plain.loss)
    for (k, name) in ["w", "b", "x0"].enumerated() {
        #expect(ckpt.grads[k] == plain.grads[k], "gradient of \(name): \(ckpt.grads[k]) vs \(plain.grads[k])")
    }
    #expect(plain.grads.allSatisfy { $0.contains { $0 != 0 } }, "every gradient is non-zero")
    #expect(ckpt.offset == plain.offset && plain.offset == 16, "the generator ends after one 3×5 draw (16 elements)")
    #expect(toy.gradients(checkpoint: true, retain: true).grads == plain.grads)
}

/// Without the replay the recompute draws other noise and the gradients differ: the replay is what makes them equal.
@Test func checkpointReplaysTheBodysRandomDraws() {
    let toy = ToyStep()
    let plain = toy.gradients(checkpoint: false)
    for t in [toy.w, toy.b, toy.x0] { t.grad = nil }
    let generator = RandomGenerator(seed: 7)
    let (w, b) = (toy.w, toy.b)
    let x = toy.x0.geluTanh()
    let out = Tensor.checkpoint([x]) { a in      // the generator not named: the recompute draws the next numbers
        let h = (a[0].linear(w, b) + generator.normal([3, 5]) * 0.1).geluTanh()
        return [h + a[0], (h * a[0]).sum()]
    }
    ((out[0] * out[0]).sum() + out[1] * 0.5 + x.silu().sum()).backward()
    #expect(toy.w.grad!.scalars(as: Float.self) != plain.grads[0])
    #expect(generator.offset == 32, "forward and recompute each drew 16")
}

/// The outputs record one node whose edges are the tracked inputs and the captured parameters (so a data-parallel
/// observer is told about them before the walk and hears each when final); with recording off nothing is recorded.
@Test func checkpointEdgesAreInputsAndCapturedParameters() {
    let toy = ToyStep()
    let (loss, outputs, _) = toy.forward(checkpoint: true)
    #expect(outputs.allSatisfy { $0.isTracked })
    let observer = LeafRecorder()
    loss.backward(observer: observer)
    let ids = Set([toy.w, toy.b, toy.x0].map(ObjectIdentifier.init))
    #expect(Set(observer.announced.map(ObjectIdentifier.init)) == ids)
    #expect(Set(observer.finished.map(ObjectIdentifier.init)) == ids && observer.finished.count == 3)
    let untracked = noGrad { Tensor.checkpoint([toy.x0]) { [$0[0].linear(toy.w, toy.b)] } }
    #expect(!untracked[0].isTracked)
}

private final class LeafRecorder: LeafGradientObserver {
    var announced: [Tensor] = [], finished: [Tensor] = []
    func willAccumulate(into leaves: [Tensor]) { announced = leaves }
    func didAccumulate(_ leaf: Tensor) { finished.append(leaf) }
}

/// `TensorMemory.measure` counts only what its body allocates (other tests' tensors never enter it).
@Test func tensorMemoryMeasureCountsItsBodyOnly() {
    let outside = Tensor.zeros([1000])
    let (kept, counts) = TensorMemory.measure { () -> Tensor in
        let a = Tensor.zeros([256]), b = Tensor.zeros([512])
        withExtendedLifetime((a, b)) {}
        return Tensor.zeros([64])
    }
    #expect(counts.liveBytes == 64 * 4, "only the returned tensor is still alive: \(counts)")
    #expect(counts.peakBytes >= (256 + 512) * 4 && counts.peakBytes <= (256 + 512 + 64) * 4, "\(counts)")
    withExtendedLifetime((outside, kept)) {}
}
