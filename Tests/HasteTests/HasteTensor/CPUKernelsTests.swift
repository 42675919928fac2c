import CKernels
import Foundation
import Testing
@testable import HasteTensor

/// The CKernels variants this CPU can run (1: AVX2+FMA, 2: AVX-512F); every x86-64 machine of this kind has one.
func vectorLevels() -> [Int] {
    let levels = [1, 2].filter { $0 <= CPUKernels.level }
    #if arch(x86_64)
    #expect(!levels.isEmpty, "every x86-64 machine of this kind has AVX2 and FMA")
    #endif
    return levels
}

/// CKernels' AdamW (every variant this CPU can run) gives exactly the portable Swift loop's bits, with and
/// without weight decay, both lerp branches, over several steps, on a count that leaves vector tails; values
/// span tiny to large gradients, zeros and a negative zero.
@Test func vectorAdamWMatchesThePortableLoopBitForBit() {
    let n = 16 * 37 + 11
    let levels = vectorLevels()
    for level in levels {
        for (beta1, wd) in [(0.9, 0.0), (0.9, 0.05), (0.3, 0.01)] {    // beta1 0.3: lerp weight 0.7 (the other branch)
            var state: [[UInt32]] = []
            for _ in 0..<2 {                                                // portable, then vector
                var p = (0..<n).map { Float(sin(Double($0) * 0.37)) }, m = [Float](repeating: 0, count: n)
                var v = [Float](repeating: 0, count: n)
                for step in 1...4 {
                    var g = (0..<n).map { i in Float(cos(Double(i * step) * 0.11)) * Float(pow(10, Double(i % 9) - 6)) }
                    g[3] = 0; g[4] = -0.0
                    let c = AdamWCoefficients(lr: 1e-3, beta1: beta1, beta2: 0.999, eps: 1e-8, weightDecay: wd, step: step)
                    p.withUnsafeMutableBufferPointer { pp in g.withUnsafeMutableBufferPointer { gp in
                        m.withUnsafeMutableBufferPointer { mp in v.withUnsafeMutableBufferPointer { vp in
                            if state.isEmpty {
                                CPUBackend.shared.adamw(pp.baseAddress!, gp.baseAddress!, mp.baseAddress!, vp.baseAddress!, n, c)
                            } else {
                                CPUBackend.shared.adamwVector(pp.baseAddress!, gp.baseAddress!, mp.baseAddress!, vp.baseAddress!, n, c, level: level)
                            }
                        } }
                    } }
                }
                state.append(p.map(\.bitPattern) + m.map(\.bitPattern) + v.map(\.bitPattern))
                if state.count == 2 {
                    let (a, b) = (state[0], state[1])
                    #expect(a == b, "level \(level), beta1 \(beta1), wd \(wd): \(zip(a, b).filter { $0 != $1 }.count) of \(a.count) differ")
                }
            }
        }
    }
}

/// CKernels' GELU and SiLU activations (every variant this CPU can run) give exactly the Swift SIMD16 forms' bits:
/// GeluF, GeluTanhF and SiluF `vf` forward and `dy·vdf` backward, alone and with a bias (the fused bias + GELU rows) and a dbias
/// partial; inputs span tiny to saturating values of both signs, ±0, ±∞, NaN and the erf branch switch. Counts that
/// leave a tail: the kernels do whole 16-lane groups only and say how many.
@Test func vectorActivationsMatchTheSwiftLanesBitForBit() {
    let n = 16 * 41 + 7
    let levels = vectorLevels()
    var x = (0..<n).map { i in Float(sin(Double(i) * 0.731) * pow(10, Double(i % 7) - 3)) * 4 }
    let special: [Float] = [0, -0.0, .infinity, -.infinity, .nan, 0.927_734_375, -0.927_734_375, (0.927_734_375 as Float).nextUp,
                            1e-30, -1e-30, Float.leastNormalMagnitude / 64, 9, -9, 20, -20, 88, -88, 200, -200, 3.92, -3.92, 1.3e-3]
    for (i, v) in special.enumerated() { x[3 * i] = v }
    let bias = (0..<n).map { i in Float(cos(Double(i) * 0.29)) * 0.5 }
    let dy = (0..<n).map { i in Float(sin(Double(i) * 1.7 + 0.3)) }
    let differing = { (a: [Float], b: [Float]) -> Int in zip(a, b).filter { !($0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN)) }.count }
    func lanes(_ v: [Float], _ i: Int) -> FVec { var r = FVec(); for l in 0..<16 { r[l] = v[i + l] }; return r }
    let forms: [(Int32, (FVec) -> FVec, (FVec) -> FVec)] = [
        (HASTE_ACT_GELU, { GeluF().vf($0) }, { GeluF().vdf($0, $0) }),
        (HASTE_ACT_GELU_TANH, { GeluTanhF().vf($0) }, { GeluTanhF().vdf($0, $0) }),
        (HASTE_ACT_SILU, { SiluF().vf($0) }, { SiluF().vdf($0, $0) }),
    ]
    for (act, fn, dfn) in forms {
        for withBias in [false, true] {
            let whole = n / 16 * 16
            var yRef = [Float](repeating: 0, count: whole), dRef = yRef, partRef = bias
            for i in stride(from: 0, to: whole, by: 16) {
                let u = withBias ? lanes(x, i) + lanes(bias, i) : lanes(x, i)
                let y = fn(u), d = lanes(dy, i) * dfn(u)
                for l in 0..<16 { yRef[i + l] = y[l]; dRef[i + l] = d[l]; partRef[i + l] += d[l] }
            }
            for level in levels {
                var y = [Float](repeating: 7, count: n), d = y, part = bias
                let done = bias.withUnsafeBufferPointer { b in
                    haste_act_forward_f32(Int32(level), act, x, withBias ? b.baseAddress : nil, &y, n)
                }
                let doneBack = bias.withUnsafeBufferPointer { b in part.withUnsafeMutableBufferPointer { p in
                    haste_act_backward_f32(Int32(level), act, x, withBias ? b.baseAddress : nil, dy, &d,
                                           withBias ? p.baseAddress : nil, n)
                } }
                #expect(done == whole && doneBack == whole)
                #expect(y[whole...].allSatisfy { $0 == 7 } && d[whole...].allSatisfy { $0 == 7 }, "the tail is the caller's")
                let what = "act \(act) level \(level) bias \(withBias)"
                #expect(differing(Array(y[..<whole]), yRef) == 0, "\(what): forward differs")
                #expect(differing(Array(d[..<whole]), dRef) == 0, "\(what): backward differs")
                if withBias { #expect(differing(part, partRef) == 0, "\(what): dbias partial differs") }
            }
        }
    }
}

/// CKernels' softmax exponentials (every variant this CPU can run) give exactly the Swift loop's lanes: e = exp16(x − m)
/// stored and the 16 lane sums, the last block padded with −∞, for row lengths around the 16- and 64-element blocks
/// (none to four 16-lane blocks after the 64-element ones), with −∞, NaN,
/// huge and tiny entries and a −∞ maximum (an all-masked row).
@Test func vectorSoftmaxExponentialsMatchTheSwiftLanesBitForBit() {
    let levels = vectorLevels()
    for n in [1, 7, 15, 16, 17, 31, 64, 100, 127, 257] {
        var x = (0..<n).map { i in Float(sin(Double(i) * 0.77) * 12) }
        if n > 5 { x[2] = -.infinity; x[4] = 90; x[5] = -1e30 }
        if n > 20 { x[17] = .nan }
        for m: Float in [x.max() ?? 0, 3, -Float.infinity] {
            var outRef = [Float](repeating: 0, count: n), accRef = SIMD16<Float>()
            var i = 0
            while i + 16 <= n {
                var v = SIMD16<Float>(); for l in 0..<16 { v[l] = x[i + l] }
                let e = Float.exp16(v - SIMD16(repeating: m))
                for l in 0..<16 { outRef[i + l] = e[l] }
                accRef += e; i += 16
            }
            if i < n {
                var v = SIMD16<Float>(repeating: -.infinity); for l in 0..<(n - i) { v[l] = x[i + l] }
                let e = Float.exp16(v - SIMD16(repeating: m))
                for l in 0..<(n - i) { outRef[i + l] = e[l] }
                accRef += e
            }
            for level in levels {
                var out = [Float](repeating: 7, count: n), acc = [Float](repeating: 0, count: 16)
                haste_sum_exp_shifted_f32(Int32(level), x, n, m, &out, &acc)
                let bits = { (a: Float, b: Float) in a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }
                #expect(zip(out, outRef).allSatisfy(bits), "n \(n) m \(m) level \(level): e differs")
                #expect((0..<16).allSatisfy { bits(acc[$0], accRef[$0]) }, "n \(n) m \(m) level \(level): lane sums differ")
            }
        }
    }
}

/// CKernels' sum of squares (the gradient norm of clipping; every variant this CPU can run) gives exactly the Swift
/// loop's double (`blockedSquares`): lengths inside one 1024-element block, across several with vector and scalar
/// tails, values from 1e-20 to 1e6 with zeros and a negative zero.
@Test func vectorSumOfSquaresMatchesThePortableLoopBitForBit() {
    var x = (0..<5000).map { i in Float(sin(Double(i) * 0.713)) * Float(pow(10, Double(i % 27) - 20)) }
    x[5] = 0; x[6] = -0.0; x[7] = 1e6
    for level in vectorLevels() {
        for n in [0, 1, 15, 16, 17, 1023, 1024, 1040, 3000, 5000] {
            x.withUnsafeMutableBufferPointer { p in
                let swift = blockedSquares(p.baseAddress!, n), vector = haste_sum_squares_f32(Int32(level), p.baseAddress!, n)
                #expect(swift.bitPattern == vector.bitPattern, "level \(level), \(n) elements: \(swift) vs \(vector)")
            }
        }
    }
}

/// A CPU kernel handed a buffer of another element width than it computes in stops with the dtypes named
/// (`Buffer.pointer`), instead of reading or writing twice the buffer's bytes: axpy over float32 with a bf16 x.
@Test func aKernelRefusesABufferOfAnotherWidth() async {
    let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        let x = Tensor.zeros([8], dtype: .bfloat16), y = Tensor.zeros([8])
        CPUBackend.shared.axpy(alpha: 1, x: x.buffer, y: y.buffer, count: 8)
    }
    #expect(trapMessage(result).contains("a bfloat16 buffer taken as Float (4-byte elements, the buffer's are 2)"), "\(trapMessage(result))")
}
