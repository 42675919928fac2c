import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// Test support of the kernB kernel tests, nested so nothing collides with other suites.
extension CUDAKernelsBTests {
    /// First-order bounds on |gpu − cpu| for attention with q, k, v, dOut in [−1, 1) (softmaxMatmul: logits given):
    /// logits differ by eL (a Dh-term dot product, or none), probabilities relatively by 2eL plus the Tk-term
    /// normaliser and the exp (each side within 2 ulp), and each product adds its own sum's rounding (2(n + 1)·u·
    /// Σ|terms|), with |P| ≤ 1, Σ_k P = 1, |dP| ≤ Dv and |dS| ≤ 2·Dv·P (so Σ_k |dS| ≤ 2·Dv).
    struct AttentionBounds {
        let probs: Double, out: Double, dv: Double, dScores: Double, dq: Double, dk: Double
        init(_ s: AttentionShape, scale: Double, logitMagnitude: Double? = nil, logitTerms: Int? = nil) {
            let u = Check.u
            let tq = Double(s.queries), tk = Double(s.keys), dh = Double(logitTerms ?? s.headDim), dvd = Double(s.valueDim)
            let lMag = logitMagnitude ?? scale * Double(s.headDim)
            let eL = dh == 0 ? 0 : 2 * (dh + 1) * u * lMag + 2 * u * lMag   // the dot product, and the scale's rounding
            let eP = 2 * eL + 2 * (tk + 4) * u + 4 * u              // relative to p, so absolute too (p ≤ 1)
            probs = eP
            out = eP + 2 * (tk + 1) * u
            // The backward runs from the same (CPU) probabilities on both sides.
            dv = 2 * (tq + 1) * u * tq
            let eDP = 2 * (dvd + 1) * u * dvd
            let eSum = eDP + 2 * (tk + 1) * u * dvd
            dScores = eDP + eSum + 8 * u * dvd
            dq = scale * (tk * dScores + 2 * (tk + 2) * u * 2 * dvd)
            dk = scale * (tq * dScores + 2 * (tq + 2) * u * 2 * dvd * tq)
        }
    }

    typealias TestRNG = SplitMix64

    /// The same bytes on the CPU (index 0) and on the emulated CUDA device (index 1).
    struct Twin {
        let buffers: [Buffer]
        let byteCount: Int
        subscript(side: Int) -> Buffer { buffers[side] }

        init<T>(_ values: [T], _ dtype: DType = .float32) {
            byteCount = values.count * MemoryLayout<T>.stride
            buffers = [Device.cpu, EmulatedCUDA.device].map { device in
                let b = Buffer(storage: Storage(byteCount: values.count * MemoryLayout<T>.stride, device: device), offset: 0, dtype: dtype)
                values.withUnsafeBytes { raw in
                    if let base = raw.baseAddress { device.backend.copyFromHost(base, to: b, byteCount: raw.count) }
                }
                return b
            }
        }

        /// Uninitialised on both sides (every element is written by the kernels under test).
        init(bytes: Int, _ dtype: DType) {
            byteCount = bytes
            buffers = [Device.cpu, EmulatedCUDA.device].map {
                Buffer(storage: Storage(byteCount: bytes, device: $0), offset: 0, dtype: dtype)
            }
        }

        func read<T>(_ side: Int, _: T.Type) -> [T] {
            let n = byteCount / MemoryLayout<T>.stride, b = buffers[side]
            return [T](unsafeUninitializedCapacity: n) { p, count in
                if n > 0 { b.storage.backend.copyToHost(b, UnsafeMutableRawPointer(p.baseAddress!), byteCount: n * MemoryLayout<T>.stride) }
                count = n
            }
        }

        /// (cpu, gpu) as float32.
        func floats() -> ([Float], [Float]) { (read(0, Float.self), read(1, Float.self)) }
        func bytes() -> ([UInt8], [UInt8]) { (read(0, UInt8.self), read(1, UInt8.self)) }
    }

    /// Comparisons of a device result with the CPU's.
    enum Check {
        /// float32's unit roundoff, 2⁻²⁴.
        static let u = Double(Float.ulpOfOne) / 2

        /// Bit for bit, NaN matching NaN.
        static func bitwise(_ got: [Float], _ want: [Float], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(got.count == want.count, "\(what): \(got.count) vs \(want.count) elements", sourceLocation: sourceLocation)
            let bad = zip(got, want).enumerated().first { _, p in
                !(p.0.bitPattern == p.1.bitPattern || (p.0.isNaN && p.1.isNaN))
            }
            #expect(bad == nil, "\(what): element \(bad?.offset ?? -1): \(bad?.element.0 ?? 0) vs CPU \(bad?.element.1 ?? 0)",
                    sourceLocation: sourceLocation)
        }

        /// |got − want| ≤ bound elementwise (NaN only against NaN), reporting the worst element relative to its bound.
        static func within(_ got: [Float], _ want: [Float], _ bound: [Double], _ what: String,
                                  sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(got.count == want.count && want.count == bound.count, "\(what): sizes", sourceLocation: sourceLocation)
            var worst = -1, worstExcess = 0.0
            for i in 0..<Swift.min(got.count, want.count, bound.count) {
                if got[i].isNaN || want[i].isNaN {
                    if !(got[i].isNaN && want[i].isNaN) { worst = i; worstExcess = .infinity; break }
                    continue
                }
                let d = Swift.abs(Double(got[i]) - Double(want[i]))
                if d > bound[i] && d - bound[i] > worstExcess { worst = i; worstExcess = d - bound[i] }
            }
            #expect(worst < 0, "\(what): element \(worst): \(worst < 0 ? 0 : got[worst]) vs CPU \(worst < 0 ? 0 : want[worst]), bound \(worst < 0 ? 0 : bound[worst])",
                    sourceLocation: sourceLocation)
        }
    }
}
