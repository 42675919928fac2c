import Testing
@testable import HasteTensor

/// The CPU's per-head attention path (float32 on AVX-512F: whole heads per pool task) gives bitwise what the grouped
/// path (passes of heads, products split across threads) gives, for every entry point, with and without saved
/// probabilities and for each subset of gradients, on shapes with odd sizes, more keys than one k block (257, as
/// DINOv2) and value widths past one 48-column panel.
private let perHeadShapes = [
    AttentionShape(batch: 9, queries: 5, keys: 9, headDim: 3, valueDim: 4),
    AttentionShape(batch: 8, queries: 40, keys: 257, headDim: 64, valueDim: 64),
    AttentionShape(batch: 10, queries: 33, keys: 20, headDim: 16, valueDim: 50),
]

private func bits(_ t: Tensor) -> [Double] { t.scalars(as: Double.self) }

/// Random q, k, v of shape `s` (seeds from `seed`), which the per-head path must take; nil without AVX-512F (no
/// per-head path to compare).
private func operands(_ s: AttentionShape, seed: UInt64) -> [Tensor]? {
    guard CPUKernels.level == 2 else { return nil }
    let q = Tensor.randn([s.batch, s.queries, s.headDim], seed: seed), k = Tensor.randn([s.batch, s.keys, s.headDim], seed: seed + 1)
    let v = Tensor.randn([s.batch, s.keys, s.valueDim], seed: seed + 2)
    #expect(CPUBackend.shared.perHead(s, scale: 0.3, needsHeadDim: true, [q.buffer, k.buffer, v.buffer]))
    return [q, k, v]
}

@Test(arguments: perHeadShapes)
func perHeadAttentionForwardIsBitwiseTheGroupedOne(_ s: AttentionShape) {
    guard let qkv = operands(s, seed: 11) else { return }
    let (cpu, q, k, v) = (CPUBackend.shared, qkv[0], qkv[1], qkv[2])
    for saveProbs in [true, false] {
        let outs = (0..<2).map { _ in Tensor.empty([s.batch, s.queries, s.valueDim]) }
        let probs = (0..<2).map { _ in Tensor.empty([s.batch, s.queries, s.keys]) }
        cpu.attentionForward(q: q.buffer, k: k.buffer, v: v.buffer, probs: saveProbs ? probs[0].buffer : nil,
                             out: outs[0].buffer, shape: s, scale: 0.3)
        cpu.groupedAttentionForward(q: q.buffer, k: k.buffer, v: v.buffer, probs: saveProbs ? probs[1].buffer : nil,
                                    out: outs[1].buffer, shape: s, scale: 0.3)
        #expect(bits(outs[0]) == bits(outs[1]))
        #expect(bits(outs[0]).contains { $0 != 0 })
        if saveProbs { #expect(bits(probs[0]) == bits(probs[1])) }
    }
}

@Test(arguments: perHeadShapes)
func perHeadAttentionBackwardIsBitwiseTheGroupedOne(_ s: AttentionShape) {
    guard let qkv = operands(s, seed: 21) else { return }
    let (cpu, q, k, v) = (CPUBackend.shared, qkv[0], qkv[1], qkv[2])
    let dOut = Tensor.randn([s.batch, s.queries, s.valueDim], seed: 24)
    let probs = Tensor.empty([s.batch, s.queries, s.keys]), out = Tensor.empty([s.batch, s.queries, s.valueDim])
    cpu.groupedAttentionForward(q: q.buffer, k: k.buffer, v: v.buffer, probs: probs.buffer, out: out.buffer, shape: s, scale: 0.3)
    // Each subset of (dq, dk, dv), nothing but the empty one.
    for mask in 1..<8 {
        let want = [mask & 1 != 0, mask & 2 != 0, mask & 4 != 0]
        func grads() -> [Tensor?] { [q, k, v].enumerated().map { i, t in want[i] ? Tensor.zeros(t.shape) : nil } }
        let perSaved = grads(), perRecomputed = grads(), groupedSaved = grads(), groupedRecomputed = grads()
        cpu.attentionBackward(q: q.buffer, k: k.buffer, v: v.buffer, probs: probs.buffer, dOut: dOut.buffer,
                              dq: perSaved[0]?.buffer, dk: perSaved[1]?.buffer, dv: perSaved[2]?.buffer, shape: s, scale: 0.3)
        cpu.groupedAttentionBackward(q: q.buffer, k: k.buffer, v: v.buffer, probs: probs.buffer, dOut: dOut.buffer,
                                     dq: groupedSaved[0]?.buffer, dk: groupedSaved[1]?.buffer, dv: groupedSaved[2]?.buffer,
                                     shape: s, scale: 0.3)
        cpu.attentionBackwardRecomputing(q: q.buffer, k: k.buffer, v: v.buffer, dOut: dOut.buffer, dq: perRecomputed[0]?.buffer,
                                         dk: perRecomputed[1]?.buffer, dv: perRecomputed[2]?.buffer, shape: s, scale: 0.3)
        cpu.groupedAttentionBackwardRecomputing(q: q.buffer, k: k.buffer, v: v.buffer, dOut: dOut.buffer,
                                                dq: groupedRecomputed[0]?.buffer, dk: groupedRecomputed[1]?.buffer,
                                                dv: groupedRecomputed[2]?.buffer, shape: s, scale: 0.3)
        for i in 0..<3 where want[i] {
            let a = bits(perSaved[i]!), b = bits(groupedSaved[i]!)
            #expect(a == b, "mask \(mask) gradient \(i): per-head vs grouped (saved probabilities)")
            #expect(bits(perRecomputed[i]!) == bits(groupedRecomputed[i]!), "mask \(mask) gradient \(i) (recomputed)")
            #expect(bits(perRecomputed[i]!) == a, "mask \(mask) gradient \(i): recomputed vs saved")
            #expect(a.contains { $0 != 0 })
        }
    }
}

@Test(arguments: perHeadShapes)
func perHeadSoftmaxMatmulIsBitwiseTheGroupedOne(_ s: AttentionShape) {
    guard CPUKernels.level == 2 else { return }
    let cpu = CPUBackend.shared
    let logits = Tensor.randn([s.batch, s.queries, s.keys], seed: 31), v = Tensor.randn([s.batch, s.keys, s.valueDim], seed: 32)
    let dOut = Tensor.randn([s.batch, s.queries, s.valueDim], seed: 33)
    #expect(cpu.perHead(s, scale: 1, needsHeadDim: false, [logits.buffer, v.buffer]))
    let probs = (0..<2).map { _ in Tensor.empty([s.batch, s.queries, s.keys]) }
    let outs = (0..<2).map { _ in Tensor.empty([s.batch, s.queries, s.valueDim]) }
    cpu.softmaxMatmulForward(logits: logits.buffer, v: v.buffer, probs: probs[0].buffer, out: outs[0].buffer, shape: s)
    cpu.groupedSoftmaxMatmulForward(logits: logits.buffer, v: v.buffer, probs: probs[1].buffer, out: outs[1].buffer, shape: s)
    #expect(bits(probs[0]) == bits(probs[1]))
    #expect(bits(outs[0]) == bits(outs[1]))
    for (withLogits, withV) in [(true, true), (true, false), (false, true)] {
        let dl = (0..<2).map { _ in withLogits ? Tensor.zeros(logits.shape) : nil }
        let dv = (0..<2).map { _ in withV ? Tensor.zeros(v.shape) : nil }
        cpu.softmaxMatmulBackward(probs: probs[0].buffer, v: v.buffer, dOut: dOut.buffer, dLogits: dl[0]?.buffer,
                                  dv: dv[0]?.buffer, shape: s)
        cpu.groupedSoftmaxMatmulBackward(probs: probs[0].buffer, v: v.buffer, dOut: dOut.buffer, dLogits: dl[1]?.buffer,
                                         dv: dv[1]?.buffer, shape: s)
        if withLogits { #expect(bits(dl[0]!) == bits(dl[1]!)); #expect(bits(dl[0]!).contains { $0 != 0 }) }
        if withV { #expect(bits(dv[0]!) == bits(dv[1]!)); #expect(bits(dv[0]!).contains { $0 != 0 }) }
    }
}
