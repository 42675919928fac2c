import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The LayerNorm kernels by warp (CUDANormWarp.swift: eight rows a block, the row in registers) give the bits of the
/// block-per-row kernels (`HASTE_ROW_WARP=0`): layerNorm forward (with and without weight and bias) and dx, the
/// modulated LayerNorm forward (float32 and bf16 y) and dx (float32 and bf16 dy, with and without the residual),
/// at every register width and past it (the block kernels), columns not a multiple of 32 or 256, several items and
/// more rows than a block's eight; rows of large offset, constant rows (variance 0) and signed zeros.
@Suite struct RowWarpNormTests {
    static let dev = EmulatedCUDA.device

    /// rows × cols random values times `scale`, each passed through `special(row, column, value)` (the row kernels'
    /// tests' rows of special values).
    static func values(_ rows: Int, _ cols: Int, seed: UInt64, scale: Float = 2,
                       _ special: (Int, Int, Float) -> Float = RowWarpNormTests.normRows) -> Tensor {
        var rng = SplitMix64(seed: seed)
        let v = rng.floats(rows * cols).enumerated().map { special($0.offset / cols, $0.offset % cols, $0.element * scale) }
        return Tensor(v, shape: [rows, cols]).to(dev)
    }

    /// Row 1 constant, row 2 offset by 1e4, row 3 zeros of both signs.
    static func normRows(_ r: Int, _ j: Int, _ v: Float) -> Float {
        r == 1 ? 0.75 : r == 2 ? v + 10_000 : r == 3 ? (j % 2 == 0 ? 0 : -0.0) : v
    }


    /// Every output of the kernels above for one shape, as bit patterns.
    static func run(rows: Int, cols: Int, tokens: Int) -> [[UInt32]] {
        let be = EmulatedCUDA.backend, batch = rows / tokens
        // dy ≈ x/2 + 1/4: without a weight, g − mean(g) − x̂·mean(g·x̂) nearly cancels, so dx carries the last bits
        // of both row sums (independent dy would hide them below dx's rounding).
        let x = values(rows, cols, seed: UInt64(cols)), dy = x * 0.5 + 0.25 + values(rows, cols, seed: UInt64(cols) + 7) * 0.001
        let w = values(1, cols, seed: 3).reshaped([cols]), b = values(1, cols, seed: 4).reshaped([cols])
        var out: [[UInt32]] = []
        for (weight, bias) in [(w, b), (w, nil), (nil, b), (nil, nil)] as [(Tensor?, Tensor?)] {
            let y = Tensor.empty(like: x), mean = Tensor.empty([rows], dtype: .float32, device: dev), rstd = Tensor.empty(like: mean)
            be.layerNormForward(x.buffer, weight: weight?.buffer, bias: bias?.buffer, y.buffer, mean: mean.buffer, rstd: rstd.buffer,
                                rows: rows, cols: cols, eps: 1e-6)
            let dx = Tensor.empty(like: x)
            be.layerNormBackward(x.buffer, weight: weight?.buffer, mean: mean.buffer, rstd: rstd.buffer, dy.buffer, dx: dx.buffer,
                                 dweight: nil, dbias: nil, rows: rows, cols: cols)
            out += [floatBits(y), floatBits(mean), floatBits(rstd), floatBits(dx)]
        }
        let shift = values(batch, cols, seed: 5) * 0.1, scale = values(batch, cols, seed: 6) * 0.1
        for low in [false, true] {
            let y = Tensor.empty([rows, cols], dtype: low ? .bfloat16 : .float32, device: dev)
            let mean = Tensor.empty([rows], dtype: .float32, device: dev), rstd = Tensor.empty(like: mean)
            be.modulatedLayerNormForward(x.buffer, shift: shift.buffer, scale: scale.buffer, y.buffer, mean: mean.buffer,
                                         rstd: rstd.buffer, batch: batch, tokens: tokens, cols: cols, eps: 1e-6)
            out += [floatBits(y), floatBits(mean), floatBits(rstd)]
            let g = low ? dy.to(.bfloat16) : dy, resid = values(rows, cols, seed: 8)
            for residual in [nil, resid] {
                let dx = Tensor.empty(like: x)
                be.modulatedLayerNormBackward(x.buffer, scale: scale.buffer, mean: mean.buffer, rstd: rstd.buffer, g.buffer, dx: dx.buffer,
                                              residual: residual?.buffer, dshift: nil, dscale: nil, batch: batch, tokens: tokens, cols: cols)
                out.append(floatBits(dx))
            }
        }
        return out
    }

    @Test func warpRowsGiveTheBlockKernelsBits() {
        // 1…512: _w16, 513…768: _w24, 769…1152: _w36 (SiT-XL/2's 1152), 1153…1280: _w40, 1281: the block kernels
        // either way; the last case on a one-block grid (its 8 warps go on to rows 8…18 by grid stride).
        for (rows, cols, tokens, blocks) in [(19, 1, 19, 65_535), (18, 33, 9, 65_535), (12, 257, 4, 65_535), (10, 500, 5, 65_535),
                                             (9, 768, 3, 65_535), (7, 801, 7, 65_535), (8, 1152, 4, 65_535), (5, 1153, 5, 65_535),
                                             (6, 1280, 2, 65_535), (4, 1281, 2, 65_535), (19, 100, 19, 1)] {
            let block = CUDABackend.$rowWarpAllowed.withValue(false) { Self.run(rows: rows, cols: cols, tokens: tokens) }
            let warp = CUDABackend.$rowWarpAllowed.withValue(true) {
                CUDABackend.$rowWarpMaxBlocks.withValue(blocks) { Self.run(rows: rows, cols: cols, tokens: tokens) }
            }
            #expect(warp.count == block.count)
            for (i, (a, b)) in zip(warp, block).enumerated() {
                let differing = zip(a, b).filter { $0 != $1 }.count
                #expect(a.count == b.count && differing == 0, "output \(i), \(rows) × \(cols): \(differing) of \(a.count) differ")
            }
        }
    }

    /// The entry point and grid by width: eight rows a block by warp up to 1 280 columns.
    @Test func warpEntryPointsByWidth() {
        CUDABackend.$rowWarpAllowed.withValue(true) { Self.entryPointsByWidth() }   // whatever HASTE_ROW_WARP says
    }

    static func entryPointsByWidth() {
        #expect(CUDABackend.rowWarpSuffix(cols: 384) == "_w16" && CUDABackend.rowWarpSuffix(cols: 768) == "_w24")
        #expect(CUDABackend.rowWarpSuffix(cols: 1152) == "_w36" && CUDABackend.rowWarpSuffix(cols: 1153) == "_w40")
        #expect(CUDABackend.rowWarpSuffix(cols: 1280) == "_w40" && CUDABackend.rowWarpSuffix(cols: 1281) == "")
        #expect(CUDABackend.$rowWarpAllowed.withValue(false) { CUDABackend.rowWarpSuffix(cols: 1152) } == "")
        let shape = CUDABackend.rowLaunch(16_384, warp: true)
        #expect(shape.grid.x == 2048 && shape.block.x == 256 && CUDABackend.rowLaunch(16_384, warp: false).grid.x == 16_384)
    }
}
