import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// What HASTE's alignment loss on an aligned block's logits launches, on a host-only device (nothing computed; the
/// host's choices and the bytes of the tensors made): the loss reads the bf16 logits as they are, writes their bf16
/// gradient in one kernel and the walk adds it to the softmax's bf16 one in bf16, where the same loss on a narrowed
/// view of the widened logits makes a float32 copy of them, a float32 gradient of the used heads, zero-fills and copies
/// it into the whole logits and casts it to bf16. The values are AutocastAttentionLogitsTests'
/// (`alignmentLossGradientsAreTheNarrowedViewsBitForBit`).
@Suite(.serialized) struct AlignmentLossGradientTests {
    static let (device, driver) = hostOnlyDevice(21)

    /// Launches by kernel name and the bytes of tensors made, in the forward of the loss (from the aligned block's
    /// output on) and in the backward of output.sum() + the alignment loss. `leadingHeads`: the loss reads the bf16
    /// logits as they are (`softCrossEntropy(target:leadingHeads:)`); else as before: widened to float32 and narrowed.
    static func run(leadingHeads: Bool, n: Int, t: Int, d: Int, heads: Int)
        -> (forward: [String: Int], forwardMade: Int, launches: [String: Int], made: Int) {
        let x = Tensor.zeros([n, t, d], device: device), m = (0..<3).map { _ in Tensor.zeros([n, d], device: device) }
        let params = [Tensor.zeros([3 * d, d], device: device), Tensor.zeros([d, d], device: device)]
        for p in [x] + params { p.requiresGrad = true }
        let branch = BF16Branch.attention(qkv: params[0], qkvBias: nil, proj: params[1], projBias: nil, heads: heads)
        let teacher = Tensor.zeros([n, heads, t, t], device: device), used = heads - 1
        let (y, l) = Autocast.run(.bfloat16) { Tensor.autocastAdaLNAttentionWithLogits(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch)! }
        driver.resetCounts()
        let alignment = leadingHeads ? l.softCrossEntropy(target: teacher, leadingHeads: used)
            : l.to(.float32).narrowed(1, start: 0, length: used).softCrossEntropy(target: teacher.narrowed(1, start: 0, length: used))
        let (forward, forwardMade) = (driver.launches, driver.madeBytes.values.reduce(0, +))
        let loss = y.sum() + alignment
        driver.resetCounts()
        loss.backward()
        return (forward, forwardMade, driver.launches, driver.madeBytes.values.reduce(0, +))
    }

    /// The aligned block's logits are bf16 and the loss reads them so: no float32 copy of them is made.
    @Test func theLossReadsTheBF16LogitsAsTheyAre() {
        let (n, t, d, heads) = (2, 16, 16, 4)
        let logits = n * heads * t * t
        let bf16 = Self.run(leadingHeads: true, n: n, t: t, d: d, heads: heads)
        let widened = Self.run(leadingHeads: false, n: n, t: t, d: d, heads: heads)
        #expect((bf16.forward["soft_cross_entropy_f32_x16_w"] ?? 0) + (bf16.forward["soft_cross_entropy_f32_x16"] ?? 0) == 1
                && bf16.forward.keys.allSatisfy { !$0.hasPrefix("cast") && !$0.hasPrefix("strided") }, "\(bf16.forward)")
        #expect(widened.forward.keys.contains { $0.hasPrefix("cast") }, "\(widened.forward)")
        #expect(widened.forwardMade - bf16.forwardMade >= 4 * logits, "made \(bf16.forwardMade) vs \(widened.forwardMade) bytes")
    }

    @Test func theLogitsGradientIsMadeInBF16Once() {
        let (n, t, d, heads) = (2, 16, 16, 4)
        let logits = n * heads * t * t
        let fused = Self.run(leadingHeads: true, n: n, t: t, d: d, heads: heads)
        let narrowed = Self.run(leadingHeads: false, n: n, t: t, d: d, heads: heads)
        #expect(fused.launches["soft_cross_entropy_backward_bf16_v4"] == 1 && fused.launches["add_bf16_v4"] == 1, "\(fused.launches)")
        #expect(narrowed.launches["soft_cross_entropy_backward_bf16_v4"] == nil, "\(narrowed.launches)")
        // The used heads' float32 gradient, the narrow's zero fill and the cast back to bf16 are gone (other fills
        // and casts remain).
        for kernel in ["binary32_f32_u1", "fill_4", "cast_f32_bf16_v4"] {
            #expect((narrowed.launches[kernel] ?? 0) - (fused.launches[kernel] ?? 0) >= 1, "\(kernel): \(fused.launches) vs \(narrowed.launches)")
        }
        // At least the zero-filled float32 logits gradient and the used heads' one are no longer made.
        #expect(narrowed.made - fused.made >= 4 * logits + 4 * logits * (heads - 1) / heads, "made \(fused.made) vs \(narrowed.made) bytes")
    }

    /// A bf16 target (the teacher's logits under autocast) is read as it is: one kernel, no float32 copy of it.
    @Test func aBF16TargetIsReadWithoutAWidenedCopy() {
        let x = Tensor.zeros([2, 4, 16, 16], device: Self.device)
        let teacher = Tensor.zeros([2, 3, 17, 17], dtype: .bfloat16, device: Self.device).narrowed(2, start: 1, length: 16)
            .narrowed(3, start: 1, length: 16)
        Self.driver.resetCounts()
        _ = x.softCrossEntropy(target: teacher, leadingHeads: 3)
        let launches = Self.driver.launches
        #expect((launches["soft_cross_entropy_f32_t16_w"] ?? 0) + (launches["soft_cross_entropy_f32_t16"] ?? 0) == 1
                && launches.keys.allSatisfy { !$0.hasPrefix("cast") && !$0.hasPrefix("strided") }, "\(launches)")
    }
}
