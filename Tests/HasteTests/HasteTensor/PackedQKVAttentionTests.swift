import Testing
import HasteModels
@testable import HasteTensor

/// Inference attention straight from a fused qkv projection (`Tensor.packedQKVAttention`: the CPU's per-head
/// products read q, k, v in place and write the merged heads) gives bit for bit what splitting the heads, attending
/// and merging them gives, with and without the logits, on 1 and 2 threads; shapes with DINOv2's 257 tokens (two k
/// blocks in P·v), odd token counts and head widths past one 48-column panel. Where a gradient would be recorded,
/// or there are fewer heads than threads (no per-head path), it declines (nil) and the callers split the heads.
@Test func packedQKVAttentionIsTheSplitHeadsBitForBit() {
    guard CPUKernels.level == 2 else { return }
    let saved = Parallel.threads
    defer { Parallel.threads = saved }
    func bits(_ t: Tensor) -> [UInt32] { t.contiguous().scalars(as: Float.self).map(\.bitPattern) }
    for (n, t, heads, dh) in [(2, 257, 3, 64), (3, 37, 4, 16), (1, 9, 2, 56)] {
        let d = heads * dh
        let qkv = Tensor.randn([n, t, 3 * d], seed: UInt64(40 + t))
        let parts = qkv.reshaped([n, t, 3, heads, dh]).permuted([2, 0, 3, 1, 4])
        let q = parts.select(axis: 0, index: 0), k = parts.select(axis: 0, index: 1), v = parts.select(axis: 0, index: 2)
        for threads in [1, 2] {
            Parallel.threads = threads
            let plain = Tensor.scaledDotProductAttention(q, k, v).transposed(1, 2).reshaped([n, t, d])
            let (withLogits, logits) = Tensor.attentionWithLogits(q, k, v)
            for wantLogits in [false, true] {
                guard let fused = Tensor.packedQKVAttention(qkv, heads: heads, logits: wantLogits) else {
                    Issue.record("\(n)×\(t), \(heads) heads of \(dh): declined on \(threads) threads"); continue
                }
                let expected = wantLogits ? withLogits.transposed(1, 2).reshaped([n, t, d]) : plain
                #expect(fused.output.shape == [n, t, d] && bits(fused.output) == bits(expected),
                        "\(n)×\(t), \(heads) heads of \(dh), logits \(wantLogits), \(threads) threads: output differs")
                #expect((fused.logits == nil) == !wantLogits)
                if let l = fused.logits {
                    #expect(l.shape == [n, heads, t, t] && bits(l) == bits(logits), "\(n)×\(t): logits differ")
                }
            }
        }
    }
    Parallel.threads = 2
    let qkv = Tensor.randn([1, 5, 3 * 8], seed: 3)
    #expect(Tensor.packedQKVAttention(qkv, heads: 1, logits: false) == nil, "one head on two threads: the split path")
    let tracked = Tensor.randn([2, 5, 3 * 8], seed: 4)
    tracked.requiresGrad = true
    #expect(Tensor.packedQKVAttention(tracked, heads: 2, logits: true) == nil, "a recorded forward splits the heads")
    #expect(GradMode.withoutGrad { Tensor.packedQKVAttention(tracked, heads: 2, logits: true) } != nil)
}

/// DINOv2 and SiT give the same bits whether their forward records gradients (heads split, attended, merged) or
/// not (a frozen teacher, sampling: attention read straight from the qkv projection); SiT with random weights
/// (its adaLN gates and final layer start at zero, which would hide its attention).
@Test func dinov2AndSiTGiveTheSameBitsWithAndWithoutRecording() throws {
    guard CPUKernels.level == 2 else { return }
    func bits(_ t: Tensor) -> [UInt32] { t.contiguous().scalars(as: Float.self).map(\.bitPattern) }
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 24, 3, 3, 4)
    let teacher = DINOv2(c, seed: 5)                                  // trainable: its forward records
    let images = Tensor.randn([2, 3, 8, 8], seed: 6)
    let recorded = teacher(images, logitLayers: [1, 2]), plain = noGrad { teacher(images, logitLayers: [1, 2]) }
    #expect(recorded.patchTokens.isTracked && bits(recorded.patchTokens) == bits(plain.patchTokens), "DINOv2 tokens")
    for i in [1, 2] { #expect(bits(recorded.attentionLogits[i]!) == bits(plain.attentionLogits[i]!), "DINOv2 logits \(i)") }

    var s = SiTConfig()
    (s.inputSize, s.patchSize, s.inChannels, s.hiddenSize, s.depth, s.numHeads) = (8, 2, 3, 24, 3, 3)
    (s.numClasses, s.encoderDepth, s.projectorDims, s.projectorHidden) = (5, 2, [10], 16)
    let sit = try SiT(s)
    var weights: [String: Tensor] = [:]                               // non-zero: the adaLN gates start at zero
    for (i, p) in sit.store.parameters.enumerated() { weights[p.name] = Tensor.randn(p.tensor.shape, seed: UInt64(100 + i)) * 0.2 }
    try sit.store.load(weights, strict: false)
    let x = Tensor.randn([2, 3, 8, 8], seed: 7), t = Tensor([Float(0.3), 0.8]), y = Tensor([Int64(1), 4])
    let a = sit(x, t: t, y: y, logitLayers: [1], projections: false)
    let b = noGrad { sit(x, t: t, y: y, logitLayers: [1], projections: false) }
    #expect(a.velocity.isTracked && bits(a.velocity) == bits(b.velocity), "SiT velocity")
    #expect(bits(a.attentionLogits[1]!) == bits(b.attentionLogits[1]!), "SiT logits")
}
