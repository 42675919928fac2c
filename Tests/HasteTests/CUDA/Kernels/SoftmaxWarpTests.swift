import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The softmax family's rows by warp (CUDASoftmaxWarp.swift: eight rows a block, up to 256 columns) give the block
/// kernels' bits (`HASTE_ROW_WARP=0`): softmax and log-softmax forward and backward on float32, the bf16 forward and
/// the backward into a float32 carrier of bf16 values, for every block size the block kernels take (32, 64, 128,
/// 256 threads) and columns not a multiple of 32; rows with a NaN, with −∞ and of equal values. And the soft
/// cross-entropy's (loss and gradient) over HASTE's views, permuted rows and warps walking on past the grid.
@Suite struct SoftmaxWarpTests {
    static let dev = EmulatedCUDA.device

    /// Random rows (RowWarpNormTests.values), row 1 constant, row 2 with −∞ in every third column, row 3 a NaN.
    static func values(_ rows: Int, _ cols: Int, seed: UInt64) -> Tensor {
        RowWarpNormTests.values(rows, cols, seed: seed, scale: 4) { r, j, v in
            r == 1 ? 1.5 : r == 2 && j % 3 == 0 ? -.infinity : r == 3 && j == cols / 2 ? .nan : v
        }
    }


    static func run(rows: Int, cols: Int) -> [[UInt32]] {
        let be = EmulatedCUDA.backend
        let x = values(rows, cols, seed: UInt64(cols)), dy = values(rows, cols, seed: UInt64(cols) + 1)
        var out: [[UInt32]] = []
        let y = Tensor.empty(like: x), ly = Tensor.empty(like: x), dx = Tensor.empty(like: x), ldx = Tensor.empty(like: x)
        be.softmaxForward(x.buffer, y.buffer, rows: rows, cols: cols)
        be.logSoftmaxForward(x.buffer, ly.buffer, rows: rows, cols: cols)
        be.softmaxBackward(y.buffer, dy.buffer, dx.buffer, rows: rows, cols: cols)
        be.logSoftmaxBackward(ly.buffer, dy.buffer, ldx.buffer, rows: rows, cols: cols)
        out += [floatBits(y), floatBits(ly), floatBits(dx), floatBits(ldx)]
        let x16 = x.to(.bfloat16), y16 = Tensor.empty(like: x16), dx16 = Tensor.empty(like: x16)
        #expect(be.softmaxForwardLow(x16.buffer, y16.buffer, rows: rows, cols: cols))
        #expect(be.softmaxBackwardLow(y16.buffer, dy.to(.bfloat16).buffer, dx16.buffer, rows: rows, cols: cols))
        out += [floatBits(y16), floatBits(dx16)]
        return out
    }

    @Test func warpRowsGiveTheBlockKernelsBits() {
        for cols in [1, 5, 32, 33, 64, 65, 100, 128, 129, 200, 256, 257] {
            let rows = 19
            let block = CUDABackend.$rowWarpAllowed.withValue(false) { Self.run(rows: rows, cols: cols) }
            let warp = CUDABackend.$rowWarpAllowed.withValue(true) { Self.run(rows: rows, cols: cols) }
            for (i, (a, b)) in zip(warp, block).enumerated() {
                let differing = zip(a, b).filter { $0 != $1 }.count
                #expect(a.count == b.count && differing == 0, "output \(i), \(rows) × \(cols): \(differing) of \(a.count) differ")
            }
        }
        let (small, large) = CUDABackend.$rowWarpAllowed.withValue(true) {
            (CUDABackend.softmaxRowLaunch(rows: 262_144, cols: 256), CUDABackend.softmaxRowLaunch(rows: 10, cols: 257))
        }
        #expect(small.suffix == "_w" && small.grid.x == 32_768 && small.block.x == 256)
        #expect(large.suffix == "" && large.grid.x == 10 && large.block.x == 256)
    }

    /// The soft cross-entropy kernel on one view pair: each row's loss and the difference rows, as bits.
    /// `lowTarget`: the target's values rounded to bf16, passed as a bf16 tensor (true) or as their float32 carrier (false).
    static func crossEntropy(_ xShape: [Int], _ tShape: [Int], seed: UInt64, lowTarget: Bool? = nil, lowLogits: Bool? = nil,
                             _ views: (Tensor, Tensor) -> (Tensor, Tensor)) -> [[UInt32]] {
        var rng = SplitMix64(seed: seed)
        var xb = Tensor(rng.floats(xShape.reduce(1, *)).map { $0 * 6 }, shape: xShape).to(dev)
        var tb = Tensor(rng.floats(tShape.reduce(1, *)).map { $0 * 6 }, shape: tShape).to(dev)
        if let lowTarget { tb = lowTarget ? tb.to(.bfloat16) : tb.to(.bfloat16).to(.float32) }
        if let lowLogits { xb = lowLogits ? xb.to(.bfloat16) : xb.to(.bfloat16).to(.float32) }
        let (x, t) = views(xb, tb)
        let (xBuffer, xRows) = x.lastAxisRows()!, (tBuffer, tRows) = t.lastAxisRows()!
        let cols = x.shape.last!, rows = x.count / cols
        let loss = Tensor.empty([rows], dtype: .float32, device: dev), difference = Tensor.empty([rows, cols], dtype: .float32, device: dev)
        EmulatedCUDA.backend.softCrossEntropyForward(x: xBuffer, xRows: xRows, t: tBuffer, tRows: tRows, rows: rows, cols: cols,
                                                     loss: loss.buffer, difference: difference.buffer)
        return [floatBits(loss), floatBits(difference)]
    }

    @Test func softCrossEntropyByWarpGivesTheBlockKernelsBits() {
        let cases: [(String, [Int], [Int], (Tensor, Tensor) -> (Tensor, Tensor))] = [
            ("contiguous 7", [9, 7], [9, 7], { ($0, $1) }),
            ("contiguous 100", [5, 100], [5, 100], { ($0, $1) }),
            ("contiguous 256", [4, 256], [4, 256], { ($0, $1) }),
            ("contiguous 300 (block either way)", [3, 300], [3, 300], { ($0, $1) }),
            ("HASTE's views", [2, 4, 33, 33], [2, 3, 34, 34], { xb, tb in
                (xb.narrowed(1, start: 0, length: 3), tb.narrowed(2, start: 1, length: 33).narrowed(3, start: 1, length: 33)) }),
            ("permuted, broadcast target", [4, 3, 37], [1, 37], { xb, tb in (xb.permuted([1, 0, 2]), tb.expanded([3, 4, 37])) }),
        ]
        for (what, xs, ts, views) in cases {
            let block = CUDABackend.$rowWarpAllowed.withValue(false) { Self.crossEntropy(xs, ts, seed: 3, views) }
            let warp = CUDABackend.$rowWarpAllowed.withValue(true) { Self.crossEntropy(xs, ts, seed: 3, views) }
            #expect(warp == block, "\(what)")
        }
        // 2 blocks (16 warps) for 2 700 rows: each warp's walks carry through all four outer axes.
        let walked: (Tensor, Tensor) -> (Tensor, Tensor) = { xb, tb in
            (xb.narrowed(0, start: 1, length: 10).narrowed(1, start: 1, length: 9).narrowed(2, start: 0, length: 30), tb.permuted([2, 1, 0, 3]))
        }
        let block = CUDABackend.$rowWarpAllowed.withValue(false) { Self.crossEntropy([11, 10, 31, 5], [30, 9, 10, 5], seed: 4, walked) }
        let warp = CUDABackend.$rowWarpAllowed.withValue(true) {
            CUDABackend.$rowWarpMaxBlocks.withValue(2) { Self.crossEntropy([11, 10, 31, 5], [30, 9, 10, 5], seed: 4, walked) }
        }
        #expect(warp == block, "rows walked past the grid")
    }

    /// bf16 operands under autocast (the teacher's logits as the target: `soft_cross_entropy_f32_t16`; the student's
    /// aligned logits: `_x16`; both: `_x16_t16`) give the bits of their float32 carriers, by block and by warp, in place
    /// or copied first (rank-6 views whose axes do not coalesce).
    @Test func bf16OperandsGiveTheirFloat32CarriersBits() {
        let copied = { (t: Tensor) in t.permuted([4, 3, 2, 1, 0, 5]).contiguous().permuted([4, 3, 2, 1, 0, 5]) }
        let cases: [(String, [Int], [Int], (Tensor, Tensor) -> (Tensor, Tensor))] = [
            ("contiguous 7", [9, 7], [9, 7], { ($0, $1) }),
            ("contiguous 100", [5, 100], [5, 100], { ($0, $1) }),
            ("contiguous 300", [3, 300], [3, 300], { ($0, $1) }),
            ("HASTE's views", [2, 4, 33, 33], [2, 3, 34, 34], { xb, tb in
                (xb.narrowed(1, start: 0, length: 3), tb.narrowed(2, start: 1, length: 33).narrowed(3, start: 1, length: 33)) }),
            ("rank 6, copied", [2, 3, 2, 3, 2, 5], [2, 3, 2, 3, 2, 5], { (copied($0), copied($1)) }),
        ]
        for (what, xs, ts, views) in cases {
            for warp in [false, true] {
                for (lowLogits, lowTarget) in [(false, true), (true, false), (true, true)] {
                    let (low, carrier) = CUDABackend.$rowWarpAllowed.withValue(warp) {
                        (Self.crossEntropy(xs, ts, seed: 5, lowTarget: lowTarget, lowLogits: lowLogits, views),
                         Self.crossEntropy(xs, ts, seed: 5, lowTarget: false, lowLogits: false, views))
                    }
                    #expect(low == carrier && low[0].contains { $0 != 0 }, "\(what), warp \(warp), bf16 logits \(lowLogits), target \(lowTarget)")
                }
            }
        }
    }
}
