import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// `splitHeads` (SiT's qkv split) against the view chain it replaces, reshape → permute → select → contiguous, on
/// the CPU and the emulated CUDA device: the pieces bit for bit, and x's gradient equal (the chain adds a piece into
/// a zero-filled sum where splitHeads copies it: the same values, only a −0 may come back as +0 from the chain). Cases:
/// every piece used; one piece unused (its slice stays zero); x also used elsewhere (its running sum is not the
/// split's own, so the pieces are added to it).
@Suite struct SplitHeadsTests {
    static let (n, t, heads, dh) = (2, 5, 3, 4)

    /// The gradient of x for `use` (which pieces feed the loss, with which weights) and whether x feeds it directly.
    func run(_ device: Device, split: Bool, use: [Int], direct: Bool) -> (pieces: [[Float]], grad: [Float]) {
        let (n, t, h, dh) = (Self.n, Self.t, Self.heads, Self.dh), d = h * dh
        let x = Tensor.randn([n, t, 3 * d], seed: 201).to(device)
        x.requiresGrad = true
        let y = x * 1.0                                          // a non-leaf, as the qkv projection's output is
        let pieces: [Tensor]
        if split {
            let (q, k, v) = y.splitHeads(h)
            pieces = [q, k, v]
        } else {
            let parts = y.reshaped([n, t, 3, h, dh]).permuted([2, 0, 3, 1, 4])
            pieces = (0..<3).map { parts.select(axis: 0, index: $0).contiguous() }
        }
        var loss = Tensor.zeros([], device: device)
        for i in use { loss = loss + (pieces[i] * Tensor.randn([n, h, t, dh], seed: 210 + UInt64(i)).to(device)).sum() }
        if direct { loss = loss + (y * Tensor.randn([n, t, 3 * d], seed: 220).to(device)).sum() }
        loss.backward()
        return (pieces.map { $0.to(.cpu).scalars(as: Float.self) }, x.grad!.to(.cpu).scalars(as: Float.self))
    }

    @Test(arguments: [([0, 1, 2], false), ([2, 0], false), ([1, 0, 2], true), ([], true)])
    func splitHeadsIsTheViewChain(use: [Int], direct: Bool) {
        for device in [Device.cpu, EmulatedCUDA.device] {
            let chain = run(device, split: false, use: use, direct: direct), split = run(device, split: true, use: use, direct: direct)
            #expect(split.pieces.map { $0.map(\.bitPattern) } == chain.pieces.map { $0.map(\.bitPattern) }, "pieces on \(device)")
            #expect(split.grad == chain.grad, "x's gradient on \(device), pieces \(use)\(direct ? " and x directly" : "")")
            #expect(split.grad.contains { $0 != 0 } || use.isEmpty && !direct)
        }
    }

    /// bf16 `scaledDotProductAttention` on the emulated device, where the tensor-core kernels round q, k, v as they
    /// load them (`attentionRoundsOperands`): passing them unrounded gives the composite's output and gradients bit
    /// for bit, on inputs that are not bf16 values (the rounding matters) and on carriers.
    @Test(arguments: [false, true])
    func bf16AttentionWithoutRoundedCopiesIsTheComposite(carriers: Bool) {
        let shape = [2, 3, 17, 8]
        func inputs(_ seed: UInt64) -> Tensor {
            let x = Tensor.randn(shape, seed: seed) * 1.7
            return (carriers ? x.to(.bfloat16).to(.float32) : x).to(EmulatedCUDA.device)
        }
        let dout = Tensor.randn(shape, seed: 234).to(EmulatedCUDA.device)
        func run(_ composite: Bool) -> [[UInt32]] {
            let (q, k, v) = (inputs(231), inputs(232), inputs(233))
            for t in [q, k, v] { t.requiresGrad = true }
            let out = Autocast.run(.bfloat16) { () -> Tensor in
                guard composite else { return Tensor.scaledDotProductAttention(q, k, v) }
                let s = AttentionShape(batch: 6, queries: 17, keys: 17, headDim: 8, valueDim: 8)
                return autocastComposite(.bfloat16, [q, k, v]) {
                    Tensor.fusedAttention($0[0]!, $0[1]!, $0[2]!, s, scale: 1 / 8.0.squareRoot(), carriers: .bfloat16)
                }
            }
            (out * dout).sum().backward()
            return [out, q.grad!, k.grad!, v.grad!].map { $0.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
        }
        #expect(EmulatedCUDA.backend.attentionRoundsOperands(AttentionShape(batch: 6, queries: 17, keys: 17, headDim: 8, valueDim: 8),
                                                              precision: .bfloat16))
        let fast = run(false), reference = run(true)
        for (i, name) in ["out", "dq", "dk", "dv"].enumerated() { #expect(fast[i] == reference[i], "\(name), carriers \(carriers)") }
    }

    @Test func badShapesAreRefused() async {
        await #expect(processExitsWith: .failure) { _ = Tensor.zeros([2, 5, 10]).splitHeads(3) }
    }
}
