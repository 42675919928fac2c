import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The softmax family's rows by warp (CUDASoftmaxWarp.swift: eight rows a block, up to 256 columns) give the block
/// kernels' bits (`HASTE_ROW_WARP=0`): softmax and log-softmax forward and backward on float32, the bf16 forward and
/// the backward into a float32 carrier of bf16 values, for every block size the block kernels take (32, 64, 128,
/// 256 threads) and columns not a multiple of 32; rows with a NaN, with −∞ and of equal values.
@Suite struct SoftmaxWarpTests {
    static let dev = EmulatedCUDA.device

    static func values(_ rows: Int, _ cols: Int, seed: UInt64) -> Tensor {
        var rng = SplitMix64(seed: seed)
        var v = rng.floats(rows * cols).map { $0 * 4 }
        for j in 0..<cols {
            if rows > 1 { v[cols + j] = 1.5 }
            if rows > 2 && j % 3 == 0 { v[2 * cols + j] = -.infinity }
            if rows > 3 && j == cols / 2 { v[3 * cols + j] = .nan }
        }
        return Tensor(v, shape: [rows, cols]).to(dev)
    }

    static func bits(_ t: Tensor) -> [UInt32] { t.to(.cpu).to(.float32).scalars(as: Float.self).map(\.bitPattern) }

    static func run(rows: Int, cols: Int) -> [[UInt32]] {
        let be = EmulatedCUDA.backend
        let x = values(rows, cols, seed: UInt64(cols)), dy = values(rows, cols, seed: UInt64(cols) + 1)
        var out: [[UInt32]] = []
        let y = Tensor.empty(like: x), ly = Tensor.empty(like: x), dx = Tensor.empty(like: x), ldx = Tensor.empty(like: x)
        be.softmaxForward(x.buffer, y.buffer, rows: rows, cols: cols)
        be.logSoftmaxForward(x.buffer, ly.buffer, rows: rows, cols: cols)
        be.softmaxBackward(y.buffer, dy.buffer, dx.buffer, rows: rows, cols: cols)
        be.logSoftmaxBackward(ly.buffer, dy.buffer, ldx.buffer, rows: rows, cols: cols)
        out += [bits(y), bits(ly), bits(dx), bits(ldx)]
        let x16 = x.to(.bfloat16), y16 = Tensor.empty(like: x16), dx16 = Tensor.empty(like: x)
        #expect(be.softmaxForwardLow(x16.buffer, y16.buffer, rows: rows, cols: cols))
        #expect(be.softmaxBackwardLow(y16.buffer, dy.to(.bfloat16).buffer, dx16.buffer, rows: rows, cols: cols))
        out += [bits(y16), bits(dx16)]
        return out
    }

    @Test func warpRowsGiveTheBlockKernelsBits() {
        for cols in [1, 5, 32, 33, 64, 65, 100, 128, 129, 200, 256, 257] {
            let rows = 19
            let block = CUDABackend.$rowWarpAllowed.withValue(false) { Self.run(rows: rows, cols: cols) }
            let warp = CUDABackend.$rowWarpAllowed.withValue(true) { Self.run(rows: rows, cols: cols) }
            for (i, (a, b)) in zip(warp, block).enumerated() { #expect(a == b, "output \(i), \(rows) × \(cols)") }
        }
        let small = CUDABackend.softmaxRowLaunch(rows: 262_144, cols: 256), large = CUDABackend.softmaxRowLaunch(rows: 10, cols: 257)
        #expect(small.suffix == "_w" && small.grid.x == 32_768 && small.block.x == 256)
        #expect(large.suffix == "" && large.grid.x == 10 && large.block.x == 256)
    }
}
