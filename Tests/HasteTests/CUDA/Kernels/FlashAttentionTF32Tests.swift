import Foundation
import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The TF32 flash forward (CUDAFlashAttentionTF32.swift: float32 attention without a gradient where the device
/// allows TF32) on the emulated device: against the float64 oracle on TF32-rounded inputs, bit for bit against
/// its own arithmetic on a case where every rounding shows, and which calls take it.
@Suite(.serialized) struct FlashAttentionTF32Tests {
    typealias Twin = CUDAKernelsBTests.Twin

    /// float → tf32 as `cvt.rna.tf32.f32`: to nearest, ties away from zero.
    static func tf32(_ x: Float) -> Float {
        let u = x.bitPattern
        if u & 0x7f80_0000 == 0x7f80_0000 { return x }
        return Float(bitPattern: (u &+ 0x1000) & 0xffff_e000)
    }

    static func forward(_ s: AttentionShape, scale: Double, _ q: Twin, _ k: Twin, _ v: Twin, tf32: Bool,
                        lse: Bool = false) -> [Float] {
        let out = Twin(bytes: s.batch * s.queries * s.valueDim * 4, .float32)
        let l = lse ? Twin(bytes: s.batch * s.queries * 4, .float32) : nil
        EmulatedDriver.$allowsTF32.withValue(tf32) {
            EmulatedCUDA.backend.attentionForwardLSE(q: q[1], k: k[1], v: v[1], out: out[1], lse: l?[1], shape: s, scale: scale)
        }
        return out.read(1, Float.self)
    }

    /// FlashAttentionTests' shapes — several key tiles and Dh 72 (SiT-XL/2: the `_d72` entry point), Tq = 1 with
    /// odd widths (`_d128g`, scalar loads), Dh ≠ Dv over several query tiles (`_d128g`), Dh 64 with a 65th query
    /// row (`_d64`) — and Dh 68 padded to 72 (zero columns). Bound: the float32 kernel's on the same rounded inputs (FlashAttentionTests'
    /// oracle) plus P's rounding to TF32, 2⁻¹¹ of Σ P·|v| / Σ P ≤ max |v| ≤ 1. A wrong fragment index or a
    /// dropped tile is off by ≫ 1e-3; the float32 kernel's result on the unrounded inputs differs from this one.
    @Test(arguments: FlashAttentionTests.oracleShapes + [AttentionShape(batch: 1, queries: 70, keys: 100, headDim: 68, valueDim: 68)])
    func tf32ForwardMatchesTheOracleOnRoundedInputs(s: AttentionShape) {
        var rng = CUDAKernelsBTests.TestRNG(seed: 700 + UInt64(s.keys + s.headDim))
        let scale = 1 / Double(s.headDim).squareRoot()
        let q = rng.floats(s.batch * s.queries * s.headDim), k = rng.floats(s.batch * s.keys * s.headDim)
        let v = rng.floats(s.batch * s.keys * s.valueDim), dOut = rng.floats(s.batch * s.queries * s.valueDim)
        let ref = FlashAttentionTests.Reference(s, scale: scale, q: q.map(Self.tf32), k: k.map(Self.tf32),
                                                v: v.map(Self.tf32), dOut: dOut)
        let tq = Twin(q), tk = Twin(k), tv = Twin(v)
        let got = Self.forward(s, scale: scale, tq, tk, tv, tf32: true)
        FlashAttentionTests.within(got, ref.out, ref.out.map { _ in ref.boundOut + 0x1p-11 }, "tf32 out \(s)")
        let f32 = Self.forward(s, scale: scale, tq, tk, tv, tf32: false)
        #expect(got != f32, "\(s): the TF32 kernel ran (its result differs from the float32 kernel's)")
        // A call that keeps the log-sum-exp (a gradient follows) runs the float32 kernel even with TF32 allowed.
        CUDAKernelsBTests.Check.bitwise(Self.forward(s, scale: scale, tq, tk, tv, tf32: true, lse: true), f32, "with lse: float32")
        CUDABackend.$flashTF32Allowed.withValue(false) {
            CUDAKernelsBTests.Check.bitwise(Self.forward(s, scale: scale, tq, tk, tv, tf32: true), f32, "HASTE_FLASH_TF32=0: float32")
        }
    }

    /// Every TF32 rounding moves this result: q = ±(1 + 2⁻¹¹, −1) holds a tie (away from zero: 1 + 2⁻¹⁰; truncation
    /// or ties-to-even give 1), so with keys (1, 1) and (0, 0) in turn S = ±2⁻¹⁰ or 0 (float32: ±2⁻¹¹), and with
    /// scale 1024 the weights are e : 1 (e^½ : 1); the smaller P = e⁻¹ lands on even keys in even rows and on odd
    /// keys in odd rows (each of a thread's four P fragments), and v's ties are rounded too. The expected bits
    /// follow the kernel's operations in order: S over d, m′ = sl·max S, P = exp2(fma(sl, S, −m′)) (the emulator's
    /// exp2f; on a GPU ex2.approx may differ in the last bits), l = (l₀ + l₁) + (l₂ + l₃) with l_t = P(2t) + P(2t + 1), O over
    /// the keys in the fragment order 0, 2, 4, 6, 1, 3, 5, 7, then O·(1/l).
    @Test func everyOperandIsRoundedToNearestTiesAway() {
        let (tq, tk) = (16, 8)
        let s = AttentionShape(batch: 1, queries: tq, keys: tk, headDim: 2, valueDim: 2)
        let q: [Float] = (0..<tq).flatMap { i -> [Float] in i % 2 == 0 ? [1 + 0x1p-11, -1] : [-(1 + 0x1p-11), 1] }
        let k: [Float] = (0..<tk).flatMap { j -> [Float] in j % 2 == 0 ? [0, 0] : [1, 1] }
        let v: [Float] = (0..<tk).flatMap { j -> [Float] in [1 + Float(j) * 0x1p-5 + 0x1p-11, -(1 + Float(j) * 0x1p-5 + 0x1p-11)] }
        let scale = 1024.0
        let got = Self.forward(s, scale: scale, Twin(q), Twin(k), Twin(v), tf32: true)
        let r = { (x: Float) in Self.tf32(x) }
        let sl = Float(scale) * Float(1.4426950408889634)
        var want = [Float]()
        for i in 0..<tq {
            let x = (0..<tk).map { j in (Float(0) + r(q[2 * i]) * r(k[2 * j])) + r(q[2 * i + 1]) * r(k[2 * j + 1]) }
            let m = sl * x.max()!, p = x.map { exp2f((-m).addingProduct(sl, $0)) }
            let l = (0..<4).map { p[2 * $0] + p[2 * $0 + 1] }, inv = 1 / ((l[0] + l[1]) + (l[2] + l[3]))
            for e in 0..<2 {
                let o = [0, 2, 4, 6, 1, 3, 5, 7].reduce(Float(0)) { $0 + r(p[$1]) * r(v[2 * $1 + e]) }
                want.append(o * inv)
            }
            #expect(Set(p) == [1, exp2f(-sl * 0x1p-10)] && (p[0] == 1) == (i % 2 == 1), "row \(i): weights e⁻¹ and 1")
        }
        #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "tf32 \(got) vs \(want)")
        let f32 = Self.forward(s, scale: scale, Twin(q), Twin(k), Twin(v), tf32: false)
        #expect(zip(f32, want).allSatisfy { Swift.abs($0 - $1) > 1e-3 }, "float32 (weights e^½ : 1) differs: \(f32)")
    }

    /// SiT's and DINOv2's attention straight from qkv (`Tensor.packedQKVAttention`) on CUDA with TF32: q, k, v read
    /// inside qkv [N, T, 3·D], the heads written merged into [N, T, D], the bits of the split path (heads copied out,
    /// the same kernel, the output merged by a copy); Dh 72 (`_d72`, 16-byte loads) and Dh 6 (`_d128g`, scalar
    /// loads: rows of 3·12 floats). Not taken with a gradient, with logits, or with TF32 off.
    @Test(arguments: [(2, 70, 2, 72), (3, 9, 2, 6)])
    func packedQKVAttentionReadsTheHeadsInPlace(n: Int, t: Int, h: Int, dh: Int) {
        var rng = CUDAKernelsBTests.TestRNG(seed: 77)
        let d = h * dh
        let qkv = Tensor(rng.floats(n * t * 3 * d)).reshaped([n, t, 3 * d]).to(EmulatedCUDA.device)
        EmulatedDriver.$allowsTF32.withValue(true) {
            let packed = noGrad { Tensor.packedQKVAttention(qkv, heads: h, logits: false) }
            #expect(packed != nil && packed?.logits == nil)
            let (q, k, v) = qkv.splitHeads(h)
            let split = noGrad { Tensor.scaledDotProductAttention(q, k, v).transposed(1, 2).reshaped([n, t, d]) }
            if let packed {
                CUDAKernelsBTests.Check.bitwise(packed.output.to(.cpu).scalars(as: Float.self), split.to(.cpu).scalars(as: Float.self),
                                                "packed vs split, Dh \(dh)")
            }
            #expect(noGrad { Tensor.packedQKVAttention(qkv, heads: h, logits: true) } == nil, "logits: the split path")
            let tracked = qkv.detached()
            tracked.requiresGrad = true
            #expect(Tensor.packedQKVAttention(tracked, heads: h, logits: false) == nil, "a gradient: the split path")
        }
        #expect(noGrad { Tensor.packedQKVAttention(qkv, heads: h, logits: false) } == nil, "TF32 off: the split path")
    }

    /// Which kernel a call takes, from the host's choices (host-only device with TF32 allowed): SiT-XL/2's head
    /// (Dh 72) the `_d72` entry point with 64-row tiles and 2 × 64 × 76 floats of shared memory; a call with a
    /// log-sum-exp, TF32 off and Dh > 128 never.
    @Test func callsWithoutAGradientTakeTheTF32Kernel() {
        let driver = HostOnlyDriver(), be = CUDABackend(driver: driver, device: .cuda(12))
        Backends.register(be, for: .cuda(12))
        let dev = Device.cuda(12)
        let (n, h, t) = (2, 16, 256)
        let s = AttentionShape(batch: n * h, queries: t, keys: t, headDim: 72, valueDim: 72)
        let x = Tensor.empty([n * h, t, 72], dtype: .float32, device: dev), o = Tensor.empty([n * h, t, 72], dtype: .float32, device: dev)
        let lse = Tensor.empty([n * h, t], dtype: .float32, device: dev)
        be.attentionForwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: nil, shape: s, scale: 0.1)
        #expect(driver.lastLaunch["attention_flash_tf32_forward_d72"] == nil, "TF32 not allowed: float32 kernel")
        driver.allowTF32 = true
        be.attentionForwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: lse.buffer, shape: s, scale: 0.1)
        #expect(driver.lastLaunch["attention_flash_tf32_forward_d72"] == nil, "with lse: float32 kernel")
        be.attentionForwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: nil, shape: s, scale: 0.1)
        let launch = driver.lastLaunch["attention_flash_tf32_forward_d72"]
        #expect(launch?.grid == Dim3(t / 64, n * h) && launch?.sharedBytes == 2 * 64 * 76 * 4, "\(String(describing: launch))")
        let counts = driver.launches["attention_flash_tf32_forward_d72"]
        CUDABackend.$flashTF32Allowed.withValue(false) {
            be.attentionForwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: nil, shape: s, scale: 0.1)
        }
        #expect(driver.launches["attention_flash_tf32_forward_d72"] == counts, "HASTE_FLASH_TF32=0")
        // No keys: the float32 kernel (out = 0), not a 0/0 from the TF32 one.
        let empty = AttentionShape(batch: 2, queries: 5, keys: 0, headDim: 8, valueDim: 3)
        let zeros = Self.forward(empty, scale: 0.5, Twin([Float](repeating: 1, count: 80)), Twin([Float]()), Twin([Float]()), tf32: true)
        #expect(zeros == [Float](repeating: 0, count: 30), "Tk = 0: \(zeros)")
        #expect(CUDABackend.flashTF32Variant(AttentionShape(batch: 1, queries: 1, keys: 1, headDim: 60, valueDim: 64)) == "d64")
        #expect(CUDABackend.flashTF32Variant(AttentionShape(batch: 1, queries: 1, keys: 1, headDim: 72, valueDim: 64)) == "d128g")
        #expect(CUDABackend.flashTF32Variant(AttentionShape(batch: 1, queries: 1, keys: 1, headDim: 112, valueDim: 112)) == "d128g")
    }
}
