import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The fused kernels (modulatedLayerNorm, gatedResidual, biasGeluTanh: forward and backward) on the emulated CUDA
/// device against the CPU backend, through the public ops, on odd shapes: D = 45 and 37 (not multiples of the
/// block or of SIMD16), and T = 130 tokens, which splits each item into 3 device chunks of 64 rows (the last
/// partial) and 2 CPU chunks at D = 300; D = 1 100 walks a row in two strides of the row kernels' 4 × 256 columns
/// and takes the LayerNorm's widest warp entry point.
///
/// Bound: normwise relative error ≤ 4·k·u (u = 2⁻²⁴; as `Bound.rounding(k:)`), k the longest chain of float32
/// roundings feeding one element. The device sums in another order than the CPU (two-pass moments where the CPU
/// makes one shifted pass; per-item column sums over chunks of 64 rows where the CPU's chunks follow the row
/// length), and its tanhf is within 2 ulp where the CPU uses a vectorised tanh (≤ 2 ulp): k = D + 8 for y,
/// 2·D + 16 for dx, T + D + 8 for dshift/dscale, T + 2 for dgate, 16 for the GELU and rows + 16 for dbias.
@Suite struct CUDAFusedTests {
    let device: Device = EmulatedCUDA.device
    static let u = 0x1p-24
    static let shapes: [(Int, Int, Int)] = [(3, 33, 45), (2, 130, 300), (1, 5, 37), (2, 9, 1_100)]

    func expectWithin(_ a: Tensor, _ r: Tensor, k: Int, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.shape == r.shape, "\(what): shape \(a.shape) vs \(r.shape)", sourceLocation: sourceLocation)
        guard a.shape == r.shape else { return }
        let x = a.to(.cpu).scalars(as: Double.self), y = r.scalars(as: Double.self)
        let diff = zip(x, y).map { Swift.abs($0 - $1) }.max() ?? 0, scale = y.map(Swift.abs).max() ?? 0
        let rel = scale > 0 ? diff / scale : diff
        #expect(!x.contains { $0.isNaN } && rel <= 4 * Double(k) * CUDAFusedTests.u,
                "\(what): normwise relative error \(rel) > 4·\(k)·u", sourceLocation: sourceLocation)
    }

    /// y and the gradients of the tracked inputs (`tracked[i]`; untracked ones give nil) on `on`.
    func run(_ inputs: [Tensor], _ dy: Tensor, on: Device, tracked: [Bool]? = nil, _ f: ([Tensor]) -> Tensor) -> [Tensor?] {
        let leaves = inputs.enumerated().map { i, t -> Tensor in
            let c = t.to(on)
            let l = c.device == .cpu ? c.clone() : c
            l.requiresGrad = tracked?[i] ?? true
            return l
        }
        let y = f(leaves)
        let wrt = leaves.filter(\.requiresGrad)
        var grads = gradients(of: y, wrt: wrt, seed: dy.to(on)).makeIterator()
        return [y.detached()] + leaves.map { $0.requiresGrad ? grads.next()! : nil }
    }

    func compare(_ inputs: [Tensor], _ dy: Tensor, names: [String], ks: [Int], tracked: [Bool]? = nil, _ what: String,
                 _ f: @escaping ([Tensor]) -> Tensor) {
        let gpu = run(inputs, dy, on: device, tracked: tracked, f), cpu = run(inputs, dy, on: .cpu, tracked: tracked, f)
        for (i, name) in names.enumerated() {
            switch (gpu[i], cpu[i]) {
            case let (g?, c?): expectWithin(g, c, k: ks[i], "\(what) \(name)")
            case (nil, nil): break
            default: Issue.record("\(what) \(name): a gradient on one device only")
            }
        }
    }

    @Test(arguments: CUDAFusedTests.shapes.indices)
    func modulatedLayerNorm(_ which: Int) {
        let (n, t, d) = CUDAFusedTests.shapes[which]
        let x = Tensor.randn([n, t, d], seed: 101) * 3.0 + 1.0
        let shift = Tensor.randn([n, d], seed: 102), scale = Tensor.randn([n, d], seed: 103) * 0.5
        let dy = Tensor.randn([n, t, d], seed: 104)
        let f: ([Tensor]) -> Tensor = { $0[0].modulatedLayerNorm(shift: $0[1], scale: $0[2], eps: 1e-6) }
        let ks = [d + 8, 2 * d + 16, t + d + 8, t + d + 8]
        compare([x, shift, scale], dy, names: ["y", "dx", "dshift", "dscale"], ks: ks, "modulatedLayerNorm [\(n), \(t), \(d)]", f)
        // dshift alone (dscale not wanted) and dx alone.
        compare([x, shift, scale], dy, names: ["y", "dx", "dshift", "dscale"], ks: ks, tracked: [false, true, false],
                "modulatedLayerNorm (shift only)", f)
        compare([x, shift, scale], dy, names: ["y", "dx", "dshift", "dscale"], ks: ks, tracked: [true, false, false],
                "modulatedLayerNorm (x only)", f)
    }

    @Test(arguments: CUDAFusedTests.shapes.indices)
    func gatedResidual(_ which: Int) {
        let (n, t, d) = CUDAFusedTests.shapes[which]
        let x = Tensor.randn([n, t, d], seed: 105), gate = Tensor.randn([n, d], seed: 106), y = Tensor.randn([n, t, d], seed: 107)
        let dout = Tensor.randn([n, t, d], seed: 108)
        let f: ([Tensor]) -> Tensor = { $0[0].gatedResidual(gate: $0[1], $0[2]) }
        let ks = [4, 4, t + 2, 4]
        compare([x, gate, y], dout, names: ["out", "dx", "dgate", "dy"], ks: ks, "gatedResidual [\(n), \(t), \(d)]", f)
        compare([x, gate, y], dout, names: ["out", "dx", "dgate", "dy"], ks: ks, tracked: [false, true, false],
                "gatedResidual (gate only)", f)
        compare([x, gate, y], dout, names: ["out", "dx", "dgate", "dy"], ks: ks, tracked: [false, false, true],
                "gatedResidual (branch only)", f)
    }

    /// Under bf16 Autocast a GPU runs the gated residual fused (`fused_gated_*_bf16`), the CPU the composite
    /// `x + bf16(gate·y)` with bf16 gradients. out, dx and dy are the composite's bit for bit; dgate sums the same
    /// rounded terms bf16(bf16(dout)·y) in the fused chunk order (bound as `gatedResidual`'s). The CPU backend's
    /// `low` kernels (the same arithmetic, the CPU's chunks) are held to the composite the same way.
    @Test(arguments: CUDAFusedTests.shapes.indices)
    func gatedResidualUnderBF16Autocast(_ which: Int) {
        let (n, t, d) = CUDAFusedTests.shapes[which]
        let bf16 = { (x: Tensor) in x.to(.bfloat16).to(.float32) }       // carriers: Linear outputs in torch's bf16
        let x = Tensor.randn([n, t, d], seed: 115), gate = bf16(Tensor.randn([n, d], seed: 116)), y = bf16(Tensor.randn([n, t, d], seed: 117))
        let dout = Tensor.randn([n, t, d], seed: 118) * 1e-3
        let composite = run([x, gate, y], dout, on: .cpu) { v in Autocast.run(.bfloat16) { v[0].gatedResidual(gate: v[1], v[2]) } }
        let fusedCPU = run([x, gate, y], dout, on: .cpu) { v in
            Autocast.run(.bfloat16) { Autocast.core { v[0].fusedGatedResidual(gate: v[1], v[2], low: .bfloat16) } }
        }
        let fusedGPU = run([x, gate, y], dout, on: device) { v in Autocast.run(.bfloat16) { v[0].gatedResidual(gate: v[1], v[2]) } }
        for (side, got) in [("CPU low kernels", fusedCPU), ("device", fusedGPU)] {
            for (i, name) in [(0, "out"), (1, "dx"), (3, "dy")] {
                let a = got[i]!.to(.cpu).scalars(as: Float.self).map(\.bitPattern), b = composite[i]!.scalars(as: Float.self).map(\.bitPattern)
                #expect(a == b, "bf16 gatedResidual [\(n), \(t), \(d)] \(name) on the \(side): not the composite's bits")
            }
            expectWithin(got[2]!, composite[2]!, k: t + 2, "bf16 gatedResidual [\(n), \(t), \(d)] dgate on the \(side)")
        }
    }

    @Test(arguments: CUDAFusedTests.shapes.indices)
    func biasGeluTanh(_ which: Int) {
        let (n, t, d) = CUDAFusedTests.shapes[which]
        let x = Tensor.randn([n, t, d], seed: 109) * 2.0, bias = Tensor.randn([d], seed: 110)
        let dy = Tensor.randn([n, t, d], seed: 111)
        let f: ([Tensor]) -> Tensor = { $0[0].biasGeluTanh($0[1]) }
        compare([x, bias], dy, names: ["y", "dx", "dbias"], ks: [16, 16, n * t + 16], "biasGeluTanh [\(n), \(t), \(d)]", f)
        compare([x, bias], dy, names: ["y", "dx", "dbias"], ks: [16, 16, n * t + 16], tracked: [true, false],
                "biasGeluTanh (x only)", f)
    }

    /// The family compiles under the emulator's clang and is listed for NVRTC (`haste selftest --compile-only`).
    @Test func fusedFamilyIsListed() {
        #expect(CUDABackend.allSources.contains { $0.family == "fused" })
    }
}
