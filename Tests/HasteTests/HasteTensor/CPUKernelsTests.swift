import Foundation
import Testing
@testable import HasteTensor

/// CKernels' AdamW (every variant this CPU can run) gives exactly the portable Swift loop's bits, with and
/// without weight decay, both lerp branches, over several steps, on a count that leaves vector tails; values
/// span tiny to large gradients, zeros and a negative zero.
@Test func vectorAdamWMatchesThePortableLoopBitForBit() {
    let n = 16 * 37 + 11
    let levels = [1, 2].filter { $0 <= CPUKernels.level }
    #if arch(x86_64)
    #expect(!levels.isEmpty, "every x86-64 machine of this kind has AVX2 and FMA")
    #endif
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
