import Testing
import Foundation
@testable import HasteTensor
@testable import HasteNN
@testable import HasteCUDA

/// The GEMM epilogues beyond the bias (`GemmEpilogue`: GELU(tanh) after the bias, its gradient with the bias
/// gradient, the bias gradient of a weight gradient), as `CUDABackend` asks the driver for them
/// (CUDAGemmEpilogues.swift) and the bf16 MLP branch uses them, on the emulated device (the emulator computes
/// cuBLASLt's documented semantics on the host). Each backend call against float64 sums of the same bf16 operands
/// (a transposed or misplaced operand is off by O(1), a rounding at most half a bf16 step), the MLP branch within a
/// bf16 step of the general path, and the switches giving the general path's bits back.
@Suite(.serialized) struct GemmEpilogueTests {
    static let device = EmulatedCUDA.device
    static var backend: CUDABackend { EmulatedCUDA.backend }

    /// A bf16 tensor on the device from seeded values, and its values as the host sees them.
    static func bf16(_ shape: [Int], _ rng: inout SplitMix64, scale: Float = 1) -> (Tensor, [Double]) {
        let t = Tensor(rng.floats(shape.reduce(1, *)).map { $0 * scale }, shape: shape).to(device).to(.bfloat16)
        return (t, values(t))
    }

    static func values(_ t: Tensor) -> [Double] { t.to(.cpu).to(.float32).scalars(as: Float.self).map(Double.init) }

    /// One bf16 step at v (2⁻⁷ of its binade), or of the smallest normal for zero.
    static func step(_ v: Double) -> Double { v == 0 ? 0x1p-126 : pow(2, floor(log2(abs(v))) - 7) }

    static func geluTanh(_ u: Double) -> Double { 0.5 * u * (1 + tanh(0.7978845608028654 * (u + 0.044715 * u * u * u))) }
    static func geluTanhDerivative(_ u: Double) -> Double {
        let t = tanh(0.7978845608028654 * (u + 0.044715 * u * u * u))
        return 0.5 * (1 + t) + 0.5 * u * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * u * u)
    }

    /// |got − want| within half a bf16 step of the larger and `slack` (float32 sums against float64 ones).
    static func close(_ got: Double, _ want: Double, slack: Double) -> Bool {
        abs(got - want) <= 0.5 * step(max(abs(got), abs(want))) * (1 + 0x1p-8) + slack
    }

    /// The epilogue GEMMs `body` asks for, by label (the emulator's count), with its result.
    static func labels<R>(refusing: Set<String> = [], _ body: () throws -> R) rethrows -> (R, [String: Int]) {
        let tally = BiasGemmTally(refusedLabels: refusing)
        let r = try EmulatedDriver.$biasGemmTally.withValue(tally) { try body() }
        return (r, tally.labels)
    }

    @Test func linearWithGeluInItsEpilogue() {
        var rng = SplitMix64(seed: 11)
        let (rows, inF, outF) = (5, 24, 16)
        let (x, xs) = Self.bf16([rows, inF], &rng), (w, ws) = Self.bf16([outF, inF], &rng, scale: 0.5)
        let (b, bs) = Self.bf16([outF], &rng)
        let h = Tensor.empty([rows, outF], dtype: .bfloat16, device: Self.device), y = Tensor.empty([rows, outF], dtype: .bfloat16, device: Self.device)
        let y2 = Tensor.empty([rows, outF], dtype: .bfloat16, device: Self.device)
        let (ran, labels) = Self.labels {
            (Self.backend.linearBiasGeluTanh(rows: rows, inF: inF, outF: outF, x: x.buffer, weight: w.buffer, bias: b.buffer,
                                             preActivation: h.buffer, y: y.buffer),
             Self.backend.linearBiasGeluTanh(rows: rows, inF: inF, outF: outF, x: x.buffer, weight: w.buffer, bias: b.buffer,
                                             preActivation: nil, y: y2.buffer))
        }
        #expect(ran.0 && ran.1 && labels == ["+gelu+bias+aux": 1, "+gelu+bias": 1], "\(labels)")
        let hs = Self.values(h), ys = Self.values(y)
        var bad = 0
        for r in 0..<rows {
            for o in 0..<outF {
                var u = bs[o], mass = abs(bs[o])
                for i in 0..<inF { u += xs[r * inF + i] * ws[o * inF + i]; mass += abs(xs[r * inF + i] * ws[o * inF + i]) }
                let slack = 1e-6 * mass
                if !Self.close(hs[r * outF + o], u, slack: slack) { bad += 1 }
                if !Self.close(ys[r * outF + o], Self.geluTanh(u), slack: 2 * slack) { bad += 1 }
            }
        }
        #expect(bad == 0, "\(bad) of \(2 * rows * outF) values off")
        #expect(Self.values(y2) == ys, "GELU_BIAS (no pre-activation kept) gives GELU_AUX_BIAS's output")
        // Where cuBLASLt needs the pre-activation's leading dimension a multiple of 8, nothing is asked.
        let odd = Tensor.empty([rows, 12], dtype: .bfloat16, device: Self.device)
        let (w12, _) = Self.bf16([12, inF], &rng), (b12, _) = Self.bf16([12], &rng)
        let (oddRan, oddLabels) = Self.labels {
            Self.backend.linearBiasGeluTanh(rows: rows, inF: inF, outF: 12, x: x.buffer, weight: w12.buffer, bias: b12.buffer,
                                            preActivation: odd.buffer, y: odd.buffer)
        }
        #expect(!oddRan && oddLabels.isEmpty)
    }

    @Test func geluGradientAndBiasGradientInTheInputGradientsEpilogue() {
        var rng = SplitMix64(seed: 12)
        let (rows, outF, hidden) = (7, 9, 16)
        let (dy, dys) = Self.bf16([rows, outF], &rng), (w, ws) = Self.bf16([outF, hidden], &rng, scale: 0.5)
        let (h, hs) = Self.bf16([rows, hidden], &rng, scale: 2)
        let dh = Tensor.empty([rows, hidden], dtype: .bfloat16, device: Self.device), db = Tensor.empty([hidden], dtype: .bfloat16, device: Self.device)
        let dh2 = Tensor.empty([rows, hidden], dtype: .bfloat16, device: Self.device)
        let (ran, labels) = Self.labels {
            (Self.backend.geluTanhInputGradient(rows: rows, outF: outF, hidden: hidden, dy: dy.buffer, weight: w.buffer,
                                                preActivation: h.buffer, dh: dh.buffer, biasGradient: db.buffer),
             Self.backend.geluTanhInputGradient(rows: rows, outF: outF, hidden: hidden, dy: dy.buffer, weight: w.buffer,
                                                preActivation: h.buffer, dh: dh2.buffer, biasGradient: nil))
        }
        #expect(ran.0 && ran.1 && labels == ["+dgelu+bgrad": 1, "+dgelu": 1], "\(labels)")
        let dhs = Self.values(dh), dbs = Self.values(db)
        var bad = 0
        for j in 0..<hidden {
            var sum = 0.0, sumMass = 0.0
            for r in 0..<rows {
                var dg = 0.0, mass = 0.0
                for o in 0..<outF { dg += dys[r * outF + o] * ws[o * hidden + j]; mass += abs(dys[r * outF + o] * ws[o * hidden + j]) }
                let d = Self.geluTanhDerivative(hs[r * hidden + j])
                if !Self.close(dhs[r * hidden + j], dg * d, slack: 1e-6 * mass * abs(d) + 1e-7) { bad += 1 }
                sum += dg * d; sumMass += mass * abs(d)
            }
            if !Self.close(dbs[j], sum, slack: 1e-6 * sumMass + 1e-7) { bad += 1 }
        }
        #expect(bad == 0, "\(bad) of \(rows * hidden + hidden) values off")
        #expect(Self.values(dh2) == dhs, "DGELU (no bias gradient) gives DGELU_BGRAD's dh")
    }

    @Test func biasGradientInTheWeightGradientsEpilogue() {
        var rng = SplitMix64(seed: 13)
        let (rows, inF, outF) = (11, 6, 5)
        let (dy, dys) = Self.bf16([rows, outF], &rng), (x, xs) = Self.bf16([rows, inF], &rng)
        let dw = Tensor.empty([outF, inF], dtype: .bfloat16, device: Self.device), db = Tensor.empty([outF], dtype: .bfloat16, device: Self.device)
        let (ran, labels) = Self.labels {
            Self.backend.linearWeightAndBiasGradients(rows: rows, inF: inF, outF: outF, dy: dy.buffer, x: x.buffer, dw: dw.buffer, db: db.buffer)
        }
        #expect(ran && labels == ["+bgradb": 1], "\(labels)")
        let dws = Self.values(dw), dbs = Self.values(db)
        var bad = 0
        for o in 0..<outF {
            var s = 0.0, sMass = 0.0
            for r in 0..<rows { s += dys[r * outF + o]; sMass += abs(dys[r * outF + o]) }
            if !Self.close(dbs[o], s, slack: 1e-6 * sMass) { bad += 1 }
            for i in 0..<inF {
                var g = 0.0, mass = 0.0
                for r in 0..<rows { g += dys[r * outF + o] * xs[r * inF + i]; mass += abs(dys[r * outF + o] * xs[r * inF + i]) }
                if !Self.close(dws[o * inF + i], g, slack: 1e-6 * mass) { bad += 1 }
            }
        }
        #expect(bad == 0, "\(bad) of \(outF * inF + outF) values off")
    }

    /// float32 sampling with TF32 allowed: `linearBiasGeluTanhUntracked` (SiT's MLP without a gradient) as one
    /// GELU_BIAS GEMM, the CPU's linear + biasGeluTanh within float32 sums' error (the emulator's GEMM does not round
    /// to TF32); not without TF32 (strict float32 keeps the kernels), not for a tracked operand, and the layer takes it.
    @Test func float32SamplingTakesTheGeluEpilogueWithTF32() {
        var rng = SplitMix64(seed: 31)
        let x = Tensor(rng.floats(3 * 5 * 24), shape: [3, 5, 24]), w = Tensor(rng.floats(40 * 24).map { $0 * 0.3 }, shape: [40, 24])
        let b = Tensor(rng.floats(40), shape: [40])
        let want = x.linear(w).biasGeluTanh(b).scalars(as: Float.self)
        let (xd, wd, bd) = (x.to(Self.device), w.to(Self.device), b.to(Self.device))
        let (got, labels) = Self.labels { EmulatedDriver.$allowsTF32.withValue(true) { xd.linearBiasGeluTanhUntracked(wd, bd) } }
        #expect(labels == ["+gelu+bias": 1], "\(labels)")
        let g = got.map { $0.to(.cpu).scalars(as: Float.self) } ?? []
        #expect(got?.shape == [3, 5, 40] && g.count == want.count
                && zip(g, want).allSatisfy { abs($0 - $1) <= 1e-5 * (1 + abs($1)) }, "float32 GELU_BIAS against the CPU")
        let strict = Self.labels { xd.linearBiasGeluTanhUntracked(wd, bd) }
        #expect(strict.0 == nil && strict.1.isEmpty, "without TF32")
        wd.requiresGrad = true
        let tracked = Self.labels { EmulatedDriver.$allowsTF32.withValue(true) { xd.linearBiasGeluTanhUntracked(wd, bd) } }
        #expect(tracked.0 == nil && tracked.1.isEmpty, "a tracked weight")
        // SiT's MLP layer, sampling in float32 with TF32: fc1 with its GELU in one GEMM, fc2 with its bias epilogue.
        let store = ParameterStore(seed: 4)
        let mlp = MLP(store.root["mlp"], inFeatures: 24, hidden: 40, outFeatures: 24, activation: .geluTanh)
        store.finalize(on: Self.device)
        store.setRequiresGrad(false)                                                        // as generate's model
        let (_, layer) = Self.labels { EmulatedDriver.$allowsTF32.withValue(true) { noGrad { mlp(xd) } } }
        #expect(layer == ["+gelu+bias": 1, "+bias": 1], "\(layer)")
    }

    /// The bf16 MLP branch with GELU(tanh) and biases (hidden a multiple of 8): fc1's GELU in its epilogue (with the
    /// pre-activation kept while recording, not without), dh and fc1's bias gradient from fc2's input-gradient
    /// GEMM, fc2's bias gradient from its weight gradient. Output and gradients within a bf16 step of the general
    /// path (the epilogues skip a rounding it makes), the general path's bits with `HASTE_GEMM_GELU_EPILOGUE=0`.
    @Test func mlpBranchRidesTheEpilogues() {
        func run(_ fused: Bool, recompute: Bool = false) -> ([Double], [[Double]], [String: Int]) {
            var rng = SplitMix64(seed: 21)
            func t(_ shape: [Int], _ scale: Float) -> Tensor { Tensor(rng.floats(shape.reduce(1, *)).map { $0 * scale }, shape: shape).to(Self.device) }
            let x = t([2, 6, 12], 2), w1 = t([32, 12], 0.5), b1 = t([32], 0.5), w2 = t([9, 32], 0.5), b2 = t([9], 0.5)
            let up = t([2, 6, 9], 1)
            for p in [x, w1, b1, w2, b2] { p.requiresGrad = true }
            let ((y, grads), labels) = Self.labels {
                let y = BF16Branch.$recomputesMLPActivation.withValue(recompute) {
                    Autocast.run(.bfloat16) {
                        fused ? Tensor.autocastBranch(x, .mlp(w1: w1, b1: b1, activation: .geluTanh, w2: w2, b2: b2))!
                              : x.linear(w1, b1).unary(.geluTanh).linear(w2, b2)
                    }
                }
                (y * up).sum().backward()
                return (Self.values(y.detached()), [x, w1, b1, w2, b2].map { Self.values($0.grad!) })
            }
            return (y, grads, labels)
        }
        let general = run(false), fused = run(true)
        #expect(fused.2 == ["+gelu+bias+aux": 1, "+dgelu+bgrad": 1, "+bgradb": 1, "+bias": 1], "\(fused.2)")
        // Within one bf16 step of the tensor's largest value: the skipped roundings move a value by half a step of
        // its own, and what follows sums such moves with weights below 1 in total (|w| ≤ 0.5, GELU′ ≤ 1.13).
        func within(_ a: [Double], _ b: [Double]) -> Bool {
            let scale = b.map(abs).max() ?? 0
            return zip(a, b).allSatisfy { abs($0 - $1) <= Self.step(scale) }
        }
        #expect(within(fused.0, general.0), "output")
        for (i, name) in ["x", "w1", "b1", "w2", "b2"].enumerated() { #expect(within(fused.1[i], general.1[i]), "gradient of \(name)") }
        #expect(fused.0 != general.0 || fused.1 != general.1, "the epilogues' roundings should show somewhere")
        // The switch off: the general path's bits (only the bias epilogues and BGRADB, which it uses too).
        let off = CUDABackend.$geluEpilogueAllowed.withValue(false) { run(true) }
        #expect(off.0 == general.0 && off.1 == general.1 && off.2["+gelu+bias+aux"] == nil && off.2["+dgelu+bgrad"] == nil, "\(off.2)")
        // Recomputing the activation in backward: g from the kernel (the epilogue's g would not be what backward
        // recomputes), dh still from the epilogue.
        let recomputed = run(true, recompute: true)
        #expect(recomputed.2 == ["+bias": 2, "+dgelu+bgrad": 1, "+bgradb": 1], "\(recomputed.2)")
        #expect(recomputed.0 == general.0, "recomputing: the general path's forward")
        // Without a gradient (sampling): GELU_BIAS, no pre-activation written.
        let (_, inference) = Self.labels {
            var rng = SplitMix64(seed: 22)
            let x = Tensor(rng.floats(24 * 12), shape: [2, 12, 12]).to(Self.device)
            let w1 = Tensor(rng.floats(32 * 12), shape: [32, 12]).to(Self.device), b1 = Tensor(rng.floats(32), shape: [32]).to(Self.device)
            let w2 = Tensor(rng.floats(9 * 32), shape: [9, 32]).to(Self.device)
            return noGrad { Autocast.run(.bfloat16) { Tensor.autocastBranch(x, .mlp(w1: w1, b1: b1, activation: .geluTanh, w2: w2, b2: nil))! } }
        }
        #expect(inference == ["+gelu+bias": 1], "\(inference)")
    }
}
