import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The tensor-core flash kernels (CUDAFlashAttentionBF16.swift, Autocast bf16) on the emulated device: the kernels
/// against float64 on the same bf16 carriers, and the autograd op under `Autocast.run(.bfloat16)` against the CPU's
/// Autocast attention (float32 attention on the carriers, output and gradients rounded to bf16).
///
/// Bounds (u_b = 2⁻⁸ bf16's unit roundoff, 8 significant bits; u = 2⁻²⁴; per query row i: the float32 logit error
/// eL_i = 2(Dh + 2)·u·scale·max_j Σ_d|q_id·k_jd|, L_i = max_j |S_ij|, and a relative slack for everything float32
/// — exp, the online rescales, Σ p, the float32 sums in the mma and the CPU's GEMMs —
/// ε_i = 2·eL_i + (Tq + Tk + Dh + Dv + 8·nt + 16)·u·(1 + L_i)):
/// - every weight P_ij of out = Σ_j P_ij·v_j reaches the GPU's sum as bf16(p_ij)/l_i: relative u_b + 3ε_i, so
///   |Δout_ie| ≤ (u_b + 3ε_i)·A_ie with A_ie = Σ_j P_ij·|v_je|; lse_i within 2ε_i + 2u·|lse_i|;
/// - backward (from the device's own out and lse): D_i = ⟨dO_i, out_i⟩ within eD_i = Σ_e|dO_ie|·Δout_ie +
///   ε_i·Σ_j P_ij·M_ij (M_ij = Σ_e|dO_ie·v_je|); P within 2ε_i relative, dP within ε_i·M_ij, so dS = P ⊙ (dP − D)
///   within F_ij = P_ij·(2ε_i·(|dP_ij| + |D_i|) + eD_i + ε_i·M_ij) before its bf16 rounding, and the operand that
///   enters the products within G_ij = u_b·|dS_ij| + 2·F_ij + ε_i·|dS_ij|;
///   dq_id within scale·Σ_j G_ij·|k_jd|, dk_jd within scale·Σ_i G_ij·|q_id|, dv_je within Σ_i (u_b + 3ε_i)·P_ij·|dO_ie|;
/// - the op against the CPU's Autocast op: both sides are within E of the exact value (the CPU's float32 errors
///   are among the ε terms) and both round to bf16, so |gpu − cpu| ≤ 2E + u_b·(2|x| + 2E).
/// u_b terms carry a factor 1.01 for the second-order products. A wrong fragment, a dropped tile or a missing
/// rescale is off by the size of the values, ≫ u_b·(their magnitude sums).
@Suite(.serialized) struct FlashAttentionBF16Tests {
    typealias Twin = CUDAKernelsBTests.Twin
    static let ub = 1.01 * 0x1p-8, u = 0x1p-24

    /// The values rounded to bf16 (Autocast's carriers).
    static func carriers(_ x: [Float]) -> [Float] { x.map { Float(bitPattern: UInt32($0.bfloat16Bits) << 16) } }

    /// Exact (float64) attention of one problem on carriers and the bounds above.
    struct Reference {
        var out: [Double], lse: [Double], dq: [Double], dk: [Double], dv: [Double]
        var eOut: [Double], eLSE: [Double], eDQ: [Double], eDK: [Double], eDV: [Double]

        init(_ s: AttentionShape, scale: Double, q: [Float], k: [Float], v: [Float], dOut: [Float]) {
            let (tq, tk, dh, dvd) = (s.queries, s.keys, s.headDim, s.valueDim)
            let ub = FlashAttentionBF16Tests.ub, u = FlashAttentionBF16Tests.u
            let slack = Double(tq + tk + dh + dvd + 8 * ((tk + 63) / 64) + 16) * u
            func zeros(_ n: Int) -> [Double] { [Double](repeating: 0, count: n) }
            out = zeros(s.batch * tq * dvd); eOut = out
            lse = zeros(s.batch * tq); eLSE = lse
            dq = zeros(q.count); eDQ = dq; dk = zeros(k.count); eDK = dk; dv = zeros(v.count); eDV = dv
            for b in 0..<s.batch {
                for i in 0..<tq {
                    let row = b * tq + i
                    var logit = zeros(tk), eL = 0.0, maxL = 0.0
                    for j in 0..<tk {
                        var dot = 0.0, mag = 0.0
                        for d in 0..<dh {
                            let x = Double(q[row * dh + d]) * Double(k[(b * tk + j) * dh + d])
                            dot += x; mag += Swift.abs(x)
                        }
                        logit[j] = scale * dot
                        eL = Swift.max(eL, 2 * Double(dh + 2) * u * Swift.abs(scale) * mag)
                        maxL = Swift.max(maxL, Swift.abs(logit[j]))
                    }
                    let eps = 2 * eL + slack * (1 + maxL)
                    let m = logit.max() ?? 0
                    let sum = logit.reduce(0) { $0 + Double.exp($1 - m) }
                    let p = logit.map { Double.exp($0 - m) / sum }
                    lse[row] = m + Double.log(sum)
                    eLSE[row] = 2 * eps + 2 * u * Swift.abs(lse[row])
                    var delta = 0.0, eD = 0.0
                    for e in 0..<dvd {
                        var o = 0.0, a = 0.0
                        for j in 0..<tk { let x = Double(v[(b * tk + j) * dvd + e]); o += p[j] * x; a += p[j] * Swift.abs(x) }
                        out[row * dvd + e] = o
                        eOut[row * dvd + e] = (ub + 3 * eps) * a
                        delta += Double(dOut[row * dvd + e]) * o
                        eD += Swift.abs(Double(dOut[row * dvd + e])) * eOut[row * dvd + e]
                    }
                    var dp = zeros(tk), mags = zeros(tk)
                    for j in 0..<tk {
                        for e in 0..<dvd {
                            let x = Double(dOut[row * dvd + e]) * Double(v[(b * tk + j) * dvd + e])
                            dp[j] += x; mags[j] += Swift.abs(x)
                        }
                        eD += eps * p[j] * mags[j]
                    }
                    for j in 0..<tk {
                        let ds = p[j] * (dp[j] - delta)
                        let f = p[j] * (2 * eps * (Swift.abs(dp[j]) + Swift.abs(delta)) + eD + eps * mags[j])
                        let g = ub * Swift.abs(ds) + 2 * f + eps * Swift.abs(ds)
                        for d in 0..<dh {
                            let kj = Double(k[(b * tk + j) * dh + d]), qi = Double(q[row * dh + d])
                            dq[row * dh + d] += scale * ds * kj
                            eDQ[row * dh + d] += Swift.abs(scale) * g * Swift.abs(kj)
                            dk[(b * tk + j) * dh + d] += scale * ds * qi
                            eDK[(b * tk + j) * dh + d] += Swift.abs(scale) * g * Swift.abs(qi)
                        }
                        for e in 0..<dvd {
                            let o = Double(dOut[row * dvd + e])
                            dv[(b * tk + j) * dvd + e] += p[j] * o
                            eDV[(b * tk + j) * dvd + e] += (ub + 3 * eps) * p[j] * Swift.abs(o)
                        }
                    }
                }
            }
        }
    }

    static func within(_ got: [Float], _ want: [Double], _ bound: [Double], _ what: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(got.count == want.count && want.count == bound.count, "\(what): sizes", sourceLocation: sourceLocation)
        let worst = (0..<Swift.min(got.count, want.count, bound.count)).first { i in
            !(Swift.abs(Double(got[i]) - want[i]) <= bound[i])   // NaN fails
        }
        #expect(worst == nil, "\(what): element \(worst ?? -1): \(worst.map { got[$0] } ?? 0) vs \(worst.map { want[$0] } ?? 0), bound \(worst.map { bound[$0] } ?? 0)",
                sourceLocation: sourceLocation)
    }

    /// SiT-XL/2's Dh 72 (the d80 variant, 72 padded to 80) over 3 key and 2 query tiles; Dh ≠ Dv with Dv not a
    /// multiple of 16 and exactly one full key tile (d64); d96 with Dh > Dv; the d128 variant with both dims padded;
    /// a single query row; 300 keys (5 tiles: dq from its own kernel, not from dk/dv's — flashFusedDQTiles).
    static let shapes = [AttentionShape(batch: 2, queries: 70, keys: 131, headDim: 72, valueDim: 72),
                         AttentionShape(batch: 1, queries: 33, keys: 300, headDim: 72, valueDim: 72),
                         AttentionShape(batch: 3, queries: 65, keys: 64, headDim: 64, valueDim: 40),
                         AttentionShape(batch: 2, queries: 40, keys: 70, headDim: 88, valueDim: 48),
                         AttentionShape(batch: 2, queries: 17, keys: 129, headDim: 24, valueDim: 100),
                         AttentionShape(batch: 1, queries: 1, keys: 5, headDim: 8, valueDim: 3)]

    @Test(arguments: shapes) func tensorCoreKernelsMatchTheFloat64Reference(s: AttentionShape) {
        Self.check(s, scale: 1 / Double(s.headDim).squareRoot())
    }

    /// A negative scale (the kernels take any): the forward's max of scale·S is not scale·max(S) there
    /// (`tc_softmax_tile` scales S first). Partial key tiles and several; q 40× larger, so each row's scaled logits
    /// span far more than 128 (in log₂ units): shifted by anything but their max, 2^x overflows.
    @Test func negativeScales() {
        Self.check(AttentionShape(batch: 2, queries: 70, keys: 131, headDim: 72, valueDim: 72), scale: -0.3, amplitude: 40)
        Self.check(AttentionShape(batch: 1, queries: 17, keys: 129, headDim: 24, valueDim: 100), scale: -0.5, amplitude: 40)
    }

    static func check(_ s: AttentionShape, scale: Double, amplitude: Float = 1) {
        var rng = SplitMix64(seed: 700 + UInt64(s.keys + s.headDim + s.valueDim))
        let q = Self.carriers(rng.floats(s.batch * s.queries * s.headDim).map { $0 * amplitude }), k = Self.carriers(rng.floats(s.batch * s.keys * s.headDim))
        let v = Self.carriers(rng.floats(s.batch * s.keys * s.valueDim))
        let dOut = Self.carriers(rng.floats(s.batch * s.queries * s.valueDim))
        let ref = Reference(s, scale: scale, q: q, k: k, v: v, dOut: dOut)
        let gpu = EmulatedCUDA.backend
        #expect(gpu.flashUsesTensorCores(.bfloat16) && !gpu.flashUsesTensorCores(.float32) && !gpu.flashUsesTensorCores(.float16))
        let width = [64, 80, 96, 128].first { Swift.max(s.headDim, s.valueDim) <= $0 }!
        #expect(CUDABackend.flashBF16Variant(s) == "d\(width)")
        let tq = Twin(q), tk = Twin(k), tv = Twin(v), tdo = Twin(dOut)
        func forward(_ p: ComputePrecision, lse: Bool = true) -> (out: Twin, lse: Twin) {
            let out = Twin(bytes: dOut.count * 4, .float32), l = Twin(bytes: s.batch * s.queries * 4, .float32)
            gpu.attentionForwardLSE(q: tq[1], k: tk[1], v: tv[1], out: out[1], lse: lse ? l[1] : nil, shape: s, scale: scale,
                                    precision: p)
            return (out, l)
        }
        let (out, lse) = forward(.bfloat16)
        let gotOut = out.read(1, Float.self)
        Self.within(gotOut, ref.out, ref.eOut, "bf16 flash out \(s)")
        Self.within(lse.read(1, Float.self), ref.lse, ref.eLSE, "bf16 flash lse \(s)")
        CUDAKernelsBTests.Check.bitwise(forward(.bfloat16, lse: false).out.read(1, Float.self), gotOut, "bf16 out without lse")
        // The float32 kernels on the same carriers keep P in float32: another result, so the bf16 kernels ran; fp16
        // carriers keep the float32 kernels (the same computation, bit for bit).
        let out32 = forward(.float32).out.read(1, Float.self)
        #expect(out32 != gotOut, "bf16 and float32 flash kernels agree bit for bit: the bf16 path did not run")
        CUDAKernelsBTests.Check.bitwise(forward(.float16).out.read(1, Float.self), out32, "fp16 carriers take the float32 kernels")

        for (wq, wk, wv) in [(true, true, true), (true, false, false), (false, true, false), (false, false, true)] {
            let nan = { (n: Int) in Twin([Float](repeating: .nan, count: n)) }
            let dq = nan(q.count), dk = nan(k.count), dv = nan(v.count)
            gpu.attentionBackwardLSE(q: tq[1], k: tk[1], v: tv[1], out: out[1], lse: lse[1], dOut: tdo[1],
                                     dq: wq ? dq[1] : nil, dk: wk ? dk[1] : nil, dv: wv ? dv[1] : nil, shape: s, scale: scale,
                                     precision: .bfloat16)
            for (wanted, twin, want, bound, name) in [(wq, dq, ref.dq, ref.eDQ, "dq"), (wk, dk, ref.dk, ref.eDK, "dk"),
                                                      (wv, dv, ref.dv, ref.eDV, "dv")] {
                let got = twin.read(1, Float.self)
                if wanted {
                    Self.within(got, want, bound, "bf16 flash \(name) \(s)")
                } else {
                    #expect(got.allSatisfy { $0.isNaN }, "bf16 flash \(name) not wanted, not written")
                }
            }
            if wq && wk && wv {   // deterministic: a second run is bit-identical
                let dq2 = nan(q.count), dk2 = nan(k.count), dv2 = nan(v.count)
                gpu.attentionBackwardLSE(q: tq[1], k: tk[1], v: tv[1], out: out[1], lse: lse[1], dOut: tdo[1],
                                         dq: dq2[1], dk: dk2[1], dv: dv2[1], shape: s, scale: scale, precision: .bfloat16)
                for (a, b) in [(dq, dq2), (dk, dk2), (dv, dv2)] {
                    CUDAKernelsBTests.Check.bitwise(b.read(1, Float.self), a.read(1, Float.self), "bf16 flash rerun")
                }
            }
        }
    }

    /// Empty axes as `attentionForwardLSE` documents them: Tk = 0 gives out = 0, lse = −∞, dq = 0; Tq = 0 gives
    /// dk = dv = 0 (outputs start as NaN, so every element must be written).
    @Test func emptyKeysOrQueries() {
        for s in [AttentionShape(batch: 2, queries: 5, keys: 0, headDim: 8, valueDim: 3),
                  AttentionShape(batch: 2, queries: 0, keys: 7, headDim: 4, valueDim: 6)] {
            var rng = SplitMix64(seed: 5)
            let q = rng.floats(s.batch * s.queries * s.headDim), k = rng.floats(s.batch * s.keys * s.headDim)
            let v = rng.floats(s.batch * s.keys * s.valueDim), dOut = rng.floats(s.batch * s.queries * s.valueDim)
            let nan = { (n: Int) in Twin([Float](repeating: .nan, count: n)) }
            let out = nan(dOut.count), lse = nan(s.batch * s.queries), dq = nan(q.count), dk = nan(k.count), dv = nan(v.count)
            let gpu = EmulatedCUDA.backend
            gpu.attentionForwardLSE(q: Twin(q)[1], k: Twin(k)[1], v: Twin(v)[1], out: out[1], lse: lse[1], shape: s, scale: 0.5,
                                    precision: .bfloat16)
            gpu.attentionBackwardLSE(q: Twin(q)[1], k: Twin(k)[1], v: Twin(v)[1], out: out[1], lse: lse[1], dOut: Twin(dOut)[1],
                                     dq: dq[1], dk: dk[1], dv: dv[1], shape: s, scale: 0.5, precision: .bfloat16)
            for (twin, name) in [(out, "out"), (dq, "dq"), (dk, "dk"), (dv, "dv")] {
                #expect(twin.read(1, Float.self).allSatisfy { $0 == 0 }, "\(name) \(s)")
            }
            #expect(lse.read(1, Float.self).allSatisfy { $0 == -.infinity }, "lse \(s)")
        }
    }

    /// `scaledDotProductAttention` under `Autocast.run(.bfloat16)` on the emulated device (the tensor-core kernels)
    /// against the same op on the CPU, forward and the q, k, v gradients, within 2E + u_b·(2|x| + 2E).
    /// (N·H heads, H): 2 × 2 heads of SiT-XL/2's 72 over 2 tiles each way; 1 × 3 heads with Tq ≠ Tk and Dh ≠ Dv.
    @Test(arguments: zip([AttentionShape(batch: 4, queries: 67, keys: 67, headDim: 72, valueDim: 72),
                          AttentionShape(batch: 3, queries: 33, keys: 70, headDim: 64, valueDim: 40)], [2, 3]))
    func autocastAttentionMatchesTheCPU(s: AttentionShape, h: Int) {
        let (n, tq, tk, dh, dv) = (s.batch / h, s.queries, s.keys, s.headDim, s.valueDim)
        var rng = SplitMix64(seed: UInt64(800 + tq + dv))
        let q = rng.floats(n * h * tq * dh), k = rng.floats(n * h * tk * dh), v = rng.floats(n * h * tk * dv)
        let dy = rng.floats(n * h * tq * dv)
        let shapes = [[n, h, tq, dh], [n, h, tk, dh], [n, h, tk, dv]]
        func run(_ device: Device) -> [[Float]] {
            let leaves = zip([q, k, v], shapes).map { Tensor($0, shape: $1).to(device) }
            for x in leaves { x.requiresGrad = true }
            let y = Autocast.run(.bfloat16) { Tensor.scaledDotProductAttention(leaves[0], leaves[1], leaves[2]) }
            y.backward(Tensor(dy, shape: [n, h, tq, dv]).to(device))
            return [y.to(.cpu).scalars(as: Float.self)] + leaves.map { $0.grad!.to(.cpu).scalars(as: Float.self) }
        }
        let gpu = run(EmulatedCUDA.device), cpu = run(.cpu)
        let ref = Reference(s, scale: 1 / Double(dh).squareRoot(), q: Self.carriers(q), k: Self.carriers(k),
                            v: Self.carriers(v), dOut: Self.carriers(dy))
        let ub = Self.ub
        for (i, (exact, e, name)) in [(ref.out, ref.eOut, "out"), (ref.dq, ref.eDQ, "dq"), (ref.dk, ref.eDK, "dk"),
                                      (ref.dv, ref.eDV, "dv")].enumerated() {
            let bound = zip(exact, e).map { 2 * $1 + ub * (2 * Swift.abs($0) + 2 * $1) }
            Self.within(gpu[i], cpu[i].map(Double.init), bound, "autocast bf16 \(name) \(s)")
        }
    }
}
