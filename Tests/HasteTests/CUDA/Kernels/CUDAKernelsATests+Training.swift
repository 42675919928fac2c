import Testing
import Foundation
import HasteTensor
@testable import HasteCUDA

/// Optimizer and embedding kernels, and an autograd graph, against the CPU (bounds: CUDAKernelsATests).
extension CUDAKernelsATests {
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

    /// Through the Tensor API a bad label ends the process at the next read, naming the op (the GPU path: the
    /// kernel sets the error word, `synchronize` reports it), never a crash or an out-of-bounds read.
    @Test func badLabelsEndTheProcessWithTheirMessage() async {
        let embedding = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let w = Tensor([Float](repeating: 1, count: 12), shape: [4, 3], device: EmulatedCUDA.device)
            _ = Tensor.embedding(w, Tensor([Int64(2), 4], device: EmulatedCUDA.device)).to(.cpu)
        }
        #expect(trapMessage(embedding).contains("embedding: an index is outside [0, rows)"), "\(trapMessage(embedding))")
        let loss = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let logits = Tensor([Float](repeating: 0, count: 6), shape: [2, 3], device: EmulatedCUDA.device)
            _ = logits.crossEntropy(targets: Tensor([Int32(0), -1], device: EmulatedCUDA.device)).item()
        }
        #expect(trapMessage(loss).contains("cross_entropy: a target class is outside [0, classes)"), "\(trapMessage(loss))")
    }

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

    /// The pieces of a `chunk` add their gradients into one running sum (NarrowBackward): on the GPU with one
    /// binary add and one strided copy per piece instead of an axpy per row (adaLN's chunk(6) of [N, 6·D]). The
    /// sums are the CPU's, bit for bit (y + 1·x either way), for 1 row (the axpy path), several rows, and pieces
    /// used in a different order than they were cut.
    @Test func chunkGradientsAddIntoOneSumBitwiseAsOnTheCPU() {
        var rng = KernelRNG(seed: 61)
        for rows in [1, 5] {
            let xv = values(rows * 12, &rng, specials: false), gv = (0..<3).map { _ in values(rows * 4, &rng, specials: false) }
            func run(_ dev: Device) -> Tensor {
                let x = Tensor(xv, shape: [rows, 12], device: dev)
                x.requiresGrad = true
                let pieces = x.chunk(3, axis: 1)
                let terms = [2, 0, 1].map { (pieces[$0] * Tensor(gv[$0], shape: [rows, 4], device: dev)).sum() }
                let loss = terms[0] + terms[1] + terms[2]
                loss.backward()
                return x.grad!
            }
            expectSameBytes(run(.cpu), run(device), "chunk(3) gradient of [\(rows), 12]")
        }
    }
}

