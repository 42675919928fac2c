import Testing
@testable import HasteTensor
@testable import HasteNN
@testable import HasteModels
@testable import HasteCUDA

/// Autocast bf16 adaLN half-blocks on CUDA (`autocastAdaLNBranch`): modulatedLayerNorm writing the branch's bf16
/// operand, gatedResidual reading its bf16 output and writing its bf16 gradient. The same bits as the general path
/// (modulatedLayerNorm, the branch, gatedResidual) for the output and every gradient — x, the conditioning through
/// the adaLN linear and its chunks, the branch's parameters — on the emulated device.
@Suite(.serialized) struct AutocastAdaLNTests {
    static let device = EmulatedCUDA.device

    enum Kind: String, CaseIterable { case mlp, attention }

    static func run(_ kind: Kind, fused: Bool, n: Int, t: Int, d: Int, bias: Bool, viaAdaLN: Bool, seed: UInt64) -> ([UInt32], [[UInt32]], Bool) {
        var rng = SplitMix64(seed: seed)
        func r(_ shape: [Int], _ scale: Float) -> Tensor {
            Tensor(rng.floats(shape.reduce(1, *)).map { $0 * scale }, shape: shape).to(device)
        }
        let heads = 2, hidden = 3 * d
        let x = r([n, t, d], 1), c = r([n, d], 1), wa = r([6 * d, d], 0.4), ba = r([6 * d], 0.3)
        // Without the adaLN linear: shift, scale, gate as leaves (bf16 values, as a Linear's output), whose gradients are
        // seen as they leave the op (through the linear, its backward's rounding would hide a missing one).
        let modulation = (0..<3).map { _ in r([n, d], 0.5).to(.bfloat16).to(.float32) }
        let params: [Tensor] = kind == .mlp
            ? [r([hidden, d], 0.5), r([d, hidden], 0.5), r([hidden], 0.3), r([d], 0.3)]
            : [r([3 * d, d], 0.5), r([d, d], 0.5), r([3 * d], 0.3), r([d], 0.3)]
        let upstream = r([n, t, d], 1)
        let leaves = (viaAdaLN ? [x, c, wa, ba] : [x] + modulation) + (bias ? params : Array(params.prefix(2)))
        for l in leaves { l.requiresGrad = true }
        let (b1, b2) = bias ? (params[2], params[3]) : (nil, nil)
        let branch: BF16Branch = kind == .mlp
            ? .mlp(w1: params[0], b1: b1, activation: .geluTanh, w2: params[1], b2: b2)
            : .attention(qkv: params[0], qkvBias: b1, proj: params[1], projBias: b2, heads: heads)
        let y = Autocast.run(.bfloat16) { () -> Tensor in
            let m = viaAdaLN ? c.silu().linear(wa, ba).chunk(6, axis: -1) : modulation
            if fused { return Tensor.autocastAdaLNBranch(x, shift: m[0], scale: m[1], gate: m[2], eps: 1e-6, branch)! }
            let xl = x.modulatedLayerNorm(shift: m[0], scale: m[1], eps: 1e-6)
            let b: Tensor
            switch kind {
            case .mlp: b = xl.linear(params[0], b1).geluTanh().linear(params[1], b2)
            case .attention:
                let (q, k, v) = xl.linear(params[0], b1).splitHeads(heads)
                b = Tensor.scaledDotProductAttention(q, k, v).transposed(1, 2).reshaped([n, t, d]).linear(params[1], b2)
            }
            return x.gatedResidual(gate: m[2], b)
        }
        let tookFusedNode = y.gradFn is BF16AdaLNBranchBackward
        (y * upstream).sum().backward()
        return (floatBits(y.detached()), leaves.map { floatBits($0.grad!) }, tookFusedNode)
    }

    @Test(arguments: Kind.allCases, [(2, 7, 8, true, true), (1, 70, 8, true, true), (2, 5, 12, false, true), (2, 7, 8, true, false)])
    func fusedHalfBlockIsTheGeneralPathBitForBit(kind: Kind, c: (Int, Int, Int, Bool, Bool)) {
        let (n, t, d, bias, viaAdaLN) = c
        let seed = UInt64(n * 1000 + t * 10 + d)
        // The GELU epilogues skip a rounding the general path makes (GemmEpilogueTests): off here.
        let (general, fused) = CUDABackend.$geluEpilogueAllowed.withValue(false) {
            (Self.run(kind, fused: false, n: n, t: t, d: d, bias: bias, viaAdaLN: viaAdaLN, seed: seed),
             Self.run(kind, fused: true, n: n, t: t, d: d, bias: bias, viaAdaLN: viaAdaLN, seed: seed))
        }
        let what = "\(kind) n \(n) t \(t) d \(d) bias \(bias) via adaLN \(viaAdaLN)"
        #expect(fused.2 && !general.2, "\(what): the fused path must record BF16AdaLNBranchBackward")
        #expect(fused.0 == general.0, "\(what): output")
        #expect(fused.1.count == general.1.count)
        let names = (viaAdaLN ? ["x", "c", "adaLN weight", "adaLN bias"] : ["x", "shift", "scale", "gate"])
            + ["weight 1", "weight 2", "bias 1", "bias 2"]
        for (i, (f, g)) in zip(fused.1, general.1).enumerated() { #expect(f == g, "\(what): gradient of \(names[i])") }
    }

    /// modulatedLayerNormBackward's `residual`: dx = residual + the plain dx, bit for bit, on the CPU and the device
    /// (float32 dy, and the device's bf16 dy).
    @Test func layerNormBackwardAddsTheResidualInItsPass() {
        var rng = SplitMix64(seed: 12)
        let (n, t, d) = (2, 5, 24)
        for device in [Device.cpu, Self.device] {
            func r(_ shape: [Int]) -> Tensor { Tensor(rng.floats(shape.reduce(1, *)), shape: shape).to(device) }
            let x = r([n, t, d]), scale = r([n, d]), dy32 = r([n, t, d]).to(.bfloat16).to(.float32), residual = r([n, t, d])
            let mean = Tensor.empty([n * t], dtype: .float32, device: device), rstd = Tensor.empty(like: mean)
            let y = Tensor.empty(like: x)
            device.backend.modulatedLayerNormForward(x.buffer, shift: scale.buffer, scale: scale.buffer, y.buffer, mean: mean.buffer,
                                                     rstd: rstd.buffer, batch: n, tokens: t, cols: d, eps: 1e-6)
            for dy in device == .cpu ? [dy32] : [dy32, dy32.to(.bfloat16)] {
                let plain = Tensor.empty(like: x), summed = Tensor.empty(like: x)
                for (out, res) in [(plain, nil), (summed, residual)] as [(Tensor, Tensor?)] {
                    device.backend.modulatedLayerNormBackward(x.buffer, scale: scale.buffer, mean: mean.buffer, rstd: rstd.buffer,
                                                              dy.buffer, dx: out.buffer, residual: res?.buffer, dshift: nil,
                                                              dscale: nil, batch: n, tokens: t, cols: d)
                }
                let want = (residual + plain).to(.cpu).scalars(as: Float.self).map(\.bitPattern)
                #expect(summed.to(.cpu).scalars(as: Float.self).map(\.bitPattern) == want, "\(device), dy \(dy.dtype)")
            }
        }
    }

    /// The bf16 nodes (half-blocks, the adaLN linear) write their parameters' gradients straight into the arena
    /// slots the walk offers: after a poisoned `zeroGrad`, every slot of a SiT block holds exactly the gradient
    /// `gradients(of:)` computes without touching any slot.
    @Test func bf16NodesWriteParameterGradientsIntoTheirSlots() {
        let store = ParameterStore(seed: 6)
        let block = SiTBlock(store.root["b"], hidden: 16, heads: 2, mlpRatio: 4, qkNorm: false)
        store.finalize(on: Self.device)
        for (_, p) in store.parameters { p.copyValues(from: (Tensor.randn(p.shape, seed: 9) * 0.3).to(Self.device)) }
        let x = Tensor.randn([2, 6, 16], seed: 4).to(Self.device), c = Tensor.randn([2, 16], seed: 5).to(Self.device)
        let up = Tensor.randn([2, 6, 16], seed: 7).to(Self.device)
        func loss() -> Tensor { Autocast.run(.bfloat16) { (block(x, c, logits: false).0 * up).sum() } }
        let expected = store.gradients(of: loss()).map { $0.1.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
        for (_, p) in store.parameters { p.grad!.copyValues(from: Tensor.full(p.shape, .nan).to(Self.device)) }
        store.zeroGrad()
        loss().backward()
        for ((key, p), want) in zip(store.parameters, expected) {
            #expect(p.gradValue!.to(.cpu).scalars(as: Float.self).map(\.bitPattern) == want, "\(key)")
        }
    }

    /// A whole SiT (patch embedding, timestep MLP, blocks, final layer, a REPA projector) under Autocast bf16 on the
    /// device: sampling (no gradient: the branches keep nothing) and a training step's parameter gradients, the same
    /// bits with the bf16 branches as on the general path (`generalPathOnly`), one block returning logits.
    @Test func sitIsTheGeneralPathBitForBit() throws {
        // The GELU epilogues skip a rounding the general path makes (GemmEpilogueTests): off here.
        try CUDABackend.$geluEpilogueAllowed.withValue(false) { try Self.sitAgainstTheGeneralPath() }
    }

    static func sitAgainstTheGeneralPath() throws {
        let sit = try tinyGenerationSiT(projectors: [5])
        sit.store.move(to: Self.device)
        let x = Tensor.randn([2, 1, 8, 8], seed: 21).to(Self.device), up = Tensor.randn([2, 1, 8, 8], seed: 22).to(Self.device)
        let t = Tensor([Float(0.3), 0.8], shape: [2]).to(Self.device), y = Tensor([Int64(1), 2]).to(Self.device)
        func sample() -> [UInt32] { floatBits(noGrad { Autocast.run(.bfloat16) { sit(x, t: t, y: y).velocity } }) }
        func grads() -> [[UInt32]] {
            sit.store.setRequiresGrad(true)
            defer { sit.store.setRequiresGrad(false) }
            let out = Autocast.run(.bfloat16) { sit(x, t: t, y: y, logitLayers: [0], projections: true) }
            let loss = (out.velocity * up).sum() + out.attentionLogits[0]!.to(.float32).square().sum() + out.projections[0].square().sum()
            let rows = Tensor.savedBytes(from: [loss]).rows
            let fusedNodes = rows.filter { $0.op == "BF16AdaLNBranchBackward" }.map(\.nodes)
            #expect(fusedNodes == (BF16Branch.generalPathOnly ? [] : [3]), "half-blocks fused: \(fusedNodes)")  // 2 blocks, one with logits
            // bf16 MLPs outside the blocks' adaLN half-blocks: the timestep embedder's and the projector's first two layers.
            let mlps = rows.filter { $0.op == "BF16BranchBackward" }.map(\.nodes).reduce(0, +)
            #expect(mlps == (BF16Branch.generalPathOnly ? 0 : 2), "bf16 MLPs: \(rows.map(\.op))")
            return sit.store.gradients(of: loss).map { floatBits($0.1) }
        }
        let (generalSample, generalGrads) = BF16Branch.$generalPathOnly.withValue(true) { (sample(), grads()) }
        #expect(sample() == generalSample, "sampling")
        let fused = grads()
        for (i, (f, g)) in zip(fused, generalGrads).enumerated() { #expect(f == g, "gradient \(sit.store.keys[i])") }
    }

    /// The DINOv2 teacher under Autocast bf16 on the device (forward only, as HASTE runs it): its attention layers
    /// without logits take the bf16 attention branch and its MLPs the bf16 MLP, the same bits as the general path.
    @Test func dinov2TeacherIsTheGeneralPathBitForBit() {
        let model = tinyRandomDINOv2(valueSeed: 100, on: Self.device)
        let x = Tensor.randn([2, 3, 8, 8], seed: 6).to(Self.device)
        func run() -> [[UInt32]] {
            let out = noGrad { Autocast.run(.bfloat16) { model(x, logitLayers: [2]) } }
            // The logit layer's logits stay bf16 on the fused path (as torch's autocast leaves them), float32 carriers on the general one.
            #expect(out.attentionLogits[2]!.dtype == (BF16Branch.generalPathOnly ? .float32 : .bfloat16))
            return [out.patchTokens, out.classToken, out.attentionLogits[2]!].map(floatBits)
        }
        let general = BF16Branch.$generalPathOnly.withValue(true) { run() }
        #expect(run() == general)
    }

    /// A SiT block under Autocast bf16 on the device: both halves fused without logits; with logits the attention
    /// half keeps the general path (it returns them) and the MLP half is fused; the same bits either way as a
    /// float32 block is not (the rounding is there).
    @Test func sitBlockFusesItsHalvesWhereItCan() {
        let store = ParameterStore(seed: 3)
        let block = SiTBlock(store.root["b"], hidden: 16, heads: 2, mlpRatio: 4, qkNorm: false)
        store.finalize(on: Self.device)
        let x = Tensor.randn([2, 6, 16], seed: 4).to(Self.device), c = Tensor.randn([2, 16], seed: 5).to(Self.device)
        x.requiresGrad = true
        let (plain, none) = Autocast.run(.bfloat16) { block(x, c, logits: false) }
        #expect(none == nil && plain.gradFn is BF16AdaLNBranchBackward)
        let (withLogits, l) = Autocast.run(.bfloat16) { block(x, c, logits: true) }
        #expect(l != nil && withLogits.gradFn is BF16AdaLNBranchBackward)
        #expect(withLogits.to(.cpu).scalars(as: Float.self) == plain.to(.cpu).scalars(as: Float.self))
        #expect(!(block(x, c, logits: false).0.gradFn is BF16AdaLNBranchBackward))
    }
}
