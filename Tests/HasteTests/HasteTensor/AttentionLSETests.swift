import Testing
@testable import HasteTensor

/// The log-sum-exp (recompute, flash) attention path on the CPU: its kernels against the saved-probabilities
/// kernels in float64, and `scaledDotProductAttention` through a CPU backend that says it recomputes (so the
/// op's LSE branch and `FlashAttentionBackward` run without a GPU). float64 throughout: both CPU paths compute the
/// same exact quantities, so they agree to a few float64 ulps of the sums (bounds 1e-12 for values of order 1).

/// The CPU backend behind another device index with `attentionRecomputesProbabilities` true, counting which
/// attention kernels the op calls.
final class RecomputingAttentionBackend: ForwardingBackend {
    override var name: String { "recomputing-attention" }
    nonisolated(unsafe) private(set) var lseForwards = 0, lseBackwards = 0, probsForwards = 0
    override func attentionRecomputesProbabilities(_ shape: AttentionShape) -> Bool { true }
    override func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape: AttentionShape,
                                      scale: Double) {
        lseForwards += 1
        super.attentionForwardLSE(q: q, k: k, v: v, out: out, lse: lse, shape: shape, scale: scale)
    }
    override func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                                       dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double) {
        lseBackwards += 1
        super.attentionBackwardLSE(q: q, k: k, v: v, out: out, lse: lse, dOut: dOut, dq: dq, dk: dk, dv: dv,
                                   shape: shape, scale: scale)
    }
    override func attentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape: AttentionShape,
                                   scale: Double) {
        probsForwards += 1
        super.attentionForward(q: q, k: k, v: v, probs: probs, out: out, shape: shape, scale: scale)
    }
}

/// Device indices (other suites use cuda:0, 1, 7, 8, 9): one backend for the gradcheck, one for the path counts.
enum AttentionLSEDevices {
    static let gradcheck: Device = { Backends.register(RecomputingAttentionBackend(), for: .cuda(11)); return .cuda(11) }()
    static let counting: (backend: RecomputingAttentionBackend, device: Device) = {
        let b = RecomputingAttentionBackend()
        Backends.register(b, for: .cuda(12))
        return (b, .cuda(12))
    }()
}

private func f64(_ shape: [Int], _ seed: UInt64) -> Tensor { Tensor.randn(shape, dtype: .float64, seed: seed) }
private func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Double {
    zip(a.scalars(as: Double.self), b.scalars(as: Double.self)).reduce(0) { Swift.max($0, Swift.abs($1.0 - $1.1)) }
}

/// Tq ≠ Tk, Dh ≠ Dv, Tq = 1, Tk = 1, rows of 17 and 65 keys; every subset of gradients (nil: not computed,
/// the NaN it held stays).
@Test(arguments: [AttentionShape(batch: 3, queries: 5, keys: 7, headDim: 4, valueDim: 6),
                  AttentionShape(batch: 2, queries: 1, keys: 17, headDim: 5, valueDim: 3),
                  AttentionShape(batch: 1, queries: 9, keys: 1, headDim: 3, valueDim: 2),
                  AttentionShape(batch: 2, queries: 13, keys: 65, headDim: 8, valueDim: 8)])
func lseKernelsMatchTheProbabilitiesKernels(s: AttentionShape) {
    let cpu = CPUBackend.shared
    let scale = 0.45
    let q = f64([s.batch, s.queries, s.headDim], 1), k = f64([s.batch, s.keys, s.headDim], 2)
    let v = f64([s.batch, s.keys, s.valueDim], 3), dOut = f64([s.batch, s.queries, s.valueDim], 4)
    let probs = Tensor.empty([s.batch, s.queries, s.keys], dtype: .float64)
    let out = Tensor.empty([s.batch, s.queries, s.valueDim], dtype: .float64)
    let outL = Tensor.empty(like: out), lse = Tensor.empty([s.batch, s.queries], dtype: .float64)
    cpu.attentionForward(q: q.buffer, k: k.buffer, v: v.buffer, probs: probs.buffer, out: out.buffer, shape: s, scale: scale)
    cpu.attentionForwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: outL.buffer, lse: lse.buffer, shape: s, scale: scale)
    #expect(maxAbsDiff(out, outL) < 1e-12)
    // lse against its definition, from the host.
    let qs = q.scalars(as: Double.self), ks = k.scalars(as: Double.self), ls = lse.scalars(as: Double.self)
    var worst = 0.0
    for b in 0..<s.batch {
        for i in 0..<s.queries {
            var sum = 0.0
            for j in 0..<s.keys {
                var dot = 0.0
                for d in 0..<s.headDim { dot += qs[(b * s.queries + i) * s.headDim + d] * ks[(b * s.keys + j) * s.headDim + d] }
                sum += Double.exp(scale * dot)
            }
            worst = Swift.max(worst, Swift.abs(Double.log(sum) - ls[b * s.queries + i]))
        }
    }
    #expect(worst < 1e-12, "lse off by \(worst)")
    // Without lse (inference): the same output.
    let outN = Tensor.empty(like: out)
    cpu.attentionForwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: outN.buffer, lse: nil, shape: s, scale: scale)
    #expect(maxAbsDiff(outN, outL) == 0)

    for (wq, wk, wv) in [(true, true, true), (true, false, false), (false, true, false), (false, false, true)] {
        let nan = { (t: Tensor) in Tensor.full(t.shape, .nan, dtype: .float64) }
        let grads = [q, k, v].map { (nan($0), nan($0)) }   // (probabilities path, LSE path)
        cpu.attentionBackward(q: q.buffer, k: k.buffer, v: v.buffer, probs: probs.buffer, dOut: dOut.buffer,
                              dq: wq ? grads[0].0.buffer : nil, dk: wk ? grads[1].0.buffer : nil,
                              dv: wv ? grads[2].0.buffer : nil, shape: s, scale: scale)
        cpu.attentionBackwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: outL.buffer, lse: lse.buffer, dOut: dOut.buffer,
                                 dq: wq ? grads[0].1.buffer : nil, dk: wk ? grads[1].1.buffer : nil,
                                 dv: wv ? grads[2].1.buffer : nil, shape: s, scale: scale)
        for (wanted, (want, got), name) in zip([wq, wk, wv], zip(grads, ["dq", "dk", "dv"])).map({ ($0.0, $0.1.0, $0.1.1) }) {
            if wanted {
                #expect(maxAbsDiff(want, got) < 1e-12, "\(name) \(s)")
            } else {
                #expect(got.scalars(as: Double.self).allSatisfy { $0.isNaN }, "\(name) not wanted, not written")
            }
        }
    }
}

/// The op on a backend that recomputes: the LSE kernels run (and not the probabilities kernel), with and without
/// autograd, and the output and gradients equal the CPU's saved-probabilities path.
@Test func scaledDotProductAttentionTakesTheLSEPathWhereTheBackendRecomputes() {
    let (backend, device) = AttentionLSEDevices.counting
    let inputs = [f64([2, 3, 7, 5], 31), f64([2, 3, 11, 5], 32), f64([2, 3, 11, 4], 33)]
    let dy = f64([2, 3, 7, 4], 34)
    func run(_ d: Device) -> (Tensor, [Tensor]) {
        let leaves = inputs.map { t -> Tensor in let x = t.to(d); x.requiresGrad = true; return x }
        let y = Tensor.scaledDotProductAttention(leaves[0], leaves[1], leaves[2], scale: 0.6)
        y.backward(dy.to(d))
        return (y.to(.cpu), leaves.map { $0.grad!.to(.cpu) })
    }
    let (want, wantGrads) = run(.cpu)
    let before = (backend.lseForwards, backend.lseBackwards, backend.probsForwards)
    let (got, gotGrads) = run(device)
    #expect((backend.lseForwards, backend.lseBackwards, backend.probsForwards) == (before.0 + 1, before.1 + 1, before.2))
    #expect(maxAbsDiff(want, got) < 1e-12)
    for (w, g) in zip(wantGrads, gotGrads) { #expect(maxAbsDiff(w, g) < 1e-12) }
    // Inference: one LSE forward without an lse buffer, the same output.
    let y = noGrad { Tensor.scaledDotProductAttention(inputs[0].to(device), inputs[1].to(device), inputs[2].to(device), scale: 0.6) }
    #expect(backend.lseForwards == before.0 + 2 && backend.lseBackwards == before.1 + 1)
    #expect(maxAbsDiff(want, y.to(.cpu)) < 1e-12)
    // The CPU itself keeps the probabilities path.
    #expect(!CPUBackend.shared.attentionRecomputesProbabilities(AttentionShape(batch: 1, queries: 1, keys: 1, headDim: 1, valueDim: 1)))
}

/// Central differences against autograd through the LSE path (the gradcheck of Support/Gradcheck.swift, with
/// the leaves on the recomputing backend), float64, default bounds 1e-7 + 1e-5·|numeric|.
@Test func lsePathGradient() {
    let device = AttentionLSEDevices.gradcheck
    for scale in [nil, 0.7] as [Double?] {
        let inputs = [f64([2, 1, 3, 5], 21), f64([2, 1, 17, 5], 22), f64([2, 1, 17, 3], 23)]
        let f = { (x: [Tensor]) in Tensor.scaledDotProductAttention(x[0], x[1], x[2], scale: scale) }
        let leaves = inputs.map { t -> Tensor in let x = t.to(device); x.requiresGrad = true; return x }
        let out = f(leaves)
        let w = Tensor.randn(out.shape, dtype: .float64, seed: 7)
        (out * w.to(device)).sum().backward()
        for (which, x) in inputs.enumerated() {
            var vals = x.scalars(as: Double.self)
            let analytic = leaves[which].grad!.to(.cpu).scalars(as: Double.self)
            func loss() -> Double {
                var args = inputs.map { $0.to(device) }
                args[which] = Tensor(vals, shape: x.shape).to(device)
                return noGrad { (f(args).to(.cpu) * w).sum().item() }
            }
            for i in vals.indices {
                let saved = vals[i]
                vals[i] = saved + 1e-6; let up = loss()
                vals[i] = saved - 1e-6; let down = loss()
                vals[i] = saved
                let numeric = (up - down) / 2e-6
                #expect(Swift.abs(numeric - analytic[i]) <= 1e-7 + 1e-5 * Swift.abs(numeric),
                        "input \(which) ∂/∂x[\(i)]: numeric \(numeric), autograd \(analytic[i])")
            }
        }
    }
}
