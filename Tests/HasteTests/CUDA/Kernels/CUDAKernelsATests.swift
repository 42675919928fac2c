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
/// - transcendental unary ops (|x| ≤ 6, |dy| ≤ 1): |Δ| ≤ 32u·(1 + |x|)·max(1, |ref|): the CPU's vectorised
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
            for to in DType.allCases {
                let (dc, dg) = empties([probe.count], to)
                cpu.cast(from: sc.buffer, to: dc.buffer, count: probe.count)
                gpu.cast(from: sg.buffer, to: dg.buffer, count: probe.count)
                expectSameBytes(dc, dg, "cast \(from) → \(to)")
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

    // MARK: elementwise

    /// Random values with the special ones mixed in.
    func values(_ n: Int, _ rng: inout KernelRNG, lo: Float = -4, hi: Float = 4, specials: Bool = true) -> [Float] {
        let special: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, 1, -1]
        return (0..<n).map { i in specials && i % 17 == 5 ? special[(i / 17) % special.count] : rng.uniform(lo, hi) }
    }

    @Test func binaryBroadcastMatchesTheCPUExactly() {
        var rng = KernelRNG(seed: 7)
        // (a shape, b shape) broadcast to the out shape; a transposed view of a too.
        let cases: [([Int], [Int])] = [
            ([1000], [1000]), ([31, 257], [257]), ([3, 1, 5], [1, 4, 1]), ([], [7]), ([1], [1]),
            ([2, 1, 2, 3, 1, 2, 2, 3, 2], [1, 2, 2, 1, 2, 2, 1, 3, 1]),
        ]
        for (sa, sb) in cases {
            let shape = broadcastShape(sa, sb)!
            let na = sa.reduce(1, *), nb = sb.reduce(1, *)
            let (ac, ag) = both(values(na, &rng), sa), (bc, bg) = both(values(nb, &rng), sb)
            let strides = { (t: Tensor) in
                (0..<shape.count).map { i -> Int in
                    let j = i - (shape.count - t.rank)
                    return j < 0 || t.shape[j] == 1 ? 0 : t.strides[j]
                }
            }
            for op in [BinaryOp.add, .sub, .mul, .div, .maximum, .minimum] {
                let (oc, og) = empties(shape)
                cpu.binary(op, ac.buffer, strides(ac), bc.buffer, strides(bc), oc.buffer, shape: shape)
                gpu.binary(op, ag.buffer, strides(ag), bg.buffer, strides(bg), og.buffer, shape: shape)
                expectSameValues(floats(oc), floats(og), "\(op) \(sa) ∘ \(sb)")
            }
        }
        // A transposed operand (strides not row-major) against a row.
        let (tc, tg) = both(values(31 * 17, &rng), [31, 17])
        let (rc, rg) = both(values(31, &rng), [31])
        let (oc, og) = empties([17, 31])
        cpu.binary(.mul, tc.buffer, [1, 17], rc.buffer, [0, 1], oc.buffer, shape: [17, 31])
        gpu.binary(.mul, tg.buffer, [1, 17], rg.buffer, [0, 1], og.buffer, shape: [17, 31])
        expectSameValues(floats(oc), floats(og), "mul on a transposed operand")
    }

    @Test func unaryForwardAndBackwardMatchTheCPU() {
        var rng = KernelRNG(seed: 13)
        // (op, input range, exact forward, exact derivative)
        let ops: [(UnaryOp, Float, Float, Bool, Bool)] = [
            (.exp, -6, 6, false, true), (.log, 0.05, 6, false, true), (.sqrt, 0, 6, true, true), (.rsqrt, 0.05, 6, true, true),
            (.tanh, -6, 6, false, false), (.sin, -6, 6, false, false), (.cos, -6, 6, false, false),
            (.abs, -6, 6, true, true), (.sign, -6, 6, true, true), (.reciprocal, -6, 6, true, true),
            (.square, -6, 6, true, true), (.sigmoid, -6, 6, false, false), (.silu, -6, 6, false, false),
            (.geluTanh, -6, 6, false, false), (.gelu, -6, 6, false, false), (.relu, -6, 6, true, true),
            (.pow(2), -6, 6, false, false), (.pow(3), -6, 6, false, false), (.pow(-1), 0.05, 6, false, false),
            (.pow(0.5), -1, 6, false, false), (.pow(2.5), -1, 6, false, false), (.pow(0), -6, 6, false, true),
            (.pow(1), -6, 6, false, false), (.clamp(-1.5, 2.25), -6, 6, true, true),
            (.clamp(-.infinity, 0.5), -6, 6, true, true), (.clamp(0, .infinity), -6, 6, true, true),
            (.affine(scale: 0.3, shift: -1.7), -6, 6, false, true),
        ]
        let u = CUDAKernelsATests.u
        for (op, lo, hi, exactF, exactD) in ops {
            for n in [1, 31, 1000] {
                let xs = values(n, &rng, lo: lo, hi: hi)
                let (xc, xg) = both(xs)
                let (yc, yg) = empties([n])
                cpu.unary(op, x: xc.buffer, y: yc.buffer, count: n)
                gpu.unary(op, x: xg.buffer, y: yg.buffer, count: n)
                let y = floats(yc)
                if exactF { expectSameValues(y, floats(yg), "\(op) ×\(n)") } else {
                    expectWithin(y, floats(yg), { 32 * u * (1 + Double(Swift.abs(xs[$0]))) * Swift.max(1, Double(Swift.abs(y[$0]))) },
                                 "\(op) ×\(n)")
                }
                // The backward reads the CPU's y on both devices, so only the derivative formula is compared.
                let yg2 = yc.to(device)
                let (dyc, dyg) = both(values(n, &rng, lo: -1, hi: 1, specials: false))
                let (dxc, dxg) = empties([n])
                cpu.unaryBackward(op, x: xc.buffer, y: yc.buffer, dy: dyc.buffer, dx: dxc.buffer, count: n)
                gpu.unaryBackward(op, x: xg.buffer, y: yg2.buffer, dy: dyg.buffer, dx: dxg.buffer, count: n)
                let dx = floats(dxc)
                if exactD { expectSameValues(dx, floats(dxg), "\(op) backward ×\(n)") } else {
                    expectWithin(dx, floats(dxg), { 32 * u * (1 + Double(Swift.abs(xs[$0]))) * Swift.max(1, Double(Swift.abs(dx[$0]))) },
                                 "\(op) backward ×\(n)")
                }
            }
        }
    }

    @Test func axpyWithinOneRounding() {
        var rng = KernelRNG(seed: 17)
        for n in [1, 31, 1000] {
            for alpha in [1.0, 0.37, -2.5] {
                let xs = values(n, &rng, specials: false), ys = values(n, &rng, specials: false)
                let (xc, xg) = both(xs), (yc, yg) = both(ys)
                cpu.axpy(alpha: alpha, x: xc.buffer, y: yc.buffer, count: n)
                gpu.axpy(alpha: alpha, x: xg.buffer, y: yg.buffer, count: n)
                // y + α·x with or without the product rounded first (NVRTC contracts it into an FMA): one rounding
                // of α·x apart, plus the sum's.
                let a = Float(alpha)
                expectWithin(floats(yc), floats(yg), { Double((a * xs[$0]).ulp + (ys[$0] + a * xs[$0]).ulp) }, "axpy α=\(alpha) ×\(n)")
            }
        }
    }

    // MARK: reduce

    @Test func reduceSumWithinSummationError() {
        var rng = KernelRNG(seed: 19)
        // The last four split the reduced axis into chunks summed in a second pass (CUDABackend.sumChunks).
        for (o, r, i) in [(1, 70_000, 1), (2, 9000, 1), (1, 5000, 40), (3, 700, 33)] {
            #expect(CUDABackend.sumChunks(outer: o, reduce: r, inner: i).0 > 1)
        }
        for (outer, reduce, inner) in [(1, 1000, 1), (7, 3000, 1), (3, 257, 31), (1, 1, 5), (5, 33, 70), (2, 1, 1),
                                       (1, 70_000, 1), (2, 9000, 1), (1, 5000, 40), (3, 700, 33)] {
            let xs = values(outer * reduce * inner, &rng, specials: false)
            let (xc, xg) = both(xs)
            let (yc, yg) = empties([outer, inner])
            cpu.reduceSum(xc.buffer, yc.buffer, outer: outer, reduce: reduce, inner: inner)
            gpu.reduceSum(xg.buffer, yg.buffer, outer: outer, reduce: reduce, inner: inner)
            let bound = { (c: Int) -> Double in
                let o = c / inner, i = c % inner
                let abs = (0..<reduce).map { Double(Swift.abs(xs[(o * reduce + $0) * inner + i])) }.reduce(0, +)
                return 2 * Double(reduce - 1) * CUDAKernelsATests.u * abs
            }
            expectWithin(floats(yc), floats(yg), bound, "sum [\(outer), \(reduce), \(inner)]")
        }
        // NaN and inf propagate.
        let (xc, xg) = both([1, .nan, 3, .infinity, 2, 5] as [Float], [2, 3])
        let (yc, yg) = empties([2])
        cpu.reduceSum(xc.buffer, yc.buffer, outer: 2, reduce: 3, inner: 1)
        gpu.reduceSum(xg.buffer, yg.buffer, outer: 2, reduce: 3, inner: 1)
        expectSameValues(floats(yc), floats(yg), "sum with NaN and inf")
    }

    @Test func reduceMaxAndBackwardMatchTheCPUExactly() {
        var rng = KernelRNG(seed: 23)
        for (outer, reduce, inner) in [(1, 1000, 1), (7, 3000, 1), (3, 257, 31), (1, 1, 5), (5, 33, 70), (4, 40, 1)] {
            // Few distinct values (ties), a NaN in some slices, −inf in others.
            var xs = (0..<(outer * reduce * inner)).map { _ in Float(Int(rng.uniform(-3, 3))) }
            if xs.count > 100 { xs[17] = .nan; xs[xs.count - 3] = .nan; xs[40] = -.infinity; xs[41] = .infinity }
            let (xc, xg) = both(xs)
            let (yc, yg) = empties([outer, inner])
            cpu.reduceMax(xc.buffer, yc.buffer, outer: outer, reduce: reduce, inner: inner)
            gpu.reduceMax(xg.buffer, yg.buffer, outer: outer, reduce: reduce, inner: inner)
            expectSameValues(floats(yc), floats(yg), "amax [\(outer), \(reduce), \(inner)]")
            let (dyc, dyg) = both(values(outer * inner, &rng, specials: false))
            let (dxc, dxg) = empties([outer, reduce, inner])
            let y2 = yc.to(device)
            cpu.reduceMaxBackward(xc.buffer, yc.buffer, dyc.buffer, dxc.buffer, outer: outer, reduce: reduce, inner: inner)
            gpu.reduceMaxBackward(xg.buffer, y2.buffer, dyg.buffer, dxg.buffer, outer: outer, reduce: reduce, inner: inner)
            expectSameBytes(dxc, dxg, "amax backward [\(outer), \(reduce), \(inner)]")
        }
    }

    // MARK: softmax and loss

    @Test func softmaxAndLogSoftmaxWithinRounding() {
        var rng = KernelRNG(seed: 29)
        let u = CUDAKernelsATests.u
        for (rows, cols) in [(1, 3000), (7, 1), (33, 257), (3, 31), (2, 5)] {
            var xs = values(rows * cols, &rng, lo: -8, hi: 8, specials: false)
            if cols >= 31 { xs[3] = -.infinity }
            if cols >= 31 && rows >= 3 { xs[cols + 1] += 1000; xs[2 * cols + 2] = .nan }
            let (xc, xg) = both(xs)
            let dys = values(rows * cols, &rng, lo: -1, hi: 1, specials: false)
            let (dyc, dyg) = both(dys)
            for log in [false, true] {
                let (yc, yg) = empties([rows, cols])
                if log {
                    cpu.logSoftmaxForward(xc.buffer, yc.buffer, rows: rows, cols: cols)
                    gpu.logSoftmaxForward(xg.buffer, yg.buffer, rows: rows, cols: cols)
                } else {
                    cpu.softmaxForward(xc.buffer, yc.buffer, rows: rows, cols: cols)
                    gpu.softmaxForward(xg.buffer, yg.buffer, rows: rows, cols: cols)
                }
                let y = floats(yc)
                let k = Double(2 * cols + 16) * u
                // softmax: relative to each output; log-softmax: the log term's absolute error plus |y|'s rounding.
                expectWithin(y, floats(yg), { log ? k * Swift.max(1, Double(Swift.abs(y[$0]))) : k * Double(Swift.abs(y[$0])) },
                             "\(log ? "log_softmax" : "softmax") [\(rows), \(cols)]")
                // The backward from the CPU's y on both devices.
                let y2 = yc.to(device)
                let (dxc, dxg) = empties([rows, cols])
                if log {
                    cpu.logSoftmaxBackward(yc.buffer, dyc.buffer, dxc.buffer, rows: rows, cols: cols)
                    gpu.logSoftmaxBackward(y2.buffer, dyg.buffer, dxg.buffer, rows: rows, cols: cols)
                } else {
                    cpu.softmaxBackward(yc.buffer, dyc.buffer, dxc.buffer, rows: rows, cols: cols)
                    gpu.softmaxBackward(y2.buffer, dyg.buffer, dxg.buffer, rows: rows, cols: cols)
                }
                let rowAbs = (0..<rows).map { r in
                    (0..<cols).map { c in Double(Swift.abs(dys[r * cols + c] * (log ? 1 : y[r * cols + c]))) }.reduce(0, +)
                }
                let bound = { (i: Int) -> Double in
                    let yi = Double(y[i]), g = Double(Swift.abs(dys[i]))
                    return log ? k * (g + Foundation.exp(yi) * rowAbs[i / cols]) : k * Swift.abs(yi) * (g + rowAbs[i / cols])
                }
                expectWithin(floats(dxc), floats(dxg), bound, "\(log ? "log_softmax" : "softmax") backward [\(rows), \(cols)]")
            }
        }
    }

    @Test func crossEntropyWithinRounding() {
        var rng = KernelRNG(seed: 31)
        let u = CUDAKernelsATests.u
        for (rows, classes) in [(1, 3000), (7, 1), (33, 257), (5, 10)] {
            let xs = values(rows * classes, &rng, lo: -8, hi: 8, specials: false)
            let ts = (0..<rows).map { _ in Int(rng.next() % UInt64(classes)) }
            for wide in [false, true] {
                let (xc, xg) = both(xs, [rows, classes])
                let (tc, tg) = wide ? both(ts.map { Int64($0) }) : both(ts.map { Int32($0) })
                let (lc, lg) = empties([1])
                cpu.crossEntropyForward(xc.buffer, targets: tc.buffer, loss: lc.buffer, rows: rows, classes: classes)
                gpu.crossEntropyForward(xg.buffer, targets: tg.buffer, loss: lg.buffer, rows: rows, classes: classes)
                let l = floats(lc)
                // Each row's log-sum-exp as in softmax, the row mean summed in the same order on both.
                let k = Double(2 * classes + 2 * rows + 16) * u
                expectWithin(l, floats(lg), { _ in k * (32 + Double(Swift.abs(l[0]))) }, "cross_entropy [\(rows), \(classes)] wide \(wide)")
                let (dyc, dyg) = both([Float(1.7)])
                let (dxc, dxg) = empties([rows, classes])
                cpu.crossEntropyBackward(xc.buffer, targets: tc.buffer, dyc.buffer, dxc.buffer, rows: rows, classes: classes)
                gpu.crossEntropyBackward(xg.buffer, targets: tg.buffer, dyg.buffer, dxg.buffer, rows: rows, classes: classes)
                let dx = floats(dxc)
                let kb = Double(2 * classes + 16) * u
                expectWithin(dx, floats(dxg), { _ in kb * 1.7 / Double(rows) * 2 }, "cross_entropy backward [\(rows), \(classes)]")
            }
        }
    }

    @Test func crossEntropyBadTargetSetsTheErrorWord() {
        let b = privateBackend()
        let (_, xg) = both([Float](repeating: 0.5, count: 3 * 4), [3, 4])
        for bad: Int64 in [4, -1, 1 << 40] {
            let tg = Tensor([Int64(1), bad, Int64(0)], device: device)
            let lg = Tensor.empty([1], device: device)
            b.crossEntropyForward(xg.buffer, targets: tg.buffer, loss: lg.buffer, rows: 3, classes: 4)
            #expect(errorCode(b) == DeviceErrorCode.crossEntropyTarget.rawValue, "forward, target \(bad)")
            #expect(floats(lg)[0].isNaN)
            var zero: Int32 = 0
            b.driver.copy(fromHost: &zero, to: b.errorWord, byteCount: 4)
            let dy = Tensor([Float(1)], device: device), dx = Tensor.empty([3, 4], device: device)
            b.crossEntropyBackward(xg.buffer, targets: tg.buffer, dy.buffer, dx.buffer, rows: 3, classes: 4)
            #expect(errorCode(b) == DeviceErrorCode.crossEntropyTarget.rawValue, "backward, target \(bad)")
            b.driver.copy(fromHost: &zero, to: b.errorWord, byteCount: 4)
        }
        // A good batch leaves the word clear.
        let tg = Tensor([Int32(3), 0, 2], device: device), lg = Tensor.empty([1], device: device)
        b.crossEntropyForward(xg.buffer, targets: tg.buffer, loss: lg.buffer, rows: 3, classes: 4)
        #expect(errorCode(b) == 0)
    }

    // MARK: optimizer

    @Test func adamwEmaAndScaleMatchTheCPUBitwise() {
        var rng = KernelRNG(seed: 37)
        for n in [1, 31, 1000] {
            for (beta1, wd) in [(0.9, 0.01), (0.3, 0.0)] {
                let ps = values(n, &rng, specials: false)
                let (pc, pg) = both(ps), (mc, mg) = both([Float](repeating: 0, count: n)), (vc, vg) = both([Float](repeating: 0, count: n))
                for step in 1...4 {
                    let (gc, gg) = both(values(n, &rng, lo: -0.1, hi: 0.1, specials: false))
                    cpu.adamw(param: pc.buffer, grad: gc.buffer, m: mc.buffer, v: vc.buffer, count: n, lr: 1e-3, beta1: beta1,
                              beta2: 0.999, eps: 1e-8, weightDecay: wd, step: step)
                    gpu.adamw(param: pg.buffer, grad: gg.buffer, m: mg.buffer, v: vg.buffer, count: n, lr: 1e-3, beta1: beta1,
                              beta2: 0.999, eps: 1e-8, weightDecay: wd, step: step)
                }
                expectSameBytes(pc, pg, "adamw param ×\(n) β1 \(beta1)")
                expectSameBytes(mc, mg, "adamw m ×\(n) β1 \(beta1)")
                expectSameBytes(vc, vg, "adamw v ×\(n) β1 \(beta1)")
            }
            let (ec, eg) = both(values(n, &rng, specials: false)), (qc, qg) = both(values(n, &rng, specials: false))
            for decay in [0.9999, 0.5] {
                cpu.emaUpdate(ema: ec.buffer, param: qc.buffer, count: n, decay: decay)
                gpu.emaUpdate(ema: eg.buffer, param: qg.buffer, count: n, decay: decay)
            }
            expectSameBytes(ec, eg, "ema ×\(n)")
            cpu.scale(qc.buffer, count: n, by: 0.123)
            gpu.scale(qg.buffer, count: n, by: 0.123)
            expectSameBytes(qc, qg, "scale ×\(n)")
        }
    }

    @Test func fmaEmulationIsCorrectlyRounded() {
        // ema ← fma(p, α, ema·d) with d = Float(1 − decay), α = Float(1 − decay): decay = 1 − α (exact in double
        // for these α) makes the kernel compute fma(p, α, e·d) for any float α, one element per launch.
        // (1 + 2⁻¹²)² = 1 + 2⁻¹¹ + 2⁻²⁴ is a float midpoint; adding ±2⁻⁸⁰ (lost in the double sum) must round
        // away from or toward it as the exact value says, where rounding the double sum to float would tie to even.
        var rng = KernelRNG(seed: 41)
        let m: Float = 1 + 0x1p-12
        var cases: [(p: Float, alpha: Float, e: Float)] = [
            (m, m, -0x1p-68), (m, m, 0x1p-68), (-m, m, 0x1p-68), (-m, m, -0x1p-68), (m, m, 0),
        ]
        for _ in 0..<200 { cases.append((rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(-2, 2))) }
        for (p, alpha, e) in cases {
            let (ec, eg) = both([e]), (pc, pg) = both([p])
            let decay = 1 - Double(alpha)
            cpu.emaUpdate(ema: ec.buffer, param: pc.buffer, count: 1, decay: decay)
            gpu.emaUpdate(ema: eg.buffer, param: pg.buffer, count: 1, decay: decay)
            expectSameBytes(ec, eg, "fma(\(p), \(alpha), \(e)·\(Float(decay)))")
        }
        // The midpoint cases really are corrected (a double-then-float rounding would give 1 + 2⁻¹¹ for both).
        let (ec, eg) = both([Float(-0x1p-68)]), (pc, pg) = both([m])
        gpu.emaUpdate(ema: eg.buffer, param: pg.buffer, count: 1, decay: 1 - Double(m))
        cpu.emaUpdate(ema: ec.buffer, param: pc.buffer, count: 1, decay: 1 - Double(m))
        #expect(floats(eg)[0] == 1 + 0x1p-11 + 0x1p-23 && floats(ec)[0] == floats(eg)[0])
    }

    @Test func sumOfSquaresWithinTheCPUsBlockError() {
        var rng = KernelRNG(seed: 43)
        for n in [1, 31, 257, 5000, 70_000] {
            let xs = values(n, &rng, specials: false)
            let (xc, xg) = both(xs)
            let ref = cpu.sumOfSquares(xc.buffer, count: n), got = gpu.sumOfSquares(xg.buffer, count: n)
            // The CPU rounds each square and sums 64 per lane then 16 lanes in float per 1024-element block:
            // ≤ 80u relative per block; the device's double sum is exact to ~1e-16.
            #expect(Swift.abs(ref - got) <= 96 * CUDAKernelsATests.u * ref, "sum of squares ×\(n): cpu \(ref), cuda \(got)")
            // Repeats are bitwise equal.
            #expect(got == gpu.sumOfSquares(xg.buffer, count: n))
        }
        let (zc, zg) = both([Float(3), 4])
        #expect(cpu.sumOfSquares(zc.buffer, count: 2) == 25 && gpu.sumOfSquares(zg.buffer, count: 2) == 25)
    }

    // MARK: embedding

    @Test func embeddingForwardAndBackwardMatchTheCPUBitwise() {
        var rng = KernelRNG(seed: 47)
        for (rows, dim, count) in [(1, 1, 1), (10, 31, 257), (1001, 3, 40), (5, 257, 9)] {
            let ws = values(rows * dim, &rng, specials: false)
            let idx = (0..<count).map { _ in Int(rng.next() % UInt64(rows)) }
            for wide in [false, true] {
                let (wc, wg) = both(ws, [rows, dim])
                let (ic, ig) = wide ? both(idx.map { Int64($0) }) : both(idx.map { Int32($0) })
                let (oc, og) = empties([count, dim])
                cpu.embeddingForward(weight: wc.buffer, indices: ic.buffer, out: oc.buffer, rows: rows, dim: dim, count: count)
                gpu.embeddingForward(weight: wg.buffer, indices: ig.buffer, out: og.buffer, rows: rows, dim: dim, count: count)
                expectSameBytes(oc, og, "embedding [\(rows), \(dim)] ×\(count)")
                // Accumulates into a non-zero dWeight, repeated indices in index order.
                let (dyc, dyg) = both(values(count * dim, &rng, specials: false))
                let (dwc, dwg) = both(values(rows * dim, &rng, specials: false))
                cpu.embeddingBackward(dy: dyc.buffer, indices: ic.buffer, dWeight: dwc.buffer, rows: rows, dim: dim, count: count)
                gpu.embeddingBackward(dy: dyg.buffer, indices: ig.buffer, dWeight: dwg.buffer, rows: rows, dim: dim, count: count)
                expectSameBytes(dwc, dwg, "embedding backward [\(rows), \(dim)] ×\(count)")
            }
        }
    }

    @Test func embeddingBadIndexSetsTheErrorWord() {
        let b = privateBackend()
        let wg = Tensor([Float](repeating: 1, count: 4 * 3), shape: [4, 3], device: device)
        for bad: Int32 in [4, -1] {
            let ig = Tensor([Int32(0), bad, 3], device: device)
            let og = Tensor.empty([3, 3], device: device)
            b.embeddingForward(weight: wg.buffer, indices: ig.buffer, out: og.buffer, rows: 4, dim: 3, count: 3)
            #expect(errorCode(b) == DeviceErrorCode.embeddingIndex.rawValue, "forward, index \(bad)")
            #expect(Array(floats(og)[3..<6]) == [0, 0, 0])
            var zero: Int32 = 0
            b.driver.copy(fromHost: &zero, to: b.errorWord, byteCount: 4)
            let dw = Tensor.zeros([4, 3], device: device)
            b.embeddingBackward(dy: og.buffer, indices: ig.buffer, dWeight: dw.buffer, rows: 4, dim: 3, count: 3)
            #expect(errorCode(b) == DeviceErrorCode.embeddingIndex.rawValue, "backward, index \(bad)")
            b.driver.copy(fromHost: &zero, to: b.errorWord, byteCount: 4)
        }
    }
}

extension CUDAKernelsATests {
    /// The same small graph through the Tensor API and autograd on both devices: broadcast mul/add, gelu,
    /// softmax over a middle axis (permute, strided copies), amax over a non-trailing axis, sum, mean, square,
    /// embedding and cross-entropy; gradients reach every leaf (broadcast sums, gradient accumulation).
    /// Bound: |Δ| ≤ 2⁻¹⁶·(1 + |ref|), a few dozen float32 roundings (each op above is within 32u of the CPU)
    /// through a graph whose values and derivatives are O(1).
    @Test func autogradGraphMatchesTheCPU() {
        var rng = KernelRNG(seed: 53)
        let av = (0..<15).map { _ in rng.uniform(-2, 2) }, bv = (0..<4).map { _ in rng.uniform(-2, 2) }
        let wv = (0..<60).map { _ in rng.uniform(-1, 1) }
        let iv: [Int32] = [3, 9, 0, 3, 7, 3, 1], tv: [Int64] = [5, 0, 2, 2, 1, 4, 3]
        func run(_ dev: Device) -> [[Float]] {
            let a = Tensor(av, shape: [3, 1, 5], device: dev), b = Tensor(bv, shape: [4, 1], device: dev)
            let w = Tensor(wv, shape: [10, 6], device: dev)
            for t in [a, b, w] { t.requiresGrad = true }
            let t = (a * b).gelu() + b                                    // [3, 4, 5]
            let s = t.softmax(axis: 1)
            let m = s.max(axes: [1]).sum()
            let logits = Tensor.embedding(w, Tensor(iv, device: dev)) * 3.0
            let ce = logits.crossEntropy(targets: Tensor(tv, device: dev))
            let loss = m + ce * 0.5 + t.square().mean()
            loss.backward()
            return [loss, a.grad!, b.grad!, w.grad!].map { $0.scalars(as: Float.self) }
        }
        let ref = run(.cpu), got = run(device)
        for (k, name) in ["loss", "da", "db", "dw"].enumerated() {
            expectWithin(ref[k], got[k], { 0x1p-16 * (1 + Double(Swift.abs(ref[k][$0]))) }, name)
        }
    }
}

/// SplitMix64: deterministic test inputs.
struct KernelRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * Float(next() >> 40) * 0x1p-24 }
}
