import Testing
import HasteModels
import HasteNN
@testable import HasteTensor

private func bits(_ t: Tensor) -> [UInt32] { t.contiguous().scalars(as: Float.self).map(\.bitPattern) }
/// Elements whose bits differ (all of them when the sizes do; counted, not listed: a failing #expect on two long
/// arrays would diff them element by element for minutes).
private func differing(_ a: [UInt32], _ b: [UInt32]?) -> Int {
    guard let b, a.count == b.count else { return Swift.max(a.count, b?.count ?? 0) }
    return zip(a, b).filter { $0 != $1 }.count
}
private func differing(_ a: Tensor, _ b: Tensor) -> Int { differing(bits(a), bits(b)) }
/// (N, T, H, Dh): DINOv2's 257 tokens (two k blocks in P·v), odd token counts, a head width past one 48-column panel.
private let packedShapes = [(2, 257, 3, 64), (3, 37, 4, 16), (1, 9, 2, 56)]

/// Inference attention straight from a fused qkv projection (`Tensor.packedQKVAttention`: the CPU's per-head
/// products read q, k, v in place and write the merged heads) gives bit for bit what splitting the heads, attending
/// and merging them gives, with and without the logits, on 1 and 2 threads; shapes with DINOv2's 257 tokens (two k
/// blocks in P·v), odd token counts and head widths past one 48-column panel. Where logits would be recorded, or
/// there are fewer heads than threads (no per-head path), it declines (nil) and the callers split the heads.
@Test func packedQKVAttentionIsTheSplitHeadsBitForBit() {
    guard CPUKernels.level == 2 else { return }
    let saved = Parallel.threads
    defer { Parallel.threads = saved }
    for (n, t, heads, dh) in packedShapes {
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
                #expect(fused.output.shape == [n, t, d] && differing(fused.output, expected) == 0,
                        "\(n)×\(t), \(heads) heads of \(dh), logits \(wantLogits), \(threads) threads: output differs")
                #expect((fused.logits == nil) == !wantLogits)
                if let l = fused.logits {
                    #expect(l.shape == [n, heads, t, t] && differing(l, logits) == 0, "\(n)×\(t): logits differ")
                }
            }
        }
    }
    Parallel.threads = 2
    let qkv = Tensor.randn([1, 5, 3 * 8], seed: 3)
    #expect(Tensor.packedQKVAttention(qkv, heads: 1, logits: false) == nil, "one head on two threads: the split path")
    let tracked = Tensor.randn([2, 5, 3 * 8], seed: 4)
    tracked.requiresGrad = true
    #expect(Tensor.packedQKVAttention(tracked, heads: 2, logits: true) == nil, "recorded logits: the split path")
    #expect(GradMode.withoutGrad { Tensor.packedQKVAttention(tracked, heads: 2, logits: true) } != nil)
}

/// Recorded (no logits), the one-pass attention's gradient of qkv is bit for bit the split path's (splitHeads, as
/// SiT, and reshape/permute/select, as DINOv2): dq, dk, dv written straight into their columns, from the
/// probabilities the forward kept (257 and 37 tokens: at least half the width) and from recomputed ones (9 tokens
/// of width 112).
@Test func packedQKVAttentionGradientIsTheSplitHeadsBitForBit() {
    guard CPUKernels.level == 2 else { return }
    #expect(packedShapes.map { Tensor.keepsProbabilities(tokens: $0.1, width: $0.2 * $0.3) } == [true, true, false])
    #expect(Tensor.keepsProbabilities(tokens: 256, width: 384) && !Tensor.keepsProbabilities(tokens: 256, width: 768),
            "SiT-S/2 keeps its probabilities, SiT-B/2 recomputes them")
    let saved = Parallel.threads
    defer { Parallel.threads = saved }
    for (n, t, heads, dh) in packedShapes {
        let d = heads * dh
        let w = Tensor.randn([n, t, d], seed: UInt64(70 + t))
        for threads in [1, 2] {
            Parallel.threads = threads
            func gradient(_ attend: (Tensor) -> Tensor) -> (Tensor, Tensor) {
                let x = Tensor.randn([n, t, 3 * d], seed: UInt64(60 + t))      // a fresh leaf per path
                x.requiresGrad = true
                let out = attend(x)
                #expect(out.isTracked)
                (out * w).sum().backward()
                return (out, x.grad!)
            }
            let packed = gradient { Tensor.packedQKVAttention($0, heads: heads, logits: false)!.output }
            let split = gradient { x in
                let (q, k, v) = x.splitHeads(heads)
                return Tensor.scaledDotProductAttention(q, k, v).transposed(1, 2).reshaped([n, t, d])
            }
            let permuted = gradient { x in
                let parts = x.reshaped([n, t, 3, heads, dh]).permuted([2, 0, 3, 1, 4])
                let q = parts.select(axis: 0, index: 0), k = parts.select(axis: 0, index: 1), v = parts.select(axis: 0, index: 2)
                return Tensor.scaledDotProductAttention(q, k, v).transposed(1, 2).reshaped([n, t, d])
            }
            let what = "\(n)×\(t), \(heads) heads of \(dh), \(threads) threads"
            #expect(differing(packed.0, split.0) == 0, "\(what): output")
            #expect(differing(packed.1, split.1) == 0, "\(what): gradient vs splitHeads")
            #expect(differing(packed.1, permuted.1) == 0, "\(what): gradient vs permute")
        }
    }
    // Two heads recorded on 2 threads, their backward run on 8 (fewer heads than threads: the forward would decline).
    Parallel.threads = 2
    let x = Tensor.randn([1, 9, 3 * 16], seed: 5), w = Tensor.randn([1, 9, 16], seed: 6)
    x.requiresGrad = true
    let out = Tensor.packedQKVAttention(x, heads: 2, logits: false)!.output
    Parallel.threads = 8
    (out * w).sum().backward()
    let y = Tensor.randn([1, 9, 3 * 16], seed: 5)
    y.requiresGrad = true
    let (q, k, v) = y.splitHeads(2)
    (Tensor.scaledDotProductAttention(q, k, v).transposed(1, 2).reshaped([1, 9, 16]) * w).sum().backward()
    #expect(differing(x.grad!, y.grad!) == 0, "a backward on more threads than heads")
}

/// DINOv2 and SiT give the same bits whether their forward records gradients or not (a frozen teacher, sampling),
/// and their blocks give the same outputs and parameter gradients through the one-pass attention as through the
/// split heads (which a block that returns its logits takes when recording); SiT with random weights (its adaLN
/// gates and final layer start at zero, which would hide its attention).
@Test func dinov2AndSiTGiveTheSameBitsWithAndWithoutRecording() throws {
    guard CPUKernels.level == 2 else { return }
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 24, 3, 3, 4)
    let teacher = DINOv2(c, seed: 5)                                  // trainable: its forward records
    let images = Tensor.randn([2, 3, 8, 8], seed: 6)
    let recorded = teacher(images, logitLayers: [1, 2]), plain = noGrad { teacher(images, logitLayers: [1, 2]) }
    #expect(recorded.patchTokens.isTracked && differing(recorded.patchTokens, plain.patchTokens) == 0, "DINOv2 tokens")
    for i in [1, 2] { #expect(differing(recorded.attentionLogits[i]!, plain.attentionLogits[i]!) == 0, "DINOv2 logits \(i)") }

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
    #expect(a.velocity.isTracked && differing(a.velocity, b.velocity) == 0, "SiT velocity")
    #expect(differing(a.attentionLogits[1]!, b.attentionLogits[1]!) == 0, "SiT logits")

    // Every block one pass (no logits) against every block split (all logits, unused): outputs and gradients.
    func gradients(_ store: ParameterStore, _ output: () -> Tensor) -> ([UInt32], [String: [UInt32]]) {
        store.zeroGrad()
        let out = output()
        (out * Tensor.randn(out.shape, seed: 9)).sum().backward()
        return (bits(out), Dictionary(uniqueKeysWithValues: store.parameters.compactMap { p in p.tensor.grad.map { (p.name, bits($0)) } }))
    }
    let sitPacked = gradients(sit.store) { sit(x, t: t, y: y, logitLayers: [], projections: false).velocity }
    let sitSplit = gradients(sit.store) { sit(x, t: t, y: y, logitLayers: [0, 1, 2], projections: false).velocity }
    #expect(differing(sitPacked.0, sitSplit.0) == 0, "SiT velocity: one pass vs split heads")
    #expect(sitPacked.1.count == sit.store.parameters.count, "SiT: every parameter gets a gradient")
    for (name, g) in sitPacked.1 { #expect(differing(g, sitSplit.1[name]) == 0, "SiT gradient of \(name): one pass vs split heads") }
    let dinoPacked = gradients(teacher.store) { teacher(images, logitLayers: []).patchTokens }
    let dinoSplit = gradients(teacher.store) { teacher(images, logitLayers: [0, 1, 2]).patchTokens }
    #expect(differing(dinoPacked.0, dinoSplit.0) == 0, "DINOv2 tokens: one pass vs split heads")
    for (name, g) in dinoPacked.1 { #expect(differing(g, dinoSplit.1[name]) == 0, "DINOv2 gradient of \(name): one pass vs split heads") }
}
