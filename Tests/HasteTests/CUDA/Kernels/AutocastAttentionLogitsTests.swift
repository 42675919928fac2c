import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The attention that returns its logits, on bf16 operands under Autocast bf16 on CUDA
/// (`autocastAdaLNAttentionWithLogits`, `autocastAttentionBranchWithLogits`): the same bits as the general path
/// (modulatedLayerNorm, linear, splitHeads, attentionWithLogits, linear, gatedResidual) for the output, the logits and
/// every gradient, on the emulated device — with the loss on both outputs, on the output alone, on the logits alone.
@Suite(.serialized) struct AutocastAttentionLogitsTests {
    static let device = EmulatedCUDA.device

    /// The loss on: the output and the logits (a product with fixed weights), the output alone, the logits alone,
    /// the output and HASTE's alignment loss (`softCrossEntropy(target:leadingHeads:)`, reading the fused path's bf16
    /// logits as they are), the output and the same loss as a narrowed view's `softCrossEntropy(target:)` of the
    /// widened logits (the composition before the heads' own backward and the bf16 logits).
    enum Uses: String, CaseIterable { case both, output, logits, alignment, alignmentNarrowed }

    struct Result: Equatable { let output: [UInt32], logits: [UInt32], grads: [[UInt32]] }


    static func run(fused: Bool, uses: Uses, n: Int, t: Int, d: Int, heads: Int, bias: Bool, seed: UInt64) -> (Result, [String]) {
        var rng = SplitMix64(seed: seed)
        func r(_ shape: [Int], _ scale: Float) -> Tensor {
            Tensor(rng.floats(shape.reduce(1, *)).map { $0 * scale }, shape: shape).to(device)
        }
        let x = r([n, t, d], 1)
        let modulation = (0..<3).map { _ in r([n, d], 0.5).to(.bfloat16).to(.float32) }   // bf16 values, as a Linear's
        let params = [r([3 * d, d], 0.5), r([d, d], 0.5), r([3 * d], 0.3), r([d], 0.3)]
        let upstream = r([n, t, d], 1), upstreamLogits = r([n, heads - 1, t, t], 2), teacher = r([n, heads, t, t], 3)
        let leaves = [x] + modulation + (bias ? params : Array(params.prefix(2)))
        for l in leaves { l.requiresGrad = true }
        let (b1, b2) = bias ? (params[2], params[3]) : (nil, nil)
        let branch = BF16Branch.attention(qkv: params[0], qkvBias: b1, proj: params[1], projBias: b2, heads: heads)
        let m = modulation
        let (y, l) = Autocast.run(.bfloat16) { () -> (Tensor, Tensor) in
            if fused { return Tensor.autocastAdaLNAttentionWithLogits(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch)! }
            let (q, k, v) = x.modulatedLayerNorm(shift: m[0], scale: m[1], eps: 1e-6).linear(params[0], b1).splitHeads(heads)
            let (a, logits) = Tensor.attentionWithLogits(q, k, v)
            return (x.gatedResidual(gate: m[2], a.transposed(1, 2).reshaped([n, t, d]).linear(params[1], b2)), logits)
        }
        // The fused path's logits are bf16 (as torch's autocast leaves them), the general path's a float32 carrier.
        #expect(l.dtype == (fused ? .bfloat16 : .float32))
        let lw = l.to(.float32)                          // widened (differentiably: the gradient rounded back)
        // As HASTE's loss reads them: the first heads of the logits, a view.
        let logitLoss = (lw.narrowed(1, start: 0, length: heads - 1) * upstreamLogits).sum()
        let loss: Tensor
        switch uses {
        case .both: loss = (y * upstream).sum() + logitLoss
        case .output: loss = (y * upstream).sum()
        case .logits: loss = logitLoss
        case .alignment: loss = (y * upstream).sum() + l.softCrossEntropy(target: teacher, leadingHeads: heads - 1) * 7
        case .alignmentNarrowed:
            let used = heads - 1
            loss = (y * upstream).sum() + lw.narrowed(1, start: 0, length: used)
                .softCrossEntropy(target: teacher.narrowed(1, start: 0, length: used)) * 7
        }
        let nodes = Tensor.savedBytes(from: [loss]).rows.map(\.op)
        loss.backward()
        return (Result(output: floatBits(y.detached()), logits: floatBits(lw.detached()), grads: leaves.map { $0.grad.map(floatBits) ?? [] }), nodes)
    }

    static let shapes = [(2, 7, 8, 2, true), (1, 70, 12, 3, true), (2, 5, 12, 2, false), (1, 5, 12, 3, true)]

    @Test(arguments: Uses.allCases, shapes)
    func fusedAttentionWithLogitsIsTheGeneralPathBitForBit(uses: Uses, c: (Int, Int, Int, Int, Bool)) {
        let (n, t, d, heads, bias) = c
        let seed = UInt64(n * 1000 + t * 10 + d)
        let (general, generalNodes) = Self.run(fused: false, uses: uses, n: n, t: t, d: d, heads: heads, bias: bias, seed: seed)
        let (fused, fusedNodes) = Self.run(fused: true, uses: uses, n: n, t: t, d: d, heads: heads, bias: bias, seed: seed)
        let what = "uses \(uses) n \(n) t \(t) d \(d) heads \(heads) bias \(bias)"
        // The loss on the logits alone never reaches the output's node.
        #expect(fusedNodes.contains("BF16LogitsAttentionOutputBackward") == (uses != .logits)
                && fusedNodes.contains("BF16LogitsAttentionLogitsBackward") && !generalNodes.contains("BF16LogitsAttentionLogitsBackward"),
                "\(what): nodes \(fusedNodes)")
        #expect(fused.output == general.output, "\(what): output")
        #expect(fused.logits == general.logits, "\(what): logits")
        let names = ["x", "shift", "scale", "gate", "qkv weight", "proj weight", "qkv bias", "proj bias"]
        for (i, (f, g)) in zip(fused.grads, general.grads).enumerated() {
            #expect(f == g, "\(what): gradient of \(names[i]) (\(f.isEmpty ? "none" : "\(f.count)") vs \(g.isEmpty ? "none" : "\(g.count)"))")
        }
    }

    /// HASTE's alignment loss through `softCrossEntropy(target:leadingHeads:)` (its backward writes the logits' bf16
    /// gradient in one kernel where the walk offers it, and the walk adds it to the softmax's in bf16) gives the bits
    /// of the same loss on a narrowed view (float32 gradient, scattered, rounded, added in float32), on both paths.
    /// Shapes: T·T a multiple of 4 (four elements a thread) and not; a sum of 75 elements (the one-element add).
    @Test(arguments: shapes)
    func alignmentLossGradientsAreTheNarrowedViewsBitForBit(c: (Int, Int, Int, Int, Bool)) {
        let (n, t, d, heads, bias) = c
        for fused in [true, false] {
            let (heads, narrowed) = (Self.run(fused: fused, uses: .alignment, n: n, t: t, d: d, heads: heads, bias: bias, seed: 5).0,
                                     Self.run(fused: fused, uses: .alignmentNarrowed, n: n, t: t, d: d, heads: heads, bias: bias, seed: 5).0)
            #expect(heads == narrowed, "fused \(fused) n \(n) t \(t) d \(d)")
            #expect(heads.grads.allSatisfy { !$0.isEmpty && $0.contains { $0 != 0 } })
        }
    }

    /// Without a gradient (a frozen teacher's logit layer, and a checkpoint's forward), nothing is recorded and the
    /// values are the recorded call's.
    @Test func withoutAGradientNothingIsRecordedAndTheValuesAgree() {
        var rng = SplitMix64(seed: 9)
        func r(_ shape: [Int], _ scale: Float) -> Tensor { Tensor(rng.floats(shape.reduce(1, *)).map { $0 * scale }, shape: shape).to(Self.device) }
        let (n, t, d) = (2, 9, 8)
        let x = r([n, t, d], 1), m = (0..<3).map { _ in r([n, d], 0.5) }
        let branch = BF16Branch.attention(qkv: r([3 * d, d], 0.5), qkvBias: r([3 * d], 0.3), proj: r([d, d], 0.5), projBias: nil, heads: 2)
        func call() -> (Tensor, Tensor) {
            Autocast.run(.bfloat16) { Tensor.autocastAdaLNAttentionWithLogits(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch)! }
        }
        x.requiresGrad = true
        let (recorded, recordedLogits) = call()
        let (plain, plainLogits) = noGrad { call() }
        #expect(recorded.gradFn != nil && plain.gradFn == nil && plainLogits.gradFn == nil)
        #expect(floatBits(plain) == floatBits(recorded.detached()) && floatBits(plainLogits) == floatBits(recordedLogits.detached()))
        // The branch alone (no adaLN), a teacher's: the general path's values.
        let h = r([n, t, d], 1)
        let fused = noGrad { Autocast.run(.bfloat16) { Tensor.autocastAttentionBranchWithLogits(h, branch)! } }
        let general = BF16Branch.$generalPathOnly.withValue(true) { () -> (Tensor, Tensor) in
            #expect(noGrad { Autocast.run(.bfloat16) { Tensor.autocastAttentionBranchWithLogits(h, branch) } } == nil)
            guard case let .attention(w, b, pw, pb, heads) = branch else { fatalError() }
            return noGrad {
                Autocast.run(.bfloat16) {
                    let (q, k, v) = h.linear(w, b).splitHeads(heads)
                    let (a, l) = Tensor.attentionWithLogits(q, k, v)
                    return (a.transposed(1, 2).reshaped([n, t, d]).linear(pw, pb), l)
                }
            }
        }
        #expect(floatBits(fused.0) == floatBits(general.0) && floatBits(fused.1) == floatBits(general.1))
        // With a gradient wanted the branch alone is not taken (the general path records it).
        h.requiresGrad = true
        #expect(Autocast.run(.bfloat16) { Tensor.autocastAttentionBranchWithLogits(h, branch) } == nil)
    }

    /// The bf16 softmax kernels: the float32 kernels' results on the widened values, rounded once (forward: bf16;
    /// backward: bf16 too), for rows shorter and longer than a block's threads.
    @Test(arguments: [1, 7, 33, 70, 300])
    func bf16SoftmaxIsTheFloat32KernelRounded(cols: Int) {
        let be = Self.device.backend, rows = 5
        let x = (Tensor.randn([rows, cols], seed: UInt64(cols)) * 3).to(.bfloat16).to(Self.device)
        let dy = Tensor.randn([rows, cols], seed: UInt64(cols) + 1).to(.bfloat16).to(Self.device)
        let y = Tensor.empty([rows, cols], dtype: .bfloat16, device: Self.device)
        #expect(be.softmaxForwardLow(x.buffer, y.buffer, rows: rows, cols: cols))
        let y32 = Tensor.empty([rows, cols], dtype: .float32, device: Self.device)
        be.softmaxForward(x.to(.float32).buffer, y32.buffer, rows: rows, cols: cols)
        #expect(floatBits(y.to(.float32)) == floatBits(y32.to(.bfloat16).to(.float32)), "forward, cols \(cols)")
        let dx = Tensor.empty([rows, cols], dtype: .bfloat16, device: Self.device)
        #expect(be.softmaxBackwardLow(y.buffer, dy.buffer, dx.buffer, rows: rows, cols: cols))
        let dx32 = Tensor.empty([rows, cols], dtype: .float32, device: Self.device)
        be.softmaxBackward(y.to(.float32).buffer, dy.to(.float32).buffer, dx32.buffer, rows: rows, cols: cols)
        #expect(floatBits(dx.to(.float32)) == floatBits(dx32.to(.bfloat16).to(.float32)), "backward, cols \(cols)")
        #expect(y.to(.float32).sum(axes: [1]).to(.cpu).scalars(as: Float.self).allSatisfy { abs($0 - 1) < 0.02 })
    }
}
