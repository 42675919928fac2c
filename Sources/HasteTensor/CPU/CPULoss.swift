/// Cross-entropy kernels. Rows run in parallel over fixed chunks; each row's log-sum-exp reuses the softmax
/// row helpers. The mean over rows is summed serially in row order (N values), so it is reproducible.
extension CPUBackend {
    public func crossEntropyForward(_ logits: Buffer, targets: Buffer, loss: Buffer, rows: Int, classes: Int) {
        CPUBackend.checkIndices(targets, count: rows, limit: classes, "crossEntropy", "logits [\(rows), \(classes)]")
        switch (logits.dtype, targets.dtype) {
        case (.float32, .int64): crossEntropy(logits.pointer(Float.self), targets.pointer(Int64.self), loss.pointer(Float.self), rows, classes)
        case (.float32, .int32): crossEntropy(logits.pointer(Float.self), targets.pointer(Int32.self), loss.pointer(Float.self), rows, classes)
        case (.float64, .int64): crossEntropy(logits.pointer(Double.self), targets.pointer(Int64.self), loss.pointer(Double.self), rows, classes)
        case (.float64, .int32): crossEntropy(logits.pointer(Double.self), targets.pointer(Int32.self), loss.pointer(Double.self), rows, classes)
        default: fatalError("crossEntropyForward: unsupported dtypes \(logits.dtype), \(targets.dtype)")
        }
    }

    public func crossEntropyBackward(_ logits: Buffer, targets: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, classes: Int) {
        switch (logits.dtype, targets.dtype) {
        case (.float32, .int64):
            crossEntropyBackward(logits.pointer(Float.self), targets.pointer(Int64.self), dy.pointer(Float.self)[0], dx.pointer(Float.self), rows, classes)
        case (.float32, .int32):
            crossEntropyBackward(logits.pointer(Float.self), targets.pointer(Int32.self), dy.pointer(Float.self)[0], dx.pointer(Float.self), rows, classes)
        case (.float64, .int64):
            crossEntropyBackward(logits.pointer(Double.self), targets.pointer(Int64.self), dy.pointer(Double.self)[0], dx.pointer(Double.self), rows, classes)
        case (.float64, .int32):
            crossEntropyBackward(logits.pointer(Double.self), targets.pointer(Int32.self), dy.pointer(Double.self)[0], dx.pointer(Double.self), rows, classes)
        default: fatalError("crossEntropyBackward: unsupported dtypes \(logits.dtype), \(targets.dtype)")
        }
    }

    /// Targets are validated by `crossEntropyForward` (checkIndices: a trap names the position and value); computes each row's
    /// (m − x[t]) + log Σ exp(x − m) in parallel — m subtracted first keeps the log term's digits for large
    /// logits — and sums the rows in row order.
    private func crossEntropy<T: SoftmaxExp, I: FixedWidthInteger>(_ x: UnsafeMutablePointer<T>, _ t: UnsafeMutablePointer<I>,
                                                                    _ loss: UnsafeMutablePointer<T>, _ rows: Int, _ classes: Int) {
        let perRow = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(rows, 1))
        defer { perRow.deallocate() }
        let px = SendablePointer(x), pt = SendablePointer(t), pl = SendablePointer(perRow)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / classes)) { range in
            for r in range {
                let row = px.base + r * classes
                let m = rowMax(row, classes)
                pl.base[r] = (m - row[Int(pt.base[r])]) + T.log(sumExpShifted(row, classes, m, store: nil))
            }
        }
        var total: T = 0
        for r in 0..<rows { total += perRow[r] }
        loss[0] = total / T(rows)
    }

    private func crossEntropyBackward<T: SoftmaxExp, I: FixedWidthInteger>(_ x: UnsafeMutablePointer<T>, _ t: UnsafeMutablePointer<I>,
                                                                            _ dy: T, _ dx: UnsafeMutablePointer<T>,
                                                                            _ rows: Int, _ classes: Int) {
        let px = SendablePointer(x), pt = SendablePointer(t), pdx = SendablePointer(dx)
        let scale = dy / T(rows)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / classes)) { range in
            for r in range {
                let o = r * classes
                let d = pdx.base + o
                softmaxRow(px.base + o, d, classes)
                d[Int(pt.base[r])] -= 1
                for c in 0..<classes { d[c] *= scale }
            }
        }
    }
}
