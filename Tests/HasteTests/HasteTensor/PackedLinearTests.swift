import Testing
import HasteModels
import HasteNN
@testable import HasteTensor

private func bits(_ t: Tensor) -> [UInt32] { t.contiguous().scalars(as: Float.self).map(\.bitPattern) }
/// Elements whose bits differ (counted, not listed: a failing #expect on two long arrays diffs them for minutes).
private func differing(_ a: [UInt32], _ b: [UInt32]) -> Int {
    a.count == b.count ? zip(a, b).filter { $0 != $1 }.count : Swift.max(a.count, b.count)
}
private func differing(_ a: Tensor, _ b: Tensor) -> Int { a.shape == b.shape ? differing(bits(a), bits(b)) : a.count }

/// A linear layer with its weight packed in place (`PackedLinearWeight`, the frozen teacher's) gives bit for bit
/// what `linear(W, b)` gives, with and without a bias, on 1 and 2 threads: widths of one and of several
/// 48-column panels, K in one block, in two uneven blocks (300: 160 + 140) and in three (768: 256 × 3), row counts
/// with a partial tile and with both threads' rows (1029). `unpack` gives W back bit for bit; it declines (nil)
/// where the panels would not fit in W (out not a multiple of 48) and for a weight that is trained.
@Test func packedLinearIsLinearBitForBit() {
    guard CPUKernels.level == 2 else { return }
    let saved = Parallel.threads
    defer { Parallel.threads = saved }
    for (rows, inF, outF) in [(5, 16, 48), (37, 300, 96), (1029, 768, 144), (600, 64, 2304)] {
        let w = Tensor.randn([outF, inF], seed: UInt64(inF + outF)), b = Tensor.randn([outF], seed: 7)
        let x = Tensor.randn([rows, inF], seed: UInt64(rows))
        let original = bits(w)
        var expected: [Int: (Tensor, Tensor)] = [:]
        for threads in [1, 2] {
            Parallel.threads = threads
            expected[threads] = (x.linear(w, b), x.linear(w))
        }
        guard let packed = PackedLinearWeight(w) else { Issue.record("\(outF)×\(inF): declined"); continue }
        #expect(differing(bits(w), original) > 0, "\(outF)×\(inF): packing left W as it was")
        for threads in [1, 2] {
            Parallel.threads = threads
            let (withBias, plain) = expected[threads]!
            #expect(differing(x.linear(packed: packed, bias: b), withBias) == 0, "\(rows)×\(inF)→\(outF), \(threads) threads, bias")
            #expect(differing(x.linear(packed: packed), plain) == 0, "\(rows)×\(inF)→\(outF), \(threads) threads")
            let batched = x.reshaped([1, rows, inF])
            #expect(x.linear(packed: packed, bias: b).shape == [rows, outF]
                    && differing(batched.linear(packed: packed, bias: b).reshaped([rows, outF]), withBias) == 0)
        }
        packed.unpack()
        #expect(!packed.isPacked && differing(bits(w), original) == 0, "\(outF)×\(inF): unpack did not restore W")
        packed.unpack()                                                     // a second unpack changes nothing
        #expect(differing(bits(w), original) == 0)
    }
    #expect(PackedLinearWeight(Tensor.randn([40, 16], seed: 1)) == nil, "40 outputs: panels of 48 would not fit in W")
    let trained = Tensor.randn([48, 16], seed: 2)
    trained.requiresGrad = true
    #expect(PackedLinearWeight(trained) == nil, "a trained weight stays W")
}

/// A frozen DINOv2 packed for inference (`prepackedForInference`, what the Trainer does to the HASTE teacher on a
/// float32 CPU) gives the tokens, class token and attention logits of the unpacked model bit for bit; its store
/// hands out W again (stateDict unpacks), after which a fresh pack still gives the same bits. Widths of 48: every
/// linear (qkv 144, proj 48, fc1 192, fc2 48) packs.
@Test func prepackedDINOv2GivesTheSameBits() {
    guard CPUKernels.level == 2 else { return }
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 48, 2, 3, 4)
    let teacher = DINOv2(c, seed: 5, frozen: true)
    let images = Tensor.randn([3, 3, 8, 8], seed: 6)
    let weights = Dictionary(uniqueKeysWithValues: teacher.store.stateDict().map { ($0.0, bits($0.1)) })
    let plain = teacher(images, logitLayers: [0, 1])
    let packed = teacher.prepackedForInference()
    #expect(teacher.store.packedWeights.count == 4 * c.depth, "every linear of the teacher packs")
    #expect(teacher.prepackedForInference().store.packedWeights.count == 4 * c.depth, "packing twice packs nothing more")
    for _ in 0..<2 {
        let out = packed(images, logitLayers: [0, 1])
        #expect(differing(out.patchTokens, plain.patchTokens) == 0 && differing(out.classToken, plain.classToken) == 0)
        for i in [0, 1] { #expect(differing(out.attentionLogits[i]!, plain.attentionLogits[i]!) == 0, "logits of block \(i)") }
    }
    for (key, value) in teacher.store.stateDict() {                   // unpacks first
        #expect(differing(bits(value), weights[key]!) == 0, "\(key) is not W after stateDict")
    }
    #expect(teacher.store.packedWeights.isEmpty)
    let again = teacher.prepackedForInference()
    #expect(differing(again(images, logitLayers: [1]).patchTokens, plain.patchTokens) == 0)

    let trainable = DINOv2(c, seed: 5)                                  // a trained encoder is never packed
    #expect(trainable.prepackedForInference().store.packedWeights.isEmpty)
}

/// Under `noGrad` a packed linear runs on a tracked input (nothing is recorded), with the unpacked linear's bits.
@Test func packedLinearRunsOnATrackedInputUnderNoGrad() {
    guard CPUKernels.level == 2 else { return }
    let w = Tensor.randn([48, 20], seed: 3), b = Tensor.randn([48], seed: 4), x = Tensor.randn([10, 20], seed: 5)
    x.requiresGrad = true
    let expected = noGrad { x.linear(w, b) }
    guard let packed = PackedLinearWeight(w) else { Issue.record("declined"); return }
    let y = noGrad { x.linear(packed: packed, bias: b) }
    #expect(!y.isTracked && differing(y, expected) == 0)
}
