import Testing
import Foundation
import HasteTensor
@testable import HasteCUDA

/// Elementwise and reduce kernels against the CPU (bounds: CUDAKernelsATests).
extension CUDAKernelsATests {
    // MARK: elementwise

    @Test func binaryBroadcastMatchesTheCPUExactly() {
        var rng = KernelRNG(seed: 7)
        // (a shape, b shape) broadcast to the out shape; a transposed view of a too.
        let cases: [([Int], [Int])] = [
            ([1000], [1000]), ([31, 257], [257]), ([3, 1, 5], [1, 4, 1]), ([], [7]), ([1], [1]),
            ([2, 1, 2, 3, 1, 2, 2, 3, 2], [1, 2, 2, 1, 2, 2, 1, 3, 1]),
            // 16- and 8-byte units (binary32_f32_u4, _u2): a bias over rows, adaLN's modulation over tokens, 4·k and 6 wide.
            ([8, 64], [64]), ([6, 4, 12], [6, 1, 12]), ([1, 5, 8], [3, 5, 8]), ([4, 6], [6]),
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
        // Rows read backwards (a negative stride: the 64-bit kernel, binary_f32, not the 32-bit ones).
        let (fc, fg) = empties([31, 17])
        let last = { (t: Tensor) in Tensor(storage: t.storage, shape: [1], offset: 30 * 17, dtype: .float32).buffer }
        cpu.binary(.sub, last(tc), [-17, 1], rc.buffer, [0, 0], fc.buffer, shape: [31, 17])
        gpu.binary(.sub, last(tg), [-17, 1], rg.buffer, [0, 0], fg.buffer, shape: [31, 17])
        expectSameValues(floats(fc), floats(fg), "sub on a flipped operand")
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
            // Saturated tails of the activations (the CPU's vectorised exp underflows/overflows there).
            (.tanh, -30, 30, false, false), (.sigmoid, -30, 30, false, false), (.silu, -30, 30, false, false),
            (.geluTanh, -30, 30, false, false), (.gelu, -30, 30, false, false),
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
}
