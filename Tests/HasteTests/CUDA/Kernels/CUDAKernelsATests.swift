import Testing
import Foundation
import HasteTensor
@testable import HasteCUDA

/// The memory, random, elementwise, reduce, softmax, loss, optimizer and embedding kernels on the emulated CUDA
/// device against the CPU backend, on random odd-sized inputs with NaN, ±inf, ±0 and ties.
///
/// Bounds (u = 2⁻²⁴, float32's unit roundoff):
/// - exact (bitwise, or equal values with NaN where the CPU has NaN): fills, copies, casts, Philox uniforms,
///   binary ops, the rounding-free unary ops and derivatives, max and its backward, the embedding gather and
///   its ordered scatter-add, AdamW, EMA and scale (same operations in the same order, fma correctly rounded).
/// - normals: ≤ 1 float ulp (Box–Muller in double on both sides; a device's double log/cos/sin may differ from
///   glibc's in the last double bit, which moves the float result by at most one ulp).
/// - transcendental unary ops (|x| ≤ 30, |dy| ≤ 1): |Δ| ≤ 32u·(1 + |x|)·max(1, |ref|): the CPU's vectorised
///   exp/tanh (≤ 1 ulp) or glibc against libdevice (≤ 2 ulp, powf 4), amplified by the formulas' ≤ 10 roundings
///   of intermediates no larger than (1 + |x|)·max(1, |y|), plus NVRTC's contractions into FMAs.
/// - sums over n terms in another order: |Δ| ≤ 2(n − 1)u·Σ|terms| (each order's worst-case error is (n − 1)u·Σ|terms|).
///   Softmax, log-softmax and cross-entropy add 16u per output for their exp/log/divide (≤ 2 ulp each).
@Suite struct CUDAKernelsATests {
    let gpu: CUDABackend = EmulatedCUDA.backend
    let device: Device = EmulatedCUDA.device
    let cpu = CPUBackend.shared
    static let u = 0x1p-24

    // MARK: helpers

    /// The same host values on the CPU and on the emulated device.
    func both<T: HostScalar>(_ values: [T], _ shape: [Int]? = nil) -> (Tensor, Tensor) {
        let c = Tensor(values, shape: shape)
        return (c, c.to(device))
    }

    /// Uninitialised tensors of one shape on both devices.
    func empties(_ shape: [Int], _ dtype: DType = .float32) -> (Tensor, Tensor) {
        (Tensor.empty(shape, dtype: dtype), Tensor.empty(shape, dtype: dtype, device: device))
    }

    /// A contiguous tensor's bytes, read through its own backend (no cast kernel involved).
    func bytes(_ t: Tensor) -> [UInt8] {
        let n = t.count * t.dtype.byteSize
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { raw in
            if n > 0 { t.backend.copyToHost(t.buffer, raw.baseAddress!, byteCount: n) }
        }
        return out
    }

    func floats(_ t: Tensor) -> [Float] {
        precondition(t.dtype == .float32)
        let b = bytes(t)
        return (0..<t.count).map { i in
            Float(bitPattern: UInt32(b[4 * i]) | UInt32(b[4 * i + 1]) << 8 | UInt32(b[4 * i + 2]) << 16 | UInt32(b[4 * i + 3]) << 24)
        }
    }

    /// Bitwise equality of two tensors' bytes, naming the first difference.
    func expectSameBytes(_ a: Tensor, _ b: Tensor, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let x = bytes(a), y = bytes(b)
        let first = zip(x, y).enumerated().first { $0.element.0 != $0.element.1 }
        #expect(x.count == y.count && first == nil,
                "\(what): byte \(first?.offset ?? -1) differs (\(first?.element.0 ?? 0) on cpu, \(first?.element.1 ?? 0) on cuda)",
                sourceLocation: sourceLocation)
    }

    /// Equal values (NaN where the reference has NaN; +0 and −0 equal).
    func expectSameValues(_ ref: [Float], _ got: [Float], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let bad = (0..<ref.count).filter { !(ref[$0] == got[$0] || (ref[$0].isNaN && got[$0].isNaN)) }
        #expect(ref.count == got.count && bad.isEmpty,
                "\(what): \(bad.count) of \(ref.count) differ, first at \(bad.first ?? -1): cpu \(bad.first.map { ref[$0] } ?? 0), cuda \(bad.first.map { got[$0] } ?? 0)",
                sourceLocation: sourceLocation)
    }

    /// |got − ref| ≤ bound[i] elementwise; NaN and ±inf must match exactly.
    func expectWithin(_ ref: [Float], _ got: [Float], _ bound: (Int) -> Double, _ what: String,
                      sourceLocation: SourceLocation = #_sourceLocation) {
        var bad: [Int] = []
        for i in 0..<ref.count {
            let r = ref[i], g = got[i]
            if r.isNaN || g.isNaN || r.isInfinite || g.isInfinite {
                if !(r == g || (r.isNaN && g.isNaN)) { bad.append(i) }
            } else if Swift.abs(Double(r) - Double(g)) > bound(i) {
                bad.append(i)
            }
        }
        #expect(ref.count == got.count && bad.isEmpty,
                "\(what): \(bad.count) of \(ref.count) outside the bound, first at \(bad.first ?? -1): cpu \(bad.first.map { ref[$0] } ?? 0), cuda \(bad.first.map { got[$0] } ?? 0), bound \(bad.first.map { bound($0) } ?? 0)",
                sourceLocation: sourceLocation)
    }

    /// A backend of its own over the emulator's driver: its error word is private to the test, so the bad-input
    /// tests can read and clear it without another test's synchronisation seeing it (which would end the process).
    func privateBackend() -> CUDABackend { CUDABackend(driver: gpu.driver, device: device) }

    func errorCode(_ b: CUDABackend) -> Int32 {
        var code: Int32 = 0
        b.driver.copy(from: b.errorWord, toHost: &code, byteCount: 4)
        return code
    }

    /// Random values with the special ones mixed in.
    func values(_ n: Int, _ rng: inout KernelRNG, lo: Float = -4, hi: Float = 4, specials: Bool = true) -> [Float] {
        let special: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, 1, -1]
        return (0..<n).map { i in specials && i % 17 == 5 ? special[(i / 17) % special.count] : rng.uniform(lo, hi) }
    }

    // MARK: memory

    @Test func fillEveryDTypeMatchesTheCPUBitwise() {
        let values: [DType: [Double]] = [
            .float32: [0, -0.0, 3.75, -1e-40, 1e39, .infinity, .nan], .float64: [0, -2.5, 1e300, .nan],
            .float16: [0, 1.0 / 3, 65_519, 65_520, -1e-7, .nan], .bfloat16: [1.0 / 3, -3e38, 1e39, .nan],
            .int32: [0, -7.9, 2_147_483_647], .int64: [-9e15, 12.99], .uint8: [0, 200.7, 255], .bool: [0, 1, -0.5, .nan],
        ]
        for (dtype, vs) in values {
            for v in vs {
                for count in [1, 31, 1001] {
                    let (c, g) = empties([count], dtype)
                    cpu.fill(c.buffer, count: count, value: v)
                    gpu.fill(g.buffer, count: count, value: v)
                    expectSameBytes(c, g, "fill \(dtype) \(v) ×\(count)")
                }
            }
        }
    }

    @Test func stridedCopyEveryWidthAndRankMatchesTheCPU() {
        var rng = KernelRNG(seed: 11)
        // (shape, source strides, source offset, destination strides): a transpose, a broadcast, a slice into
        // a wider destination, negative strides, and ranks 9 and 10 (more than the kernel's 8 axes).
        let cases: [([Int], [Int], Int, [Int])] = [
            ([31, 17], [1, 31], 0, [17, 1]),
            ([5, 257], [0, 1], 3, [257, 1]),
            ([3, 4, 5], [20, 5, 1], 7, [60, 15, 2]),
            ([6, 7], [-7, 1], 35, [7, 1]),
            ([1000], [3], 1, [1]),
            ([2, 3, 2, 2, 3, 2, 2, 2, 3], Tensor.contiguousStrides([2, 3, 2, 2, 3, 2, 2, 2, 3]).reversed(), 0,
             Tensor.contiguousStrides([2, 3, 2, 2, 3, 2, 2, 2, 3])),
            ([2, 2, 1, 3, 2, 2, 2, 3, 2, 2], [1, 2, 0, 4, 12, 24, 48, 96, 288, 576], 0,
             Tensor.contiguousStrides([2, 2, 1, 3, 2, 2, 2, 3, 2, 2])),
            // Wide units (strided_copy32_16 … _2): attention's head split of a [N, T, 3, H, Dh] qkv (k: offset
            // H·Dh) and its inverse, a bias broadcast into rows, an inner axis of 6 (units of 2), an unaligned start.
            ([2, 3, 5, 8], [360, 8, 72, 1], 24, [120, 40, 8, 1]),
            ([2, 5, 3, 8], [120, 8, 40, 1], 0, [360, 72, 8, 1]),
            ([7, 48], [0, 1], 0, [48, 1]),
            ([4, 6], [12, 1], 0, [6, 1]),
            ([4, 16], [16, 1], 1, [16, 1]),
        ]
        for dtype in [DType.float64, .int32, .bfloat16, .uint8] {
            for (shape, ss, so, ds) in cases {
                let srcCount = so + zip(shape, ss).map { ($0 - 1) * Swift.abs($1) }.reduce(0, +) + 1
                let dstCount = zip(shape, ds).map { ($0 - 1) * $1 }.reduce(0, +) + 1
                // Random bytes read as `dtype` (copies move bits, whatever they mean).
                let n = srcCount * dtype.byteSize
                let bytesIn = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                let (sc, sg) = empties([srcCount], dtype)
                bytesIn.withUnsafeBytes { raw in
                    cpu.copyFromHost(raw.baseAddress!, to: sc.buffer, byteCount: n)
                    gpu.copyFromHost(raw.baseAddress!, to: sg.buffer, byteCount: n)
                }
                let (dc, dg) = empties([dstCount], dtype)
                cpu.fill(dc.buffer, count: dstCount, value: 0)
                gpu.fill(dg.buffer, count: dstCount, value: 0)
                let offsetBuffer = { (t: Tensor) in Tensor(storage: t.storage, shape: [srcCount - so], offset: so, dtype: dtype).buffer }
                cpu.stridedCopy(from: offsetBuffer(sc), srcStrides: ss, to: dc.buffer, dstStrides: ds, shape: shape)
                gpu.stridedCopy(from: offsetBuffer(sg), srcStrides: ss, to: dg.buffer, dstStrides: ds, shape: shape)
                expectSameBytes(dc, dg, "stridedCopy \(dtype) \(shape) \(ss) → \(ds)")
            }
        }
    }

    /// `strided_copy32_*`'s divisions by an extent as a multiply-high and a shift: exact for every divisor it is
    /// given (1 … 2³¹) and dividends below 2³¹ (edges: multiples of d and their neighbours, 2³¹ − 1).
    @Test func fastDivisionIsExactBelowTwoToThe31() {
        var rng = KernelRNG(seed: 3)
        let top = 1 << 31
        var divisors: [Int] = Array(1...4_100)
        for e in 1...31 { divisors += [(1 << e) - 1, 1 << e, (1 << e) + 1].filter { $0 <= top } }
        for _ in 0..<2_000 { divisors.append(Int(rng.next() % UInt64(top)) + 1) }
        for d in divisors {
            let magic = CUDABackend.fastDivisor(d)
            var dividends: [Int] = [0, 1, d - 1, d, d + 1, top - 1, top - 1 - (top - 1) % d]
            for _ in 0..<24 { dividends.append(Int(rng.next() % UInt64(top))) }
            for _ in 0..<8 {
                let k = Int(rng.next() % 4_096), r = Int(rng.next() % 3)
                dividends.append(Swift.min(top - 1, k * d - 1 + r))
            }
            for n in dividends where n >= 0 && n < top {
                let q = CUDABackend.fastDivide(UInt32(n), magic)
                if Int(q) != n / d { Issue.record("fastDivide(\(n), \(d)) = \(q), not \(n / d)"); return }
            }
        }
    }

    /// The widest unit `strided_copy32_*` moves: both views contiguous in the last axis, every other stride, the
    /// last extent and both addresses divisible by it.
    @Test func copyUnitIsTheWidestAlignedOne() {
        typealias C = CUDABackend
        #expect(C.copyUnit(byteSize: 4, shape: [64, 16, 256, 72], strides: [[884_736, 72, 3_456, 1], [294_912, 18_432, 72, 1]],
                           addresses: [4_096, 8_192]) == 4)
        #expect(C.copyUnit(byteSize: 2, shape: [16_384, 4_608], strides: [[0, 1], [4_608, 1]], addresses: [512, 1_024]) == 8)
        #expect(C.copyUnit(byteSize: 4, shape: [8, 72], strides: [[72, 1], [72, 1]], addresses: [4_104, 0]) == 2)
        #expect(C.copyUnit(byteSize: 4, shape: [8, 6], strides: [[6, 1], [6, 1]], addresses: [0, 0]) == 2)
        #expect(C.copyUnit(byteSize: 4, shape: [8, 8], strides: [[9, 1], [8, 1]], addresses: [0, 0]) == 1)
        #expect(C.copyUnit(byteSize: 4, shape: [8, 8], strides: [[1, 8], [8, 1]], addresses: [0, 0]) == 1)
        #expect(C.copyUnit(byteSize: 8, shape: [4], strides: [[1], [1]], addresses: [16, 32]) == 2)
        #expect(C.copyUnit(byteSize: 8, shape: [3], strides: [[1], [1]], addresses: [16, 32]) == 1)
        #expect(C.copyUnit(byteSize: 1, shape: [3, 32], strides: [[32, 1], [64, 1]], addresses: [3, 0]) == 1)
    }

    /// Values that exercise every conversion's edges: rounding ties for half and bfloat16, their overflow and
    /// subnormal ranges, truncation toward zero, integer wrap-around, saturation, NaN and ±inf.
    static let castProbe: [Double] = [
        0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.99, 127.5, 255.9, 256, 257.5, -1, -129.7, 65_504, 65_519.99, 65_520,
        1e-8, 5.960_464_477_539_063e-8, 2.980_232_238_769_531_3e-8, 1.0 / 3, 1.001_953_125, 1.005_859_375,
        3e38, -3.5e38, 1e300, 2_147_483_647, 2_147_483_648.5, -2_147_483_649, 4_294_967_296 + 5,
        9.3e18, -9.3e18, 1e20, .infinity, -.infinity, .nan, 0.1, -7e-39,
    ]

    @Test func castEveryPairMatchesTheCPUBitwise() {
        var rng = KernelRNG(seed: 5)
        var probe = CUDAKernelsATests.castProbe
        for _ in 0..<200 { probe.append(Double(rng.uniform(-300, 300))) }
        for _ in 0..<60 { probe.append(Double(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())))) }
        let (p64c, _) = both(probe)
        for from in DType.allCases {
            // The source values as the CPU converts them into `from`; the device gets the same bytes.
            let (sc, _) = empties([probe.count], from)
            cpu.cast(from: p64c.buffer, to: sc.buffer, count: probe.count)
            let sg = sc.to(device)
            // All of it (298: the one-element kernels), and 296 (float32 ↔ bf16 four at a time: cast_*_v4).
            for to in DType.allCases {
                for n in [probe.count, probe.count / 4 * 4] {
                    let (dc, dg) = empties([n], to)
                    cpu.cast(from: sc.buffer, to: dc.buffer, count: n)
                    gpu.cast(from: sg.buffer, to: dg.buffer, count: n)
                    expectSameBytes(dc, dg, "cast \(from) → \(to) ×\(n)")
                }
            }
        }
    }

    @Test func castHalfAndBFloat16EveryPatternMatchesTheCPU() {
        // Every 16-bit pattern read as float16 and as bfloat16, and 65 536 random float32 patterns written as both.
        let patterns = (0..<65_536).map { UInt16($0) }
        var rng = KernelRNG(seed: 3)
        let f32 = (0..<65_536).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
        for half in [DType.float16, .bfloat16] {
            let (pc, _) = empties([65_536], half)
            patterns.withUnsafeBytes { cpu.copyFromHost($0.baseAddress!, to: pc.buffer, byteCount: 131_072) }
            let pg = pc.to(device)
            let (oc, og) = empties([65_536], .float32)
            cpu.cast(from: pc.buffer, to: oc.buffer, count: 65_536)
            gpu.cast(from: pg.buffer, to: og.buffer, count: 65_536)
            // NaN payloads: glibc/F16C quiet a signalling half NaN; compare NaN-ness there, bits elsewhere.
            expectSameValues(floats(oc), floats(og), "\(half) → float32, every pattern")
            let (fc, fg) = both(f32)
            let (hc, hg) = empties([65_536], half)
            cpu.cast(from: fc.buffer, to: hc.buffer, count: 65_536)
            gpu.cast(from: fg.buffer, to: hg.buffer, count: 65_536)
            // NaN payloads: Swift's Float16(Float) keeps the top payload bits, the device (like torch) writes the
            // quiet NaN 0x7e00 with the sign; bfloat16 NaN is 0x7fc0 on both. Every non-NaN pattern is bitwise equal.
            let hb = bytes(hc), gb = bytes(hg)
            let isNaN = { (b: [UInt8], i: Int) -> Bool in
                let v = UInt16(b[2 * i]) | UInt16(b[2 * i + 1]) << 8
                return half == .float16 ? (v & 0x7c00) == 0x7c00 && (v & 0x3ff) != 0 : (v & 0x7f80) == 0x7f80 && (v & 0x7f) != 0
            }
            let differ = (0..<65_536).filter { i in (hb[2 * i] != gb[2 * i] || hb[2 * i + 1] != gb[2 * i + 1]) && !(isNaN(hb, i) && isNaN(gb, i)) }
            #expect(differ.isEmpty, "float32 → \(half): \(differ.count) patterns differ, first \(differ.first.map { String(f32[$0].bitPattern, radix: 16) } ?? "")")
            if half == .bfloat16 { expectSameBytes(hc, hg, "float32 → bfloat16, NaN included") }
        }
    }

    // MARK: random

    @Test func uniformIsBitIdenticalAndNormalWithinOneUlp() {
        for (count, offset) in [(1, 0), (31, 8), (257, 4000), (1001, 12)] as [(Int, UInt64)] {
            for seed: UInt64 in [0, 0x9E37_79B9_7F4A_7C15] {
                let (uc, ug) = empties([count])
                cpu.fillUniform(uc.buffer, count: count, seed: seed, offset: offset)
                gpu.fillUniform(ug.buffer, count: count, seed: seed, offset: offset)
                expectSameBytes(uc, ug, "uniform ×\(count) seed \(seed) offset \(offset)")
                let (nc, ng) = empties([count])
                cpu.fillNormal(nc.buffer, count: count, seed: seed, offset: offset)
                gpu.fillNormal(ng.buffer, count: count, seed: seed, offset: offset)
                let ref = floats(nc)
                expectWithin(ref, floats(ng), { Double(ref[$0].ulp) }, "normal ×\(count) seed \(seed) offset \(offset)")
            }
        }
    }
}

typealias KernelRNG = SplitMix64
