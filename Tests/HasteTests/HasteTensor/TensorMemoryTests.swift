import Testing
@testable import HasteTensor

/// The live-bytes counter and the backward walk's freeing of saved activations (issue 15, item 2). Tests run in
/// parallel in one process, so the global counter is checked only for what this test itself holds.
@Test func tensorMemoryCountsLiveStorage() {
    let held = Tensor.zeros([1 << 20])                      // 4 MiB, live until the end of the test
    let counts = TensorMemory.hostCounts
    #expect(counts.liveBytes >= held.count * 4, "live \(counts.liveBytes) B while holding \(held.count * 4) B")
    #expect(counts.peakBytes >= counts.liveBytes)
    _ = held.sum().item()
}

/// A chain of ops whose backward nodes save their inputs: after `backward()` every intermediate the graph
/// alone kept is gone (torch frees saved tensors as each node runs); with `retainGraph: true` they stay, and
/// a second walk gives the same gradient again.
@Test func backwardFreesSavedActivations() {
    /// (how many of the first three intermediates are alive right after backward while `loss` is held, x's gradient)
    func chain(retain: Bool) -> (alive: Int, grad: [Float]) {
        let x = Tensor.randn([3, 40], seed: 5)
        x.requiresGrad = true
        var weak: [WeakTensor] = []
        var h = x
        for _ in 0..<4 {
            h = h.geluTanh().layerNorm(eps: 1e-6)           // saves h, then the GELU output
            weak.append(WeakTensor(h))
        }
        let loss = (h * h).sum()
        loss.backward(retainGraph: retain)
        let alive = weak.dropLast().filter { $0.tensor != nil }.count
        if retain {
            let first = x.grad!.scalars(as: Float.self)
            x.grad = nil
            loss.backward()
            #expect(x.grad!.scalars(as: Float.self) == first, "a retained graph walks again to the same gradient")
        }
        return (alive, x.grad!.scalars(as: Float.self))
    }
    let freed = chain(retain: false), kept = chain(retain: true)
    #expect(freed.alive == 0, "intermediates outlived backward()")
    #expect(kept.alive == 3, "retainGraph: true lost the graph")
    #expect(freed.grad == kept.grad)
}

final class WeakTensor {
    weak var tensor: Tensor?
    init(_ t: Tensor) { tensor = t }
}
