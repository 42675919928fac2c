/// Vectorised float32 transcendental functions, one home for every kernel that needs them (softmax,
/// cross-entropy, attention, the activations). libm's scalar expf/tanhf do not vectorise (measured: geluTanh
/// 11× slower than PyTorch's Sleef path).
typealias FVec = SIMD16<Float>

/// Kernel floats with a 16-lane exp. Float's is vectorised (libm's expf is a call per element, ~3× slower
/// here); Double's (gradchecks only) calls libm per lane.
protocol SoftmaxExp: KernelFloat, Codable {   // Codable only silences a warning inherited from KernelFloat
    static func exp16(_ x: SIMD16<Self>) -> SIMD16<Self>
}

extension Double: SoftmaxExp {
    @inline(__always) static func exp16(_ x: SIMD16<Double>) -> SIMD16<Double> {
        var y = x
        for l in 0..<16 { y[l] = .exp(x[l]) }
        return y
    }
}

extension Float: SoftmaxExp {
    /// Cephes expf in 16 lanes: x = n·ln2 + r (|r| ≤ ln2/2, ln2 split so n·ln2hi is exact), e^r by a
    /// degree-6 polynomial, 2^n written into the exponent bits. Max error 0.9 ulp on [−87.3, 88.3] (libm:
    /// 0.5); 0 below −87.34 (true values there are subnormal, < 1.2e−38), +∞ above 88.37, NaN kept.
    /// Concrete-type mask operations (not the generic ones) so that they compile to packed compares.
    @inline(__always) static func exp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
        let lo: Float = -87.336_54, hi: Float = 88.37
        var xc = x
        xc.replace(with: lo, where: x .< lo)
        xc.replace(with: hi, where: x .> hi)
        let magic = SIMD16<Float>(repeating: 12_582_912)          // 1.5·2²³: adding it rounds to an integer
        let t = xc * 1.442_695_04 + magic
        let n = t - magic
        let r = xc - n * 0.693_359_375 - n * -2.121_944_4e-4
        var p = r * 1.987_569_15e-4 + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        p = p * (r * r) + r + 1
        let bits = (unsafeBitCast(t, to: SIMD16<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23   // n + bias → exponent
        var y = p * unsafeBitCast(bits, to: SIMD16<Float>.self)
        y.replace(with: 0, where: x .< lo)
        y.replace(with: .infinity, where: x .> hi)
        y.replace(with: x, where: x .!= x)
        return y
    }
}

/// e^x in 16 float32 lanes (`Float.exp16`).
@inline(__always) func vexp(_ x: FVec) -> FVec { Float.exp16(x) }

/// tanh through e^{2x}: 1 − 2/(e^{2x} + 1); saturates to ±1 (e^{2x} = ∞ or 0), NaN kept.
@inline(__always) func vtanh(_ x: FVec) -> FVec { 1 - 2 / (vexp(2 * x) + 1) }

/// erf in 16 float32 lanes (N. Juffa's minimax erff): |x| ≤ 0.927734375: x + x·P(x²); beyond: 1 − e^{Q(|x|)}
/// with the sign of x. Unfused multiply-adds and `vexp` (Swift has no per-function FMA, STYLE §4.10): max error
/// 1.17 ulp against float64 erf over every 7th float32 in [−10, 10] (libm's erff: 0.90), checked by
/// `vectorErfIsAccurate`. ±1 beyond ±3.92, ±∞ → ±1, NaN kept. PyTorch's CPU GELU uses Abramowitz–Stegun 7.1.26
/// instead (1.5e−7 absolute error: ~1 ulp near 1, far more near 0).
@inline(__always) func verf(_ x: FVec) -> FVec {
    let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
    let t = unsafeBitCast(bits & 0x7FFF_FFFF, to: FVec.self), s = x * x
    var r: FVec = t * -1.728_534_70e-5 + 3.831_971_26e-4
    let u: FVec = t * -3.883_964_38e-3 + 2.425_462_19e-2
    r = r * s + u
    r = r * t + -1.067_778_77e-1
    r = r * t + -6.348_466_87e-1
    r = r * t + -1.287_175_12e-1
    r = r * t - t
    let tail = 1 - vexp(r)
    let big = unsafeBitCast(unsafeBitCast(tail, to: SIMD16<UInt32>.self) | (bits & 0x8000_0000), to: FVec.self)
    var q: FVec = s * -5.967_617_03e-4 + 4.991_194_23e-3
    q = q * s + -2.676_813_49e-2
    q = q * s + 1.128_199_25e-1
    q = q * s + -3.761_253_36e-1
    q = q * s + 1.283_791_66e-1
    q = q * x + x
    q.replace(with: big, where: t .> 0.927_734_375)
    return q
}

/// σ(x) = 1/(1 + e^{−x}).
@inline(__always) func vsigmoid(_ x: FVec) -> FVec { 1 / (1 + vexp(-x)) }
