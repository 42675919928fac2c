import Testing
import Foundation
@testable import HasteTensor
@testable import HasteCUDA

/// The fused soft cross-entropy (`soft_cross_entropy_f32`, the attention-alignment loss) on the emulated device
/// against the CPU's one-pass kernel. Bounds: 64u (3.8e-6) relative to the magnitudes a result is made of: the loss
/// against its terms' Σ|p·log q| (all ≥ 0, so the loss itself up to rounding), each gradient element against
/// (softmax(x) + softmax(t))·scale. The two devices sum each row in another order with other exponentials (≤ 2 ulp
/// each), which moves each result by a few ulps (at most 7u here, 3 000 columns included); a kernel that
/// mis-addresses a row, drops a term or scales one by 1 + 10⁻⁴ misses by far more.
extension CUDAKernelsATests {
    static let softCrossEntropyBound = 64 * u

    /// 0.75·x.softCrossEntropy(target:) and its gradient with respect to x, x and the target being views (`views`)
    /// of bases holding `xs` and `ts`, made on `dev`; also the views' values (row-major) and whether the loss was
    /// recorded by the fused op's node (not the composite's).
    func softCrossEntropyRun(on dev: Device, _ xs: [Float], _ xShape: [Int], _ ts: [Float], _ tShape: [Int],
                             _ views: (Tensor, Tensor) -> (Tensor, Tensor)) -> (loss: [Float], gradient: [Float], x: [Float], t: [Float], fused: Bool) {
        let xb = Tensor(xs, shape: xShape).to(dev), tb = Tensor(ts, shape: tShape).to(dev)
        xb.requiresGrad = true
        let (x, t) = views(xb, tb)
        let ce = x.softCrossEntropy(target: t)
        let fused = ce.gradFn is SoftCrossEntropyBackward
        let loss = ce * 0.75
        let g = gradients(of: loss, wrt: [x])[0]!
        return (floats(loss.to(.cpu).reshaped([1])), floats(g.to(.cpu).contiguous()), floats(x.to(.cpu).contiguous()), floats(t.to(.cpu).contiguous()), fused)
    }

    /// Per row of `cols`, in double: softmax(x), softmax(t) and Σ|p·((x − m) − log Z)|.
    func softCrossEntropyMagnitudes(_ x: [Float], _ t: [Float], cols: Int) -> (sx: [Double], p: [Double], terms: [Double]) {
        var sx = [Double](repeating: 0, count: x.count), p = sx, terms: [Double] = []
        func softmax(_ v: ArraySlice<Float>) -> (y: [Double], m: Double, logZ: Double) {
            let m = Double(v.max()!), e = v.map { Foundation.exp(Double($0) - m) }, z = e.reduce(0, +)
            return (e.map { $0 / z }, m, Foundation.log(z))
        }
        for r in 0..<(x.count / cols) {
            let range = r * cols..<(r + 1) * cols
            let a = softmax(x[range]), b = softmax(t[range])
            sx.replaceSubrange(range, with: a.y)
            p.replaceSubrange(range, with: b.y)
            terms.append(zip(b.y, x[range]).map { Swift.abs($0 * ((Double($1) - a.m) - a.logZ)) }.reduce(0, +))
        }
        return (sx, p, terms)
    }

    /// The emulated device against the CPU: the fused op on both, loss and gradient within the bounds above.
    func expectSoftCrossEntropyMatchesTheCPU(_ what: String, seed: UInt64, _ xShape: [Int], _ tShape: [Int], scale: Float = 6,
                                             _ views: (Tensor, Tensor) -> (Tensor, Tensor),
                                             sourceLocation: SourceLocation = #_sourceLocation) {
        var rng = KernelRNG(seed: seed)
        let xs = (0..<xShape.reduce(1, *)).map { _ in rng.uniform(-scale, scale) }
        let ts = (0..<tShape.reduce(1, *)).map { _ in rng.uniform(-scale, scale) }
        let c = softCrossEntropyRun(on: .cpu, xs, xShape, ts, tShape, views)
        let g = softCrossEntropyRun(on: device, xs, xShape, ts, tShape, views)
        #expect(c.fused && g.fused, "\(what): the fused op recorded the loss (cpu \(c.fused), cuda \(g.fused))", sourceLocation: sourceLocation)
        #expect(c.x == g.x && c.t == g.t, "\(what): the same views on both devices", sourceLocation: sourceLocation)
        let cols = views(Tensor.empty(xShape), Tensor.empty(tShape)).0.shape.last!, rows = c.x.count / cols
        let (sx, p, terms) = softCrossEntropyMagnitudes(c.x, c.t, cols: cols)
        let lossScale = 0.75 * terms.reduce(0, +) / Double(rows), gradientScale = 0.75 / Double(rows)
        expectWithin(c.loss, g.loss, { _ in CUDAKernelsATests.softCrossEntropyBound * lossScale }, "\(what): loss", sourceLocation: sourceLocation)
        expectWithin(c.gradient, g.gradient, { CUDAKernelsATests.softCrossEntropyBound * (sx[$0] + p[$0]) * gradientScale }, "\(what): gradient",
                     sourceLocation: sourceLocation)
    }

    /// HASTE's case in miniature: the student's logits narrowed to the first h of H heads, the teacher's [n, h', T+1,
    /// T+1] logits without their class row and column (and narrowed to h heads where h' > h, as Losses.attention
    /// does), neither contiguous: rows of 1 column, a width that is no multiple of 32 and one over 256 (threads hold
    /// more than one column each).
    @Test func softCrossEntropyOfHASTEViewsMatchesTheCPU() {
        for (n, heads, h, teacherHeads, tokens) in [(2, 3, 2, 2, 1), (2, 3, 2, 2, 7), (2, 4, 3, 3, 33), (2, 3, 2, 3, 33), (2, 2, 1, 1, 300)] {
            expectSoftCrossEntropyMatchesTheCPU("n \(n) H \(heads) h \(h) teacher \(teacherHeads) T \(tokens)", seed: UInt64(tokens),
                                                [n, heads, tokens, tokens], [n, teacherHeads, tokens + 1, tokens + 1]) { xb, tb in
                let x = xb.narrowed(1, start: 0, length: h)
                let t = tb.narrowed(1, start: 0, length: h).narrowed(2, start: 1, length: tokens).narrowed(3, start: 1, length: tokens)
                #expect(!x.isContiguous && !t.isContiguous)
                return (x, t)
            }
        }
    }

    /// Contiguous rows of every width class: 1, under a warp, no multiple of 32, exactly 256, past one column per
    /// thread, and past the 4 columns a thread holds in registers (1 500 and 3 000: the re-read tail).
    @Test func softCrossEntropyOfContiguousRowsMatchesTheCPU() {
        for (rows, cols) in [(5, 1), (7, 7), (9, 33), (4, 256), (3, 300), (3, 1_500), (2, 3_000)] {
            expectSoftCrossEntropyMatchesTheCPU("[\(rows), \(cols)]", seed: UInt64(cols), [rows, cols], [rows, cols]) { ($0, $1) }
        }
    }

    /// Row layouts beyond HASTE's: permuted outer axes, a target broadcast over rows (stride 0), four outer axes
    /// that do not coalesce (the kernel's most), and five (the view is first copied into contiguous rows).
    @Test func softCrossEntropyOfOtherRowLayoutsMatchesTheCPU() {
        expectSoftCrossEntropyMatchesTheCPU("permuted", seed: 5, [4, 3, 37], [3, 4, 37]) { xb, tb in
            (xb.permuted([1, 0, 2]), tb)
        }
        expectSoftCrossEntropyMatchesTheCPU("broadcast target", seed: 6, [6, 5, 19], [1, 19]) { xb, tb in
            (xb, tb.expanded([6, 5, 19]))
        }
        let four = { (t: Tensor) in
            t.narrowed(1, start: 1, length: 2).narrowed(2, start: 0, length: 2).narrowed(3, start: 1, length: 3).narrowed(4, start: 1, length: 40)
        }
        expectSoftCrossEntropyMatchesTheCPU("4 outer axes", seed: 7, [2, 3, 3, 4, 42], [2, 3, 3, 4, 41]) { xb, tb in
            let (x, t) = (four(xb), four(tb))
            #expect(CUDABackend.coalesce(Array(x.shape.dropLast()), [Array(x.strides.dropLast())]).0.count == 4)
            return (x, t)
        }
        let five = { (t: Tensor) in
            (0..<5).reduce(t) { v, a in v.narrowed(a, start: 1, length: 2) }.narrowed(5, start: 0, length: 33)
        }
        expectSoftCrossEntropyMatchesTheCPU("5 outer axes (copied)", seed: 8, [3, 3, 3, 3, 3, 34], [3, 3, 3, 3, 3, 33]) { xb, tb in
            let (x, t) = (five(xb), five(tb))
            #expect(CUDABackend.coalesce(Array(x.shape.dropLast()), [Array(x.strides.dropLast())]).0.count == 5)
            return (x, t)
        }
    }

    /// More rows than blocks (65 535), so blocks go on to further rows: each view's walk adds the grid's stride to
    /// the row's digits with carries through all four outer axes (the logits narrowed on every axis, the target's
    /// axes permuted).
    @Test func softCrossEntropyWalksRowsPastTheGrid() {
        expectSoftCrossEntropyMatchesTheCPU("83 700 rows", seed: 9, [11, 10, 31, 32, 3], [31, 30, 9, 10, 2]) { xb, tb in
            let x = xb.narrowed(0, start: 1, length: 10).narrowed(1, start: 1, length: 9).narrowed(2, start: 0, length: 30)
                .narrowed(3, start: 1, length: 31).narrowed(4, start: 1, length: 2)
            return (x, tb.permuted([3, 2, 1, 0, 4]))
        }
    }

    /// Rows with extreme values, kernel against kernel (per-row loss and difference): targets spread over ±1 000 (most
    /// probabilities underflow to 0), −∞ target logits (p = 0 there) and a one-hot target, logits spread over ±1 000,
    /// shifted by 10⁴ or all equal at −10³⁰, targets of ±3·10³⁸ (t − max t overflows to −∞); a −∞ logit where
    /// p > 0 makes the loss +∞ on both, one where p = 0 makes it NaN on both (0·−∞, as torch). Every other row
    /// must be finite, within the bounds above plus 2⁻¹²⁶ absolute (an exponential in the subnormal range may flush).
    @Test func softCrossEntropyExtremeRowsMatchTheCPU() {
        var rng = KernelRNG(seed: 61)
        let cols = 40, rows = 10
        var xs = (0..<rows * cols).map { _ in rng.uniform(-4, 4) }, ts = (0..<rows * cols).map { _ in rng.uniform(-4, 4) }
        for c in 0..<cols {
            ts[c] = rng.uniform(-1_000, 1_000)                               // row 0
            if c % 7 == 3 { ts[cols + c] = -.infinity }                     // row 1
            ts[2 * cols + c] = c == 11 ? 5 : -.infinity                     // row 2: one-hot
            xs[3 * cols + c] = rng.uniform(-1_000, 1_000)                   // row 3
            xs[4 * cols + c] += 10_000                                      // row 4
            xs[5 * cols + c] = -1e30                                        // row 5
            ts[6 * cols + c] = c % 2 == 0 ? 3e38 : -3e38                    // row 6
        }
        xs[7 * cols + 4] = -.infinity                                       // row 7: loss +∞
        xs[8 * cols + 9] = -.infinity; ts[8 * cols + 9] = -.infinity        // row 8: loss NaN
        let (xc, xg) = both(xs, [rows, cols]), (tc, tg) = both(ts, [rows, cols])
        let layout = RowLayout(outerShape: [rows], outerStrides: [cols])
        let (lc, lg) = empties([rows]), (dc, dg) = empties([rows, cols])
        cpu.softCrossEntropyForward(x: xc.buffer, xRows: layout, t: tc.buffer, tRows: layout, rows: rows, cols: cols,
                                    loss: lc.buffer, difference: dc.buffer)
        gpu.softCrossEntropyForward(x: xg.buffer, xRows: layout, t: tg.buffer, tRows: layout, rows: rows, cols: cols,
                                    loss: lg.buffer, difference: dg.buffer)
        let loss = floats(lc), difference = floats(dc)
        #expect(loss[7] == .infinity && loss[8].isNaN, "the −∞ logit rows: \(loss[7]), \(loss[8])")
        let finiteRows = (0..<rows).filter { $0 != 7 && $0 != 8 }
        #expect(finiteRows.allSatisfy { loss[$0].isFinite }, "\(loss)")
        #expect(finiteRows.allSatisfy { r in (0..<cols).allSatisfy { difference[r * cols + $0].isFinite } })
        let (sx, p, terms) = softCrossEntropyMagnitudes(xs, ts, cols: cols)
        expectWithin(loss, floats(lg), { CUDAKernelsATests.softCrossEntropyBound * terms[$0] + 0x1p-126 }, "extreme rows: loss")
        expectWithin(difference, floats(dg), { CUDAKernelsATests.softCrossEntropyBound * (sx[$0] + p[$0]) + 0x1p-126 }, "extreme rows: difference")
    }

    /// Two runs of the same loss and gradient on the emulated device give the same bits (fixed reduction trees, no
    /// atomics), HASTE's views and the re-read tail alike.
    @Test func softCrossEntropyIsBitwiseReproducible() {
        for (shape, views) in [([2, 3, 33, 33], { (t: Tensor) in t.narrowed(1, start: 0, length: 2).narrowed(2, start: 1, length: 32) }),
                               ([3, 2_000], { (t: Tensor) in t.narrowed(1, start: 3, length: 1_100) })] {
            var rng = KernelRNG(seed: 71)
            let xs = (0..<shape.reduce(1, *)).map { _ in rng.uniform(-6, 6) }, ts = (0..<shape.reduce(1, *)).map { _ in rng.uniform(-6, 6) }
            let runs = (0..<2).map { _ in softCrossEntropyRun(on: device, xs, shape, ts, shape) { (views($0), views($1)) } }
            #expect(runs[0].fused)
            #expect(runs[0].loss.map(\.bitPattern) == runs[1].loss.map(\.bitPattern), "\(shape): loss")
            #expect(runs[0].gradient.map(\.bitPattern) == runs[1].gradient.map(\.bitPattern), "\(shape): gradient")
        }
    }
}
