import Testing
import HasteTensor

/// The fused adaLN-block ops against the composites they replace (STYLE §2.4: the composite of existing ops is
/// the reference), forward and every gradient, in float32 on odd shapes; then float64 gradchecks.
///
/// Bound (as the selftest's `Bound.rounding(k:)`): normwise relative error max|fused − composite| / max|composite|
/// ≤ 4·k·u, u = 2⁻²⁴, where k is the longest chain of float32 roundings feeding one element: a sum of n terms
/// in another order is within (n − 1)·u·Σ|terms| of the exact sum (Higham Thm 4.3), realised errors grow like
/// √k·u, so 4·k·u leaves a margin of 4√k over a correct kernel while a wrong one (a dropped term, a wrong item
/// index) is off by ≫ 1e-3. k per output: y of modulatedLayerNorm = D (the moments) + 8; dx = 2·D + 16 (two row
/// sums on top of x̂); dshift/dscale = T + D + 8 (a sum over the item's tokens of dy·x̂); gatedResidual y: 4,
/// dgate: T + 2; biasGeluTanh: 16 (one tanh, ≤ 2 ulp, and ≤ 10 pointwise roundings) and dbias: rows + 16.
@Suite struct FusedTests {
    static let u = 0x1p-24

    /// Normwise relative error within 4·k·u.
    func expectWithin(_ a: Tensor, _ r: Tensor, k: Int, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.shape == r.shape, "\(what): shape \(a.shape) vs \(r.shape)", sourceLocation: sourceLocation)
        guard a.shape == r.shape else { return }
        let x = a.scalars(as: Double.self), y = r.scalars(as: Double.self)
        let diff = zip(x, y).map { Swift.abs($0 - $1) }.max() ?? 0, scale = y.map(Swift.abs).max() ?? 0
        let rel = scale > 0 ? diff / scale : diff
        #expect(rel <= 4 * Double(k) * FusedTests.u, "\(what): normwise relative error \(rel) > 4·\(k)·u",
                sourceLocation: sourceLocation)
    }

    /// y and the gradients of `inputs` (leaves made here) under `f`, seeded with `dy`.
    func run(_ inputs: [Tensor], _ dy: Tensor, _ f: ([Tensor]) -> Tensor) -> [Tensor] {
        let leaves = inputs.map { t -> Tensor in let c = t.clone(); c.requiresGrad = true; return c }
        let y = f(leaves)
        return [y.detached()] + gradients(of: y, wrt: leaves, seed: dy).map { $0! }
    }

    /// [N, T, D] shapes: SIMD tails (45, 37 = 2·16 + 5 and 700 = 43·16 + 12), and [2, 101, 700] splits each item's
    /// tokens into 3 CPU chunks (46 rows per chunk at D = 700), the last one partial.
    static let shapes: [(Int, Int, Int)] = [(3, 33, 45), (1, 7, 37), (2, 101, 700)]

    @Test(arguments: FusedTests.shapes.indices)
    func modulatedLayerNormMatchesComposite(_ which: Int) {
        let (n, t, d) = FusedTests.shapes[which]
        let x = Tensor.randn([n, t, d], seed: 1) * 2.0 + 0.5
        let shift = Tensor.randn([n, d], seed: 2), scale = Tensor.randn([n, d], seed: 3) * 0.5
        let dy = Tensor.randn([n, t, d], seed: 4)
        let fused = run([x, shift, scale], dy) { $0[0].modulatedLayerNorm(shift: $0[1], scale: $0[2], eps: 1e-6) }
        let reference = run([x, shift, scale], dy) { v in
            v[0].layerNorm(eps: 1e-6) * (v[2].unsqueezed(1) + 1.0) + v[1].unsqueezed(1)
        }
        let ks = [d + 8, 2 * d + 16, t + d + 8, t + d + 8]
        for (i, what) in ["y", "dx", "dshift", "dscale"].enumerated() {
            expectWithin(fused[i], reference[i], k: ks[i], "modulatedLayerNorm \(what) [\(n), \(t), \(d)]")
        }
    }

    @Test(arguments: FusedTests.shapes.indices)
    func gatedResidualMatchesComposite(_ which: Int) {
        let (n, t, d) = FusedTests.shapes[which]
        let x = Tensor.randn([n, t, d], seed: 5), gate = Tensor.randn([n, d], seed: 6), y = Tensor.randn([n, t, d], seed: 7)
        let dout = Tensor.randn([n, t, d], seed: 8)
        let fused = run([x, gate, y], dout) { $0[0].gatedResidual(gate: $0[1], $0[2]) }
        let reference = run([x, gate, y], dout) { $0[0] + $0[1].unsqueezed(1) * $0[2] }
        let ks = [4, 4, t + 2, 4]
        for (i, what) in ["out", "dx", "dgate", "dy"].enumerated() {
            expectWithin(fused[i], reference[i], k: ks[i], "gatedResidual \(what) [\(n), \(t), \(d)]")
        }
    }

    @Test(arguments: FusedTests.shapes.indices)
    func biasGeluTanhMatchesComposite(_ which: Int) {
        let (n, t, d) = FusedTests.shapes[which]
        let x = Tensor.randn([n, t, d], seed: 9) * 2.0, bias = Tensor.randn([d], seed: 10)
        let dy = Tensor.randn([n, t, d], seed: 11)
        let fused = run([x, bias], dy) { $0[0].biasGeluTanh($0[1]) }
        let reference = run([x, bias], dy) { ($0[0] + $0[1]).geluTanh() }
        let ks = [16, 16, n * t + 16]
        for (i, what) in ["y", "dx", "dbias"].enumerated() {
            expectWithin(fused[i], reference[i], k: ks[i], "biasGeluTanh \(what) [\(n), \(t), \(d)]")
        }
        // Rank 2 (the MLP on [rows, hidden]) gives the same values as rank 3.
        let flat = noGrad { x.reshaped([n * t, d]).biasGeluTanh(bias) }
        #expect(flat.scalars(as: Float.self) == fused[0].scalars(as: Float.self))
    }

    /// Only some inputs tracked: the untracked ones get no gradient, the others the same as with all tracked.
    @Test func partialGradients() {
        let x = Tensor.randn([2, 9, 21], seed: 12), shift = Tensor.randn([2, 21], seed: 13), scale = Tensor.randn([2, 21], seed: 14)
        let dy = Tensor.randn([2, 9, 21], seed: 15)
        let all = run([x, shift, scale], dy) { $0[0].modulatedLayerNorm(shift: $0[1], scale: $0[2], eps: 1e-6) }
        let sc = scale.clone()
        sc.requiresGrad = true
        let onlyScale = gradients(of: x.modulatedLayerNorm(shift: shift, scale: sc, eps: 1e-6), wrt: [sc], seed: dy)
        #expect(onlyScale[0]!.scalars(as: Float.self) == all[3].scalars(as: Float.self))

        let gate = Tensor.randn([2, 21], seed: 16), branch = Tensor.randn([2, 9, 21], seed: 17)
        let g = gate.clone()
        g.requiresGrad = true
        let onlyGate = gradients(of: x.gatedResidual(gate: g, branch), wrt: [g], seed: dy)
        let ref = run([x, gate, branch], dy) { $0[0].gatedResidual(gate: $0[1], $0[2]) }
        #expect(onlyGate[0]!.scalars(as: Float.self) == ref[2].scalars(as: Float.self))
    }

    /// The per-item sums are taken in a fixed order: repeating the backward gives the same bits.
    @Test func backwardIsDeterministic() {
        let x = Tensor.randn([2, 101, 700], seed: 18), v = Tensor.randn([2, 700], seed: 19), w = Tensor.randn([2, 700], seed: 20)
        let dy = Tensor.randn([2, 101, 700], seed: 21), b = Tensor.randn([700], seed: 22)
        for _ in 0..<2 {
            let a = run([x, v, w], dy) { $0[0].modulatedLayerNorm(shift: $0[1], scale: $0[2], eps: 1e-6) }
            let c = run([x, v, w], dy) { $0[0].modulatedLayerNorm(shift: $0[1], scale: $0[2], eps: 1e-6) }
            for (p, q) in zip(a, c) { #expect(p.scalars(as: Float.self) == q.scalars(as: Float.self)) }
            let g1 = run([x, v, x], dy) { $0[0].gatedResidual(gate: $0[1], $0[2]) }
            let g2 = run([x, v, x], dy) { $0[0].gatedResidual(gate: $0[1], $0[2]) }
            for (p, q) in zip(g1, g2) { #expect(p.scalars(as: Float.self) == q.scalars(as: Float.self)) }
            let b1 = run([x, b], dy) { $0[0].biasGeluTanh($0[1]) }, b2 = run([x, b], dy) { $0[0].biasGeluTanh($0[1]) }
            for (p, q) in zip(b1, b2) { #expect(p.scalars(as: Float.self) == q.scalars(as: Float.self)) }
        }
    }

    // MARK: float64 gradchecks

    @Test func modulatedLayerNormGradcheck() {
        let x = Tensor.randn([2, 3, 19], dtype: .float64, seed: 23) * 1.5 + 0.3
        let shift = Tensor.randn([2, 19], dtype: .float64, seed: 24), scale = Tensor.randn([2, 19], dtype: .float64, seed: 25)
        gradcheck({ $0[0].modulatedLayerNorm(shift: $0[1], scale: $0[2], eps: 1e-6) }, at: [x, shift, scale])
    }

    @Test func gatedResidualGradcheck() {
        let x = Tensor.randn([2, 3, 19], dtype: .float64, seed: 26), gate = Tensor.randn([2, 19], dtype: .float64, seed: 27)
        let y = Tensor.randn([2, 3, 19], dtype: .float64, seed: 28)
        gradcheck({ $0[0].gatedResidual(gate: $0[1], $0[2]) }, at: [x, gate, y])
    }

    @Test func biasGeluTanhGradcheck() {
        let x = Tensor.randn([2, 3, 19], dtype: .float64, seed: 29) * 2.0, b = Tensor.randn([19], dtype: .float64, seed: 30)
        gradcheck({ $0[0].biasGeluTanh($0[1]) }, at: [x, b])
        gradcheck({ $0[0].biasGeluTanh($0[1]) }, at: [Tensor.randn([5, 3], dtype: .float64, seed: 31), Tensor.randn([3], dtype: .float64, seed: 32)])
    }

    // MARK: validation

    @Test func modulatedLayerNormRejectsMismatchedShift() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.zeros([2, 3, 5]).modulatedLayerNorm(shift: Tensor.zeros([3, 5]), scale: Tensor.zeros([2, 5]), eps: 1e-6)
        }
        #expect(trapMessage(r).contains("modulatedLayerNorm: shift [3, 5] does not match input [2, 3, 5]"))
    }

    @Test func gatedResidualRejectsMismatchedGate() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.zeros([2, 3, 5]).gatedResidual(gate: Tensor.zeros([2, 1, 5]), Tensor.zeros([2, 3, 5]))
        }
        #expect(trapMessage(r).contains("gatedResidual: gate [2, 1, 5] does not match input [2, 3, 5]"))
    }

    @Test func biasGeluTanhRejectsMismatchedBias() async {
        await #expect(processExitsWith: .failure) { _ = Tensor.zeros([4, 5]).biasGeluTanh(Tensor.zeros([4])) }
    }
}
