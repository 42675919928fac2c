import Testing
@testable import HasteTensor
@testable import HasteNN
@testable import HasteCUDA

/// Autocast bf16 MLPs on CUDA keep the hidden activations as bf16 tensors (`autocastBranch(.mlp)`): the same bits as the
/// general path (linear, the activation on the float32 carrier, linear), forward and every gradient, on the emulated
/// device; the bf16 unary kernels are the float32 kernels on widened values rounded once.
@Suite(.serialized) struct AutocastMLPTests {
    static let device = EmulatedCUDA.device

    /// out and the gradients of x, w1, b1, w2, b2 (those that are leaves requiring grad), as float32 bit patterns.
    static func run(_ op: UnaryOp, fused: Bool, bias: Bool, xTracked: Bool, rows: Int, seed: UInt64) -> ([UInt32], [[UInt32]], Bool) {
        var rng = SplitMix64(seed: seed)
        func t(_ shape: [Int], _ scale: Float) -> Tensor {
            Tensor(rng.floats(shape.reduce(1, *)).map { $0 * scale }, shape: shape).to(device)
        }
        let (inF, hidden, outF) = (12, 19, 9)
        let x = t([2, rows, inF], 2), w1 = t([hidden, inF], 0.5), b1 = t([hidden], 0.5)
        let w2 = t([outF, hidden], 0.5), b2 = t([outF], 0.5), upstream = t([2, rows, outF], 1)
        let leaves = (xTracked ? [x] : []) + [w1, w2] + (bias ? [b1, b2] : [])
        for l in leaves { l.requiresGrad = true }
        let (bias1, bias2) = bias ? (b1, b2) : (nil, nil)
        let y = Autocast.run(.bfloat16) {
            fused ? Tensor.autocastBranch(x, .mlp(w1: w1, b1: bias1, activation: op, w2: w2, b2: bias2))!
                  : x.linear(w1, bias1).unary(op).linear(w2, bias2)
        }
        let tookFusedNode = y.gradFn.takes(BF16MLPTape.self)
        (y * upstream).sum().backward()
        func bits(_ t: Tensor) -> [UInt32] { t.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
        return (bits(y.detached()), leaves.map { bits($0.grad!) }, tookFusedNode)
    }

    @Test(arguments: [UnaryOp.geluTanh, .gelu, .silu, .relu])
    func fusedMLPIsTheGeneralPathBitForBit(op: UnaryOp) {
        // 2·rows·19 hidden elements: rows 6 a multiple of 4 (the four-wide kernels), rows 3 and 5 not (one at a time).
        for (rows, bias, xTracked) in [(6, true, true), (3, false, true), (5, true, false)] {
            let seed = UInt64(rows) * 10 + (bias ? 1 : 0)
            let general = Self.run(op, fused: false, bias: bias, xTracked: xTracked, rows: rows, seed: seed)
            let fused = Self.run(op, fused: true, bias: bias, xTracked: xTracked, rows: rows, seed: seed)
            let what = "\(op) rows \(rows) bias \(bias) x tracked \(xTracked)"
            #expect(fused.2 && !general.2, "\(what): the fused path must record a BF16MLPTape")
            #expect(fused.0 == general.0, "\(what): output")
            #expect(fused.1.count == general.1.count)
            for (i, (f, g)) in zip(fused.1, general.1).enumerated() { #expect(f == g, "\(what): gradient \(i)") }
            #expect(fused.0.allSatisfy { $0 & 0xffff == 0 }, "\(what): output not bf16-representable")
        }
    }

    /// The bf16 unary kernels (one element, four and, for the activations with entry points of their own, eight at
    /// a time) are `unary`/`unaryBackward` on the widened values, rounded once: the emulated device's composite
    /// (widen, float32 kernel, cast), bit for bit, specials included.
    @Test(arguments: [UnaryOp.geluTanh, .gelu, .silu, .relu])
    func lowUnaryKernelsAreTheFloat32KernelsRounded(op: UnaryOp) {
        var rng = SplitMix64(seed: 9)
        let specials: [Float] = [0, -0.0, 1, -1, .infinity, -.infinity, .nan, 3e38, -3e38, 1e-40, 10, -10]
        // 1016: eight at a time (geluTanh, gelu) or four; 1012: four; 1015: one at a time.
        let values = specials + rng.floats(1004).map { $0 * 6 }
        let grads = rng.floats(values.count).map { $0 * 3 }
        for n in [values.count, values.count - 4, values.count - 1] {
            let x = Tensor(Array(values.prefix(n)), shape: [n]).to(.bfloat16).to(Self.device)
            let dy = Tensor(Array(grads.prefix(n)), shape: [n]).to(.bfloat16).to(Self.device)
            let y = x.unaryLowValues(op), dx = x.unaryBackwardLowValues(op, dy)
            #expect(y.dtype == .bfloat16 && dx.dtype == .bfloat16)
            let wantY = x.to(.float32).unary(op).to(.bfloat16)
            let xw = x.to(.float32), dyw = dy.to(.float32), d = Tensor.empty(like: xw)
            xw.backend.unaryBackward(op, x: xw.buffer, y: xw.unary(op).buffer, dy: dyw.buffer, dx: d.buffer, count: n)
            func bits(_ t: Tensor) -> [UInt16] { t.to(.cpu).to(.float32).scalars(as: Float.self).map { UInt16($0.bitPattern >> 16) } }
            #expect(bits(y) == bits(wantY), "\(op) forward, \(n) elements")
            #expect(bits(dx) == bits(d.to(.bfloat16)), "\(op) backward, \(n) elements")
            // The CPU (no low kernels: the composite) agrees on the exact ops.
            if op == .relu {
                let cx = x.to(.cpu)
                #expect(bits(cx.unaryLowValues(op)) == bits(y) && bits(cx.unaryBackwardLowValues(op, dy.to(.cpu))) == bits(dx))
            }
        }
    }

    /// geluTanh (SiT's MLP) and gelu (DINOv2's) take their own eight-wide entry points where the count is a multiple
    /// of 8 and the buffers 16-byte aligned (every fresh tensor), the generic ones otherwise, with
    /// `HASTE_UNARY_SPECIALIZED=0`, and for the other ops.
    @Test func activationsTakeTheirOwnEntryPoints() {
        CUDABackend.$unarySpecializedAllowed.withValue(true) { Self.activationEntryPoints() }   // whatever HASTE_UNARY_SPECIALIZED says
    }

    static func activationEntryPoints() {
        let driver = HostOnlyDriver(), be = CUDABackend(driver: driver, device: .cuda(12))
        Backends.register(be, for: .cuda(12))
        func kernels(_ op: UnaryOp, _ n: Int) -> (forward: [String], backward: [String]) {
            let x = Tensor.empty([n], dtype: .bfloat16, device: .cuda(12))
            driver.resetCounts()
            _ = x.unaryLowValues(op)
            let forward = driver.launches.keys.sorted()
            driver.resetCounts()
            _ = x.unaryBackwardLowValues(op, x)
            return (forward, driver.launches.keys.sorted())
        }
        for (op, code) in [(UnaryOp.geluTanh, 13), (.gelu, 14), (.silu, 0)] {
            for (n, suffix) in [(4096, code > 0 ? "_v8_\(code)" : "_v4"), (4092, "_v4"), (4095, "")] {
                let k = kernels(op, n)
                #expect(k.forward == ["unary_bf16\(suffix)"] && k.backward == ["unary_backward_bf16\(suffix)"], "\(op) \(n): \(k)")
            }
            let generic = CUDABackend.$unarySpecializedAllowed.withValue(false) { kernels(op, 4096) }
            #expect(generic.forward == ["unary_bf16_v4"] && generic.backward == ["unary_backward_bf16_v4"], "\(op): \(generic)")
        }
    }

    /// `recompute-mlp-activation`: the tape keeps no activation output (its backward recomputes it from h), the
    /// same bits forward and backward, and a whole SiT step holds one [rows, hidden] bf16 tensor less per block.
    @Test func recomputedActivationGivesTheSameBitsAndHoldsLess() throws {
        for op in [UnaryOp.geluTanh, .silu] {
            let kept = Self.run(op, fused: true, bias: true, xTracked: true, rows: 6, seed: 3)
            let recomputed = BF16Branch.$recomputesMLPActivation.withValue(true) {
                Self.run(op, fused: true, bias: true, xTracked: true, rows: 6, seed: 3)
            }
            let same = kept.0 == recomputed.0 && kept.1 == recomputed.1
            #expect(recomputed.2 && same, "\(op): output and gradients")
        }
        let sit = try tinyGenerationSiT()
        sit.store.move(to: Self.device)
        sit.store.setRequiresGrad(true)
        let x = Tensor.randn([2, 1, 8, 8], seed: 4).to(Self.device), t = Tensor([Float(0.4), 0.9], shape: [2]).to(Self.device)
        let y = Tensor([Int64(0), 1]).to(Self.device)
        func held(_ recompute: Bool) -> Int {
            let out = BF16Branch.$recomputesMLPActivation.withValue(recompute) { Autocast.run(.bfloat16) { sit(x, t: t, y: y) } }
            return Tensor.savedBytes(from: [out.velocity]).rows.filter { $0.op == "BF16AdaLNBranchBackward" }.map(\.savedBytes).reduce(0, +)
        }
        // 2 blocks, 16 tokens of hidden 16 (MLP hidden 64) per image, 2 images: 2·2·16·64 bf16 elements.
        #expect(held(false) - held(true) == 2 * 2 * 16 * 64 * 2)
    }

    /// SiT's MLP takes the fused path under Autocast bf16 on CUDA, not on the CPU, not in float32, and not for an
    /// activation whose derivative reads its output.
    @Test func mlpTakesTheFusedPathOnlyWhereItApplies() {
        let store = ParameterStore(seed: 8)
        let mlp = MLP(store.root["mlp"], inFeatures: 8, hidden: 16, outFeatures: 8, activation: .geluTanh)
        store.finalize(on: Self.device)
        let x = Tensor.randn([2, 3, 8], seed: 1).to(Self.device)
        x.requiresGrad = true
        #expect(Autocast.run(.bfloat16) { mlp(x) }.gradFn.takes(BF16MLPTape.self))
        #expect(!(mlp(x).gradFn.takes(BF16MLPTape.self)))
        #expect(Autocast.run(.bfloat16) { Tensor.autocastBranch(x, .mlp(w1: mlp.fc1.weight, b1: nil, activation: .sigmoid, w2: mlp.fc2.weight, b2: nil)) } == nil)
        #expect(Autocast.run(.float16) { Tensor.autocastBranch(x, mlp.bf16Branch!) } == nil)
        let cx = x.to(.cpu)
        #expect(Autocast.run(.bfloat16) { Tensor.autocastBranch(cx, .mlp(w1: mlp.fc1.weight.to(.cpu), b1: nil, activation: .geluTanh, w2: mlp.fc2.weight.to(.cpu), b2: nil)) } == nil)
    }
}

extension Optional where Wrapped == any Backward {
    /// True when this node is a bf16 branch (BF16BranchBackward) or half-block (BF16AdaLNBranchBackward) whose branch
    /// tape is a `tape`.
    func takes(_ tape: any BF16BranchTape.Type) -> Bool {
        if let node = self as? BF16BranchBackward { return type(of: node.tape) == tape }
        return false
    }
}
