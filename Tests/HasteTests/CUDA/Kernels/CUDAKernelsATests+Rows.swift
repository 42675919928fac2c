import Testing
import Foundation
import HasteTensor
@testable import HasteCUDA

/// Softmax, log-softmax and cross-entropy kernels against the CPU (bounds: CUDAKernelsATests).
extension CUDAKernelsATests {
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
}
