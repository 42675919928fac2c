import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The flash attention kernels (attentionForwardLSE / attentionBackwardLSE) on the emulated CUDA device against
/// the CPU's float64 oracle (CPUAttention.swift's LSE path, itself tested equal to the saved-probabilities path in
/// AttentionLSETests), on the same float32 inputs in [−1, 1).
///
/// Bounds: first-order worst cases of the float32 computation, from the inputs (u = 2⁻²⁴, nt = key tiles of 64,
/// L = max |logit|, eL = max over (i, j) of 2(Dh + 2)·u·scale·Σ_d |q_id·k_jd|, the logits' error):
/// - the online softmax's weights, relative: eW = 2·eL + (nt + 1)·(4u + 4u·L) (two logits per ratio; each tile's
///   exp and rescale α = exp(m_old − m_new) within 2 ulp, their arguments rounded relative to ≤ 2L);
/// - out: 2·eW + (2·Tk + nt + 3)·u (normalised weights, the Σ p·v and Σ p sums, the division; |v| ≤ 1);
/// - lse_i: eL + eW + (Tk + nt)·u + 2u·(|lse_i| + log(Tk + 1));
/// - backward (from the device's own out and lse): P relative eP_i = eL + e_lse_i + u·(L + |lse_i|) + 2u;
///   D_i = ⟨dO_i, O_i⟩ within Dv·e_out + (Dv + 1)·u·Dv, dP within (Dv + 1)·u·Dv, so |ΔdS_ij| ≤ P_ij·E_i with
///   E_i = (eP_i + 2u)·2Dv + eD + eDP (|dP − D| ≤ 2Dv); dq_i within scale·(E_i + (Tk + nt + 2)·u·Σ_j|dS_ij|),
///   dk_j within scale·(Σ_i P_ij·E_i + (Tq + 2)·u·Σ_i|dS_ij|), dv_j within Σ_i P_ij·(eP_i + (Tq + 2)·u); each plus
///   u·|result| for the final rounding.
/// A wrong index, a dropped tile or a missed rescale is off by ≫ these (≈1e-5 to 1e-4 at these sizes).
@Suite(.serialized) struct FlashAttentionTests {
    typealias Twin = CUDAKernelsBTests.Twin
    typealias Check = CUDAKernelsBTests.Check

    /// Host float64 reference quantities of one problem, and the bounds above.
    struct Reference {
        let out: [Double], lse: [Double], dq: [Double], dk: [Double], dv: [Double]
        let boundOut: Double, boundLSE: [Double], boundDQ: [Double], boundDK: [Double], boundDV: [Double]

        init(_ s: AttentionShape, scale: Double, q: [Float], k: [Float], v: [Float], dOut: [Float]) {
            let (tq, tk, dh, dvd) = (s.queries, s.keys, s.headDim, s.valueDim)
            let u = Check.u, nt = Double((tk + 63) / 64)
            // The oracle: the CPU LSE kernels in float64 on the widened inputs.
            let cpu = CPUBackend.shared
            func t(_ x: [Float]) -> Tensor { Tensor(x.map(Double.init)) }
            let tq64 = t(q), tk64 = t(k), tv64 = t(v), tdo = t(dOut)
            let out64 = Tensor.empty([s.batch * tq * dvd], dtype: .float64), lse64 = Tensor.empty([s.batch * tq], dtype: .float64)
            cpu.attentionForwardLSE(q: tq64.buffer, k: tk64.buffer, v: tv64.buffer, out: out64.buffer, lse: lse64.buffer,
                                    shape: s, scale: scale)
            let g = [q.count, k.count, v.count].map { Tensor.empty([$0], dtype: .float64) }
            cpu.attentionBackwardLSE(q: tq64.buffer, k: tk64.buffer, v: tv64.buffer, out: out64.buffer, lse: lse64.buffer,
                                     dOut: tdo.buffer, dq: g[0].buffer, dk: g[1].buffer, dv: g[2].buffer, shape: s, scale: scale)
            out = out64.scalars(as: Double.self); lse = lse64.scalars(as: Double.self)
            dq = g[0].scalars(as: Double.self); dk = g[1].scalars(as: Double.self); dv = g[2].scalars(as: Double.self)

            // Bound ingredients from the inputs: logits, their error, P, dS.
            var eL = 0.0, maxL = 0.0
            var p = [Double](repeating: 0, count: s.batch * tq * tk), ds = p
            for b in 0..<s.batch {
                for i in 0..<tq {
                    let row = b * tq + i
                    var delta = 0.0
                    for e in 0..<dvd { delta += Double(dOut[row * dvd + e]) * out[row * dvd + e] }
                    for j in 0..<tk {
                        var dot = 0.0, mag = 0.0, dp = 0.0
                        for d in 0..<dh {
                            let x = Double(q[row * dh + d]) * Double(k[(b * tk + j) * dh + d])
                            dot += x; mag += Swift.abs(x)
                        }
                        for e in 0..<dvd { dp += Double(dOut[row * dvd + e]) * Double(v[(b * tk + j) * dvd + e]) }
                        eL = Swift.max(eL, 2 * Double(dh + 2) * u * scale * mag)
                        maxL = Swift.max(maxL, Swift.abs(scale * dot))
                        p[row * tk + j] = Double.exp(scale * dot - lse[row])
                        ds[row * tk + j] = p[row * tk + j] * (dp - delta)
                    }
                }
            }
            let eW = 2 * eL + (nt + 1) * (4 * u + 4 * u * maxL)
            boundOut = 2 * eW + (2 * Double(tk) + nt + 3) * u
            let eLSE = lse.map { eL + eW + (Double(tk) + nt) * u + 2 * u * (Swift.abs($0) + Double.log(Double(tk + 1))) }
            boundLSE = eLSE
            let eDP = Double(dvd + 1) * u * Double(dvd), eD = Double(dvd) * boundOut + eDP
            var bq = [Double](repeating: 0, count: dq.count), bk = [Double](repeating: 0, count: dk.count)
            var bv = [Double](repeating: 0, count: dv.count)
            for b in 0..<s.batch {
                var sumPE = [Double](repeating: 0, count: tk), sumDS = sumPE, sumPe = sumPE
                for i in 0..<tq {
                    let row = b * tq + i
                    let eP = eL + eLSE[row] + u * (maxL + Swift.abs(lse[row])) + 2 * u
                    let e = (eP + 2 * u) * 2 * Double(dvd) + eD + eDP
                    var rowDS = 0.0
                    for j in 0..<tk {
                        let pij = p[row * tk + j], dsij = Swift.abs(ds[row * tk + j])
                        rowDS += dsij
                        sumPE[j] += pij * e; sumDS[j] += dsij; sumPe[j] += pij * (eP + Double(tq + 2) * u)
                    }
                    for d in 0..<dh {
                        bq[row * dh + d] = scale * (e + (Double(tk) + nt + 2) * u * rowDS) + u * Swift.abs(dq[row * dh + d])
                    }
                }
                for j in 0..<tk {
                    for d in 0..<dh {
                        let x = (b * tk + j) * dh + d
                        bk[x] = scale * (sumPE[j] + Double(tq + 2) * u * sumDS[j]) + u * Swift.abs(dk[x])
                    }
                    for e in 0..<dvd { let x = (b * tk + j) * dvd + e; bv[x] = sumPe[j] + u * Swift.abs(dv[x]) }
                }
            }
            boundDQ = bq; boundDK = bk; boundDV = bv
        }
    }

    static func within(_ got: [Float], _ want: [Double], _ bound: [Double], _ what: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(got.count == want.count && want.count == bound.count, "\(what): sizes", sourceLocation: sourceLocation)
        let worst = (0..<Swift.min(got.count, want.count, bound.count)).first { i in
            !(Swift.abs(Double(got[i]) - want[i]) <= bound[i])   // NaN fails
        } ?? -1
        #expect(worst < 0, "\(what): element \(worst): \(worst < 0 ? 0 : got[worst]) vs \(worst < 0 ? 0 : want[worst]), bound \(worst < 0 ? 0 : bound[worst])",
                sourceLocation: sourceLocation)
    }

    /// The conformance suite's rule (HasteSelftest `Bound.rounding(k:)`): normwise max|got − want| / max|want| ≤
    /// 4·k·u with k the longest rounding chain, Dh + 3·Tk + Dv + 2·Tq + 4·nt (logits, the exps and sums over keys,
    /// dP, the sums over queries, a rescale per key tile); sharper than the worst case for typical data.
    static func normwise(_ got: [Float], _ want: [Double], _ s: AttentionShape, _ what: String,
                         sourceLocation: SourceLocation = #_sourceLocation) {
        let k = s.headDim + 3 * s.keys + s.valueDim + 2 * s.queries + 4 * ((s.keys + 63) / 64)
        let scaleRef = want.map { Swift.abs($0) }.max() ?? 0
        let err = zip(got, want).map { Swift.abs(Double($0) - $1) }.max() ?? 0
        #expect(err <= 4 * Double(k) * Check.u * scaleRef, "\(what): normwise \(err / scaleRef) > 4·\(k)·u",
                sourceLocation: sourceLocation)
    }

    /// Several key tiles (257 = 4·64 + 1), one query tile, Dh 72 (SiT-XL/2); Tq = 1 and Dh ≠ Dv; several query
    /// and key tiles with the 128-wide variant and Dh ≠ Dv; exactly one full key tile and a 65th query row.
    static let oracleShapes = [AttentionShape(batch: 2, queries: 17, keys: 257, headDim: 72, valueDim: 72),
                               AttentionShape(batch: 3, queries: 1, keys: 17, headDim: 8, valueDim: 5),
                               AttentionShape(batch: 1, queries: 130, keys: 67, headDim: 128, valueDim: 96),
                               AttentionShape(batch: 2, queries: 65, keys: 64, headDim: 64, valueDim: 64)]

    @Test(arguments: oracleShapes)
    func flashKernelsMatchTheOracle(s: AttentionShape) {
        var rng = CUDAKernelsBTests.TestRNG(seed: 900 + UInt64(s.keys + s.headDim))
        let scale = 1 / Double(s.headDim).squareRoot()
        let q = rng.floats(s.batch * s.queries * s.headDim), k = rng.floats(s.batch * s.keys * s.headDim)
        let v = rng.floats(s.batch * s.keys * s.valueDim), dOut = rng.floats(s.batch * s.queries * s.valueDim)
        let ref = Reference(s, scale: scale, q: q, k: k, v: v, dOut: dOut)
        let gpu = EmulatedCUDA.backend
        #expect(gpu.attentionRecomputesProbabilities(s))
        let tq = Twin(q), tk = Twin(k), tv = Twin(v), tdo = Twin(dOut)
        let out = Twin(bytes: dOut.count * 4, .float32), lse = Twin(bytes: s.batch * s.queries * 4, .float32)
        gpu.attentionForwardLSE(q: tq[1], k: tk[1], v: tv[1], out: out[1], lse: lse[1], shape: s, scale: scale)
        let gotOut = out.read(1, Float.self), gotLSE = lse.read(1, Float.self)
        Self.within(gotOut, ref.out, ref.out.map { _ in ref.boundOut }, "flash out \(s)")
        Self.within(gotLSE, ref.lse, ref.boundLSE, "flash lse \(s)")
        Self.normwise(gotOut, ref.out, s, "flash out \(s)")
        // No lse buffer: the same output, bit for bit (the same kernel computing the same order).
        let outN = Twin(bytes: dOut.count * 4, .float32)
        gpu.attentionForwardLSE(q: tq[1], k: tk[1], v: tv[1], out: outN[1], lse: nil, shape: s, scale: scale)
        Check.bitwise(outN.read(1, Float.self), gotOut, "flash out without lse")

        for (wq, wk, wv) in [(true, true, true), (true, false, false), (false, true, false), (false, false, true)] {
            let dq = Twin([Float](repeating: .nan, count: q.count)), dk = Twin([Float](repeating: .nan, count: k.count))
            let dv = Twin([Float](repeating: .nan, count: v.count))
            gpu.attentionBackwardLSE(q: tq[1], k: tk[1], v: tv[1], out: out[1], lse: lse[1], dOut: tdo[1],
                                     dq: wq ? dq[1] : nil, dk: wk ? dk[1] : nil, dv: wv ? dv[1] : nil, shape: s, scale: scale)
            for (wanted, twin, want, bound, name) in [(wq, dq, ref.dq, ref.boundDQ, "dq"), (wk, dk, ref.dk, ref.boundDK, "dk"),
                                                      (wv, dv, ref.dv, ref.boundDV, "dv")] {
                let got = twin.read(1, Float.self)
                if wanted {
                    Self.within(got, want, bound, "flash \(name) \(s)")
                    Self.normwise(got, want, s, "flash \(name) \(s)")
                } else {
                    #expect(got.allSatisfy { $0.isNaN }, "flash \(name) not wanted, not written")
                }
            }
            if wq && wk && wv {   // deterministic: a second run is bit-identical
                let dq2 = Twin(bytes: q.count * 4, .float32), dk2 = Twin(bytes: k.count * 4, .float32)
                let dv2 = Twin(bytes: v.count * 4, .float32)
                gpu.attentionBackwardLSE(q: tq[1], k: tk[1], v: tv[1], out: out[1], lse: lse[1], dOut: tdo[1],
                                         dq: dq2[1], dk: dk2[1], dv: dv2[1], shape: s, scale: scale)
                for (a, b) in [(dq, dq2), (dk, dk2), (dv, dv2)] { Check.bitwise(b.read(1, Float.self), a.read(1, Float.self), "flash rerun") }
            }
        }
    }

    /// Empty axes, as documented on `attentionForwardLSE`: Tk = 0 gives out = 0, lse = −∞ and dq = 0; Tq = 0 gives
    /// dk = dv = 0. The CPU oracle and the device alike (outputs start as NaN, so every element must be written).
    @Test func emptyKeysOrQueries() {
        for s in [AttentionShape(batch: 2, queries: 5, keys: 0, headDim: 8, valueDim: 3),
                  AttentionShape(batch: 2, queries: 0, keys: 7, headDim: 4, valueDim: 6)] {
            var rng = CUDAKernelsBTests.TestRNG(seed: 5)
            let q = rng.floats(s.batch * s.queries * s.headDim), k = rng.floats(s.batch * s.keys * s.headDim)
            let v = rng.floats(s.batch * s.keys * s.valueDim), dOut = rng.floats(s.batch * s.queries * s.valueDim)
            let tq = Twin(q), tk = Twin(k), tv = Twin(v), tdo = Twin(dOut)
            let nan = { (n: Int) in Twin([Float](repeating: .nan, count: n)) }
            let out = nan(dOut.count), lse = nan(s.batch * s.queries), dq = nan(q.count), dk = nan(k.count), dv = nan(v.count)
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.attentionForwardLSE(q: tq[side], k: tk[side], v: tv[side], out: out[side], lse: lse[side], shape: s, scale: 0.5)
                backend.attentionBackwardLSE(q: tq[side], k: tk[side], v: tv[side], out: out[side], lse: lse[side],
                                             dOut: tdo[side], dq: dq[side], dk: dk[side], dv: dv[side], shape: s, scale: 0.5)
                for (twin, name) in [(out, "out"), (dq, "dq"), (dk, "dk"), (dv, "dv")] {
                    #expect(twin.read(side, Float.self).allSatisfy { $0 == 0 }, "\(name) side \(side) \(s)")
                }
                #expect(lse.read(side, Float.self).allSatisfy { $0 == -.infinity }, "lse side \(side) \(s)")
            }
        }
    }

    /// The autograd op on the emulated device (which takes the flash path) against the CPU op in float64 on the
    /// same inputs, within the bounds above; permuted (non-contiguous) q, k, v as SiT makes them.
    @Test func scaledDotProductAttentionOnTheEmulatedDeviceMatchesTheCPU() {
        let n = 2, h = 2, t = 19, dh = 12
        let s = AttentionShape(batch: n * h, queries: t, keys: t, headDim: dh, valueDim: dh)
        var rng = CUDAKernelsBTests.TestRNG(seed: 977)
        let qkv = rng.floats(n * t * 3 * h * dh), dy = rng.floats(n * h * t * dh)
        func split(_ x: Tensor) -> [Tensor] {   // [N, T, 3·H, Dh] → three [N, H, T, Dh] views
            let rows = x.reshaped([n, t, 3 * h, dh])
            return (0..<3).map { rows.narrowed(2, start: $0 * h, length: h).permuted([0, 2, 1, 3]) }
        }
        let base = Tensor(qkv, shape: [n, t, 3 * h * dh])
        let leaf = base.to(EmulatedCUDA.device)
        leaf.requiresGrad = true
        let x = split(leaf)
        let y = Tensor.scaledDotProductAttention(x[0], x[1], x[2])
        y.backward(Tensor(dy, shape: [n, h, t, dh]).to(EmulatedCUDA.device))
        let gotY = y.to(.cpu).scalars(as: Float.self), gotG = leaf.grad!.to(.cpu).scalars(as: Float.self)

        // Reference: contiguous per-head copies for the oracle, then back to the qkv layout.
        let parts = split(base).map { $0.contiguous().scalars(as: Float.self) }
        let ref = Reference(s, scale: 1 / Double(dh).squareRoot(), q: parts[0], k: parts[1], v: parts[2], dOut: dy)
        Self.within(gotY, ref.out, ref.out.map { _ in ref.boundOut }, "op out")
        // The CPU op in float64 gives the same gradient layout: compare the qkv gradient through it.
        let cpuLeaf = base.to(.float64)
        cpuLeaf.requiresGrad = true
        let cx = split(cpuLeaf)
        Tensor.scaledDotProductAttention(cx[0], cx[1], cx[2]).backward(Tensor(dy.map(Double.init), shape: [n, h, t, dh]))
        let wantG = cpuLeaf.grad!.scalars(as: Double.self)
        // Bounds in the qkv layout: scatter the per-operand bounds through the same views.
        let bounds = [ref.boundDQ, ref.boundDK, ref.boundDV].map { Tensor($0, shape: [n, h, t, dh]) }
        var boundG = [Double](repeating: 0, count: wantG.count)
        for (which, b) in bounds.enumerated() {
            let vals = b.scalars(as: Double.self)
            for ni in 0..<n { for hi in 0..<h { for ti in 0..<t { for d in 0..<dh {
                boundG[((ni * t + ti) * 3 * h + which * h + hi) * dh + d] = vals[((ni * h + hi) * t + ti) * dh + d]
            } } } }
        }
        Self.within(gotG, wantG, boundG, "op dqkv")
        #expect(EmulatedCUDA.backend.attentionRecomputesProbabilities(s))
    }

    /// Head dims over 128 keep the saved-probabilities path on CUDA (the VAE's 512-wide single head) and still
    /// match the CPU there.
    @Test func wideHeadsKeepTheProbabilitiesPath() {
        let s = AttentionShape(batch: 1, queries: 3, keys: 5, headDim: 130, valueDim: 130)
        #expect(!EmulatedCUDA.backend.attentionRecomputesProbabilities(s))
        #expect(!EmulatedCUDA.backend.attentionRecomputesProbabilities(AttentionShape(batch: 1, queries: 3, keys: 5, headDim: 64, valueDim: 129)))
        #expect(EmulatedCUDA.backend.attentionRecomputesProbabilities(AttentionShape(batch: 1, queries: 3, keys: 5, headDim: 128, valueDim: 128)))
        var rng = CUDAKernelsBTests.TestRNG(seed: 991)
        let (q, k, v) = (Tensor(rng.floats(3 * 130), shape: [1, 1, 3, 130]), Tensor(rng.floats(5 * 130), shape: [1, 1, 5, 130]),
                         Tensor(rng.floats(5 * 130), shape: [1, 1, 5, 130]))
        let want = Tensor.scaledDotProductAttention(q, k, v).scalars(as: Float.self)
        let got = Tensor.scaledDotProductAttention(q.to(EmulatedCUDA.device), k.to(EmulatedCUDA.device),
                                                   v.to(EmulatedCUDA.device)).to(.cpu).scalars(as: Float.self)
        // Same formulas on both sides (GEMM, row softmax, GEMM), inputs in [−1, 1): the kernB attention bound.
        let e = CUDAKernelsBTests.AttentionBounds(s, scale: 1 / 130.0.squareRoot())
        Check.within(got, want, want.map { _ in e.out }, "wide head out")
    }
}
