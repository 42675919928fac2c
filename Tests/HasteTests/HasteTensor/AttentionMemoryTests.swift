import Testing
@testable import HasteTensor

/// What attention keeps between its forward and backward passes (issue 15 item 2): q, k, v as given and nothing
/// of size Tq·Tk; the backward recomputes the probabilities bit for bit as the forward made them.

/// The CPU backward that recomputes P one pass of heads at a time gives bitwise the gradients of the backward
/// from the probabilities the forward saved: more heads than one pass holds, float32 and float64, dq/dk absent.
@Test(arguments: [DType.float32, .float64])
func recomputingAttentionBackwardIsBitwiseTheSavedProbabilitiesOne(_ dtype: DType) {
    let cpu = CPUBackend.shared
    let s = AttentionShape(batch: 7, queries: 5, keys: 9, headDim: 3, valueDim: 4)
    let q = Tensor.randn([s.batch, s.queries, s.headDim], seed: 1).to(dtype)
    let k = Tensor.randn([s.batch, s.keys, s.headDim], seed: 2).to(dtype)
    let v = Tensor.randn([s.batch, s.keys, s.valueDim], seed: 3).to(dtype)
    let dOut = Tensor.randn([s.batch, s.queries, s.valueDim], seed: 4).to(dtype)
    let probs = Tensor.empty([s.batch, s.queries, s.keys], dtype: dtype)
    let out = Tensor.empty([s.batch, s.queries, s.valueDim], dtype: dtype)
    cpu.attentionForward(q: q.buffer, k: k.buffer, v: v.buffer, probs: probs.buffer, out: out.buffer, shape: s, scale: 0.7)
    for withScores in [true, false] {
        let saved = [q, k, v].map { Tensor.zeros($0.shape, dtype: dtype) }
        let again = [q, k, v].map { Tensor.zeros($0.shape, dtype: dtype) }
        cpu.attentionBackward(q: q.buffer, k: k.buffer, v: v.buffer, probs: probs.buffer, dOut: dOut.buffer,
                              dq: withScores ? saved[0].buffer : nil, dk: withScores ? saved[1].buffer : nil,
                              dv: saved[2].buffer, shape: s, scale: 0.7)
        cpu.attentionBackwardRecomputing(q: q.buffer, k: k.buffer, v: v.buffer, dOut: dOut.buffer,
                                         dq: withScores ? again[0].buffer : nil, dk: withScores ? again[1].buffer : nil,
                                         dv: again[2].buffer, shape: s, scale: 0.7)
        for (a, b) in zip(saved, again) { #expect(a.scalars(as: Double.self) == b.scalars(as: Double.self)) }
        if withScores { #expect(saved[0].scalars(as: Double.self).contains { $0 != 0 }) }
    }
}

/// q, k, v permuted views of one projection (SiT's attention): after the forward, the only storage the call
/// allocated that is still live is its output: no [N, H, T, T] probabilities, no contiguous copies of q, k, v.
/// The backward's peak holds the three gradients, the three contiguous copies and two [4 heads, T, T]
/// workspaces, less than the [N, H, T, T] probabilities alone would need.
@Test func attentionKeepsNeitherProbabilitiesNorCopiesForBackward() {
    let (n, h, t, dh) = (2, 8, 32, 4)
    let qkv = Tensor.randn([n, t, 3, h, dh], seed: 5)
    qkv.requiresGrad = true
    let parts = qkv.permuted([2, 0, 3, 1, 4])                                     // [3, N, H, T, Dh], views
    let (q, k, v) = (parts.select(axis: 0, index: 0), parts.select(axis: 0, index: 1), parts.select(axis: 0, index: 2))
    #expect(!q.isContiguous)
    let (y, forward) = TensorMemory.measure { Tensor.scaledDotProductAttention(q, k, v) }
    let headBytes = n * h * t * dh * 4, probsBytes = n * h * t * t * 4
    #expect(forward.liveBytes == headBytes, "live after forward \(forward.liveBytes) B, output \(headBytes) B")
    let dy = Tensor.randn(y.shape, seed: 6)
    let node = y.gradFn!
    let (_, backward) = TensorMemory.measure { _ = node.gradients(dy) }
    let bound = 6 * headBytes + 2 * 4 * t * t * 4
    #expect(backward.peakBytes <= bound && bound < probsBytes + 3 * headBytes,
            "backward peak \(backward.peakBytes) B, bound \(bound) B")
}

/// The logits path on permuted views (SiT's aligned blocks) keeps its logits, probabilities and output but no
/// copies of q, k, v, and its gradients reach the projection bitwise as from contiguous leaves.
@Test func attentionWithLogitsOnViewsKeepsNoCopiesAndSameGradients() {
    let (n, h, t, dh) = (2, 3, 6, 4)
    let qkv = Tensor.randn([n, t, 3, h, dh], seed: 7)
    qkv.requiresGrad = true
    let parts = qkv.permuted([2, 0, 3, 1, 4])
    let views = (0..<3).map { parts.select(axis: 0, index: $0) }
    let leaves = views.map { v -> Tensor in
        let c = noGrad { v.contiguous().clone() }
        c.requiresGrad = true
        return c
    }
    let ((out, logits), forward) = TensorMemory.measure { Tensor.attentionWithLogits(views[0], views[1], views[2]) }
    let headBytes = n * h * t * dh * 4, scoreBytes = n * h * t * t * 4
    #expect(forward.liveBytes == headBytes + 2 * scoreBytes, "live \(forward.liveBytes) B: output, logits, probabilities")
    let w1 = Tensor.randn(out.shape, seed: 8), w2 = Tensor.randn(logits.shape, seed: 9)
    ((out * w1).sum() + (logits * w2).sum()).backward()
    let (o2, l2) = Tensor.attentionWithLogits(leaves[0], leaves[1], leaves[2])
    ((o2 * w1).sum() + (l2 * w2).sum()).backward()
    let viaViews = qkv.grad!.permuted([2, 0, 3, 1, 4])
    for i in 0..<3 {
        let g = viaViews.select(axis: 0, index: i).scalars(as: Float.self)
        #expect(g == leaves[i].grad!.scalars(as: Float.self), "gradient \(i)")
        #expect(g.contains { $0 != 0 })
    }
}
