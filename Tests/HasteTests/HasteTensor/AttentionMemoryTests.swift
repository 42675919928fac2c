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
