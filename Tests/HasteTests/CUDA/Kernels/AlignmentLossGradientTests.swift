import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// What HASTE's alignment loss on an aligned block's logits launches in the backward, on a host-only device (nothing
/// computed; the host's choices and the bytes of the tensors made): the loss writes the logits' bf16 gradient in one
/// kernel and the walk adds it to the softmax's bf16 one in bf16, where the same loss on a narrowed view makes a float32
/// gradient of the used heads, zero-fills and copies it into the whole logits, rounds it, adds the two in float32 and
/// casts the sum to bf16. The values are AutocastAttentionLogitsTests' (`alignmentLossGradientsAreTheNarrowedViewsBitForBit`).
@Suite(.serialized) struct AlignmentLossGradientTests {
    static let (device, driver) = hostOnlyDevice(21)

    /// Launches by kernel name and the bytes of tensors made, in the backward of output.sum() + the alignment loss.
    static func backward(leadingHeads: Bool, n: Int, t: Int, d: Int, heads: Int) -> (launches: [String: Int], made: Int) {
        let x = Tensor.zeros([n, t, d], device: device), m = (0..<3).map { _ in Tensor.zeros([n, d], device: device) }
        let params = [Tensor.zeros([3 * d, d], device: device), Tensor.zeros([d, d], device: device)]
        for p in [x] + params { p.requiresGrad = true }
        let branch = BF16Branch.attention(qkv: params[0], qkvBias: nil, proj: params[1], projBias: nil, heads: heads)
        let teacher = Tensor.zeros([n, heads, t, t], device: device), used = heads - 1
        let (y, l) = Autocast.run(.bfloat16) { Tensor.autocastAdaLNAttentionWithLogits(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch)! }
        let alignment = leadingHeads ? l.softCrossEntropy(target: teacher, leadingHeads: used)
            : l.narrowed(1, start: 0, length: used).softCrossEntropy(target: teacher.narrowed(1, start: 0, length: used))
        let loss = y.sum() + alignment
        driver.resetCounts()
        loss.backward()
        return (driver.launches, driver.madeBytes.values.reduce(0, +))
    }

    @Test func theLogitsGradientIsMadeInBF16Once() {
        let (n, t, d, heads) = (2, 16, 16, 4)
        let logits = n * heads * t * t
        let fused = Self.backward(leadingHeads: true, n: n, t: t, d: d, heads: heads)
        let narrowed = Self.backward(leadingHeads: false, n: n, t: t, d: d, heads: heads)
        #expect(fused.launches["soft_cross_entropy_backward_bf16_v4"] == 1 && fused.launches["add_bf16_v4"] == 1, "\(fused.launches)")
        #expect(narrowed.launches["soft_cross_entropy_backward_bf16_v4"] == nil && narrowed.launches["add_bf16_v4"] == nil,
                "\(narrowed.launches)")
        // The narrow's zero fill, the rounding pass and the float32 sum are gone (other fills and sums remain).
        for kernel in ["fill_4", "round_through_f32_v4", "binary32_f32_u4"] {
            #expect((narrowed.launches[kernel] ?? 0) - (fused.launches[kernel] ?? 0) >= 1, "\(kernel): \(fused.launches) vs \(narrowed.launches)")
        }
        // At least the zero-filled, the rounded and the summed float32 logits gradients are no longer made.
        #expect(narrowed.made - fused.made >= 3 * 4 * logits, "made \(fused.made) vs \(narrowed.made) bytes")
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
