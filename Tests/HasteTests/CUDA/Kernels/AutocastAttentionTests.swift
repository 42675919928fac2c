import Testing
@testable import HasteTensor
@testable import HasteNN
@testable import HasteModels
@testable import HasteCUDA

/// Autocast bf16 self-attention on CUDA (`autocastBranch(.attention)`) on bf16 operands: the heads of qkv's bf16 output
/// read in place by the direct flash kernels (or copied, where those do not take them), their output rounded straight
/// into proj's operand (a casting copy): the same bits as the general path (qkv linear, splitHeads,
/// scaledDotProductAttention, the heads merged, proj linear), forward and every gradient, on the emulated device;
/// `stridedCast` is a strided copy and a cast, bit for bit.
@Suite(.serialized) struct AutocastAttentionTests {
    static let device = EmulatedCUDA.device

    static func run(fused: Bool, n: Int, t: Int, heads: Int, dh: Int, bias: Bool, xTracked: Bool,
                    stridedBackward: Bool = true) -> ([UInt32], [[UInt32]], Bool, inPlace: Bool) {
        var rng = SplitMix64(seed: UInt64(7 * t + dh + (bias ? 100 : 0)))
        func r(_ shape: [Int], _ scale: Float) -> Tensor {
            Tensor(rng.floats(shape.reduce(1, *)).map { $0 * scale }, shape: shape).to(device)
        }
        let d = heads * dh
        let x = r([n, t, d], 1), w = r([3 * d, d], 0.6), b = r([3 * d], 0.3), pw = r([d, d], 0.5), pb = r([d], 0.3)
        let upstream = r([n, t, d], 1)
        let leaves = (xTracked ? [x] : []) + [w, pw] + (bias ? [b, pb] : [])
        for l in leaves { l.requiresGrad = true }
        let (b1, b2) = bias ? (b, pb) : (nil, nil)
        let y = Autocast.run(.bfloat16) { () -> Tensor in
            if fused { return Tensor.autocastBranch(x, .attention(qkv: w, qkvBias: b1, proj: pw, projBias: b2, heads: heads))! }
            let (q, k, v) = x.linear(w, b1).splitHeads(heads)
            let out = Tensor.scaledDotProductAttention(q, k, v)
            return out.transposed(1, 2).reshaped([n, t, d]).linear(pw, b2)
        }
        let tookFusedNode = y.gradFn.takes(BF16SelfAttentionTape.self)
        let inPlace = ((y.gradFn as? BF16BranchBackward)?.tape as? BF16SelfAttentionTape)?.h != nil   // heads read inside qkv
        CUDABackend.$flashStridedAllowed.withValue(stridedBackward) { (y * upstream).sum().backward() }
        return (floatBits(y.detached()), leaves.map { floatBits($0.grad!) }, tookFusedNode, inPlace)
    }

    /// Head dims 8 (four-element units), 6 (two) and 5 (one); 70 tokens: two key tiles, the second partial.
    @Test(arguments: [(2, 7, 2, 8, true, true), (1, 70, 2, 8, true, true), (2, 5, 3, 6, false, true), (2, 9, 2, 5, true, false)])
    func fusedAttentionIsTheGeneralPathBitForBit(_ c: (Int, Int, Int, Int, Bool, Bool)) {
        let (n, t, heads, dh, bias, xTracked) = c
        let general = Self.run(fused: false, n: n, t: t, heads: heads, dh: dh, bias: bias, xTracked: xTracked)
        let fused = Self.run(fused: true, n: n, t: t, heads: heads, dh: dh, bias: bias, xTracked: xTracked)
        let what = "n \(n) t \(t) heads \(heads) dh \(dh) bias \(bias) x tracked \(xTracked)"
        #expect(fused.2 && !general.2, "\(what): the fused path must record a BF16SelfAttentionTape")
        #expect(fused.0 == general.0, "\(what): output")
        #expect(fused.0.allSatisfy { $0 & 0xffff == 0 }, "\(what): output not bf16-representable")
        #expect(fused.1.count == general.1.count)
        for (i, (f, g)) in zip(fused.1, general.1).enumerated() { #expect(f == g, "\(what): gradient \(i)") }
    }

    /// A forward that read the heads in place (SiT-XL/2's head dim 72, 2 key tiles) and a backward that cannot take
    /// the layouts (`HASTE_FLASH_STRIDED` off in between): the backward copies the heads out of qkv's output and gives
    /// the general path's bits.
    @Test func inPlaceForwardThenCopyingBackward() {
        let general = Self.run(fused: false, n: 2, t: 70, heads: 2, dh: 72, bias: true, xTracked: true)
        let fused = Self.run(fused: true, n: 2, t: 70, heads: 2, dh: 72, bias: true, xTracked: true, stridedBackward: false)
        #expect(fused.2 && fused.inPlace && fused.0 == general.0, "output")
        let same = fused.1 == general.1
        #expect(same, "gradients")
    }

    /// The casting copies (every unit width) against their definition (the views' values cast one by one) on the
    /// device and on the CPU (which has no such kernel: copy, cast, copy), bit for bit, specials included.
    @Test(arguments: [8, 6, 5])
    func stridedCastIsACopyAndACast(dh: Int) {
        var rng = SplitMix64(seed: UInt64(dh))
        let (n, t, heads) = (2, 3, 2), c = 3 * heads * dh
        let specials: [Float] = [.nan, .infinity, -.infinity, -0.0, 3.4e38, 1e-41, Float(bitPattern: 0x3f80_8000)]
        let values = specials + rng.floats(n * t * c - specials.count).map { $0 * 5 }
        for device in [Device.cpu, Self.device] {
            let src = Tensor(values, shape: [n, t, c]).to(device)
            // bf16 [n, t, 3·H·Dh] → float32 heads of slot 1 (k): the slot's view [n, H, t, Dh], widened.
            let h = src.to(.bfloat16)
            let viewK = h.reshaped([n, t, 3, heads, dh]).select(axis: 2, index: 1).permuted([0, 2, 1, 3])
            #expect(floatBits(h.heads(1, of: 3, heads, bf16: false)) == floatBits(viewK.contiguous().to(.float32)), "dh \(dh) on \(device): widened split")
            // float32 heads [n, H, t, Dh] → slot 2 of a bf16 [n, t, 3·H·Dh]: rounded there, the other slots untouched.
            let heads32 = src.reshaped([n, t, 3, heads, dh]).select(axis: 2, index: 0).permuted([0, 2, 1, 3]).contiguous()
            let dst = h.contiguous().to(.float32).to(.bfloat16)          // a copy of h
            heads32.mergeHeads(into: dst, 2)
            let slots = dst.to(.float32).reshaped([n, t, 3, heads, dh])
            #expect(floatBits(slots.select(axis: 2, index: 2).permuted([0, 2, 1, 3]).contiguous()) == floatBits(heads32.to(.bfloat16).to(.float32)),
                    "dh \(dh) on \(device): rounded merge")
            if device != .cpu {   // the device has the kernel (the CPU answers false and the copies run)
                let piece = Tensor.empty([n, heads, t, dh], dtype: .float32, device: device)
                #expect(device.backend.stridedCast(from: h.buffer, srcStrides: [t * c, dh, c, 1], to: piece.buffer,
                                                   dstStrides: piece.strides, shape: piece.shape))
            }
            let before = h.to(.float32).reshaped([n, t, 3, heads, dh])
            for slot in 0..<2 {
                #expect(floatBits(slots.select(axis: 2, index: slot).contiguous()) == floatBits(before.select(axis: 2, index: slot).contiguous()),
                        "dh \(dh) on \(device): slot \(slot) changed")
            }
        }
    }

    /// Attention with logits (HASTE's aligned blocks) under Autocast bf16 on CUDA: both products and their backward
    /// as bf16 GEMMs (2 forward, 4 backward), the CPU composite's values within one bf16 ulp. Dh 16: the scale 1/4
    /// is a power of two, so q's gradient (the rounded gradient of q·scale, times scale) is bf16-representable too.
    @Test func attentionWithLogitsRunsBF16GemmsOnCUDA() {
        var rng = SplitMix64(seed: 31)
        func t(_ shape: [Int]) -> Tensor { Tensor(rng.floats(shape.reduce(1, *)), shape: shape) }
        let q = t([2, 3, 13, 16]), k = t([2, 3, 11, 16]), v = t([2, 3, 11, 5])
        CUDAKernelsBTests.expectAutocastGradients("attention with logits", [q, k, v], bf16Gemms: 6) { x in
            let (out, logits) = Tensor.attentionWithLogits(x[0], x[1], x[2])
            return Tensor.cat([out.flattened(), logits.flattened()], axis: 0)
        }
    }

    /// SiT's attention takes the path under Autocast bf16 on CUDA without logits, not with them, not in float32.
    @Test func sitAttentionTakesTheFusedPathOnlyWhereItApplies() {
        let store = ParameterStore(seed: 5)
        let attn = SiTAttention(store.root["attn"], dim: 16, heads: 2, qkNorm: false)
        store.finalize(on: Self.device)
        let x = Tensor.randn([2, 6, 16], seed: 2).to(Self.device)
        x.requiresGrad = true
        #expect(Autocast.run(.bfloat16) { attn(x, logits: false).0 }.gradFn.takes(BF16SelfAttentionTape.self))
        #expect(!(Autocast.run(.bfloat16) { attn(x, logits: true).0 }.gradFn.takes(BF16SelfAttentionTape.self)))
        #expect(!(attn(x, logits: false).0.gradFn.takes(BF16SelfAttentionTape.self)))
    }
}
