import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// modulatedLayerNorm's backward with dshift and dscale summed in the by-warp dx pass (CUDAFusedMLNSums.swift) gives
/// the bits of the dx kernel plus the partials kernel (`HASTE_FUSED_MLN_PARTIALS=0`) and of the block-per-row
/// kernels (`HASTE_ROW_WARP=0`): every register width, float32 and bf16 dy, with and without the residual, tokens
/// not a multiple of the 8-row chunk, several items, columns not a multiple of 32, and a one-block grid (its warps
/// take further chunks by grid stride: each chunk's sums start from zero again).
@Suite struct FusedMLNSumsTests {
    static let dev = EmulatedCUDA.device

    /// dx, dshift and dscale as bit patterns, for each dy dtype and residual.
    static func run(batch: Int, tokens: Int, cols: Int) -> [[UInt32]] {
        let be = EmulatedCUDA.backend, rows = batch * tokens
        let x = RowWarpNormTests.values(rows, cols, seed: UInt64(cols) + 1)
        let dy = x * 0.5 + 0.25 + RowWarpNormTests.values(rows, cols, seed: UInt64(cols) + 9) * 0.01
        let shift = RowWarpNormTests.values(batch, cols, seed: 15) * 0.1, scale = RowWarpNormTests.values(batch, cols, seed: 16) * 0.1
        let y = Tensor.empty([rows, cols], dtype: .float32, device: dev)
        let mean = Tensor.empty([rows], dtype: .float32, device: dev), rstd = Tensor.empty(like: mean)
        be.modulatedLayerNormForward(x.buffer, shift: shift.buffer, scale: scale.buffer, y.buffer, mean: mean.buffer,
                                     rstd: rstd.buffer, batch: batch, tokens: tokens, cols: cols, eps: 1e-6)
        var out: [[UInt32]] = []
        for g in [dy, dy.to(.bfloat16)] {
            for residual in [nil, RowWarpNormTests.values(rows, cols, seed: 18)] {
                let dx = Tensor.empty([rows, cols], dtype: .float32, device: dev)
                let dshift = Tensor.empty([batch, cols], dtype: .float32, device: dev), dscale = Tensor.empty(like: dshift)
                be.modulatedLayerNormBackward(x.buffer, scale: scale.buffer, mean: mean.buffer, rstd: rstd.buffer, g.buffer, dx: dx.buffer,
                                              residual: residual?.buffer, dshift: dshift.buffer, dscale: dscale.buffer,
                                              batch: batch, tokens: tokens, cols: cols)
                out += [floatBits(dx), floatBits(dshift), floatBits(dscale)]
            }
        }
        return out
    }

    @Test func sumsInTheDxPassGiveThePartialsKernelsBits() {
        for (batch, tokens, cols, blocks) in [(2, 13, 33, 65_535), (3, 8, 500, 65_535), (2, 19, 768, 65_535), (2, 17, 1152, 65_535), (2, 9, 1200, 65_535),
                                              (3, 21, 100, 1), (1, 5, 1, 65_535)] {
            let fused = CUDABackend.$fusedMLNPartialsAllowed.withValue(true) {
                CUDABackend.$rowWarpMaxBlocks.withValue(blocks) { Self.run(batch: batch, tokens: tokens, cols: cols) }
            }
            let separate = CUDABackend.$fusedMLNPartialsAllowed.withValue(false) { Self.run(batch: batch, tokens: tokens, cols: cols) }
            let block = CUDABackend.$rowWarpAllowed.withValue(false) { Self.run(batch: batch, tokens: tokens, cols: cols) }
            for (other, name) in [(separate, "the partials kernel"), (block, "the block kernels")] {
                #expect(fused.count == other.count)
                for (i, (a, b)) in zip(fused, other).enumerated() {
                    let differing = zip(a, b).filter { $0 != $1 }.count
                    #expect(a.count == b.count && differing == 0,
                            "\(["dx", "dshift", "dscale"][i % 3]) (case \(i / 3)) [\(batch), \(tokens), \(cols)] against \(name): \(differing) of \(a.count) differ")
                }
            }
        }
    }

    /// With `dscaleLow` (Autocast bf16's half-blocks) dscale comes rounded to bf16 from the column sums: the unrounded
    /// call's dscale rounded (`roundedValues`), dx and dshift untouched; every way on the emulated device (the sums in
    /// the dx pass, the partials kernel, the block rows) and the CPU.
    @Test func aRoundedDscaleIsTheSumRounded() {
        func run(_ device: Device, batch: Int, tokens: Int, cols: Int) -> Bool {
            let be = device.backend, rows = batch * tokens
            let x = RowWarpNormTests.values(rows, cols, seed: 3).to(device)
            let dy = (RowWarpNormTests.values(rows, cols, seed: 4) * 0.3).to(device)
            let scale = (RowWarpNormTests.values(batch, cols, seed: 5) * 0.1).to(device)
            let mean = Tensor.empty([rows], dtype: .float32, device: device), rstd = Tensor.empty(like: mean)
            be.modulatedLayerNormForward(x.buffer, shift: scale.buffer, scale: scale.buffer, Tensor.empty(like: x).buffer, mean: mean.buffer,
                                         rstd: rstd.buffer, batch: batch, tokens: tokens, cols: cols, eps: 1e-6)
            var got: [[UInt32]] = []
            for low in [nil, DType.bfloat16] {
                let dx = Tensor.empty(like: x), dshift = Tensor.empty(like: scale), dscale = Tensor.empty(like: scale)
                be.modulatedLayerNormBackward(x.buffer, scale: scale.buffer, mean: mean.buffer, rstd: rstd.buffer, dy.buffer, dx: dx.buffer,
                                              residual: nil, dshift: dshift.buffer, dscale: dscale.buffer, batch: batch, tokens: tokens,
                                              cols: cols, dscaleLow: low)
                got += [floatBits(dx), floatBits(dshift), floatBits(low == nil ? dscale.roundedValues(.bfloat16) : dscale)]
                if low == nil { got.append(floatBits(dscale)) }
            }
            // got: dx, dshift, dscale rounded after, dscale as summed; dx, dshift, dscale rounded by the call
            return got[0] == got[4] && got[1] == got[5] && got[2] == got[6] && got[3] != got[6]
        }
        for (batch, tokens, cols) in [(2, 13, 33), (2, 17, 1152)] {
            #expect(run(.cpu, batch: batch, tokens: tokens, cols: cols), "CPU [\(batch), \(tokens), \(cols)]")
            for (sums, warp) in [(true, true), (false, true), (false, false)] {
                let ok = CUDABackend.$fusedMLNPartialsAllowed.withValue(sums) {
                    CUDABackend.$rowWarpAllowed.withValue(warp) { run(Self.dev, batch: batch, tokens: tokens, cols: cols) }
                }
                #expect(ok, "sums in dx pass \(sums), rows by warp \(warp): [\(batch), \(tokens), \(cols)]")
            }
        }
    }

    /// With `roundedScale` the forward reads bf16(1 + scale) − 1 in scale's place and writes it for the backward: the
    /// output, mean, rstd and rounded scale are those of `roundThrough(…, shift: 1)` followed by the plain forward, bit
    /// for bit, rows by warp and by block, float32 and bf16 output, on the emulated device (and float32 on the CPU); with no tokens
    /// the rounded scale is still written.
    @Test func aRoundedScaleIsTheRoundThroughsBits() {
        func run(_ device: Device, batch: Int, tokens: Int, cols: Int, y16: Bool) -> Bool {
            let be = device.backend, rows = batch * tokens
            let x = RowWarpNormTests.values(rows, cols, seed: 6).to(device)
            let shift = (RowWarpNormTests.values(batch, cols, seed: 7) * 0.1).to(device)
            let scale = (RowWarpNormTests.values(batch, cols, seed: 8) * 0.7).to(device)
            var got: [[UInt32]] = []
            for fused in [false, true] {
                let y = Tensor.empty([rows, cols], dtype: y16 ? .bfloat16 : .float32, device: device)
                let mean = Tensor.empty([rows], dtype: .float32, device: device), rstd = Tensor.empty(like: mean)
                let rounded = Tensor.empty([batch, cols], dtype: .float32, device: device)
                if !fused { be.roundThrough(scale.buffer, rounded.buffer, low: .bfloat16, count: batch * cols, shift: 1) }
                be.modulatedLayerNormForward(x.buffer, shift: shift.buffer, scale: fused ? scale.buffer : rounded.buffer, y.buffer,
                                             mean: mean.buffer, rstd: rstd.buffer, batch: batch, tokens: tokens, cols: cols, eps: 1e-6,
                                             roundedScale: fused ? rounded.buffer : nil)
                got += [floatBits(y.to(.float32)), floatBits(mean), floatBits(rstd), floatBits(rounded)]
            }
            return got[0...3] == got[4...7] && floatBits(scale) != got[3]
        }
        for (batch, tokens, cols) in [(2, 13, 33), (3, 5, 1152), (2, 0, 40)] {
            for y16 in [false, true] {
                if !y16 {                                    // the CPU's forward writes float32 y only
                    #expect(run(.cpu, batch: batch, tokens: tokens, cols: cols, y16: false), "CPU [\(batch), \(tokens), \(cols)]")
                }
                for warp in [true, false] {
                    let ok = CUDABackend.$rowWarpAllowed.withValue(warp) { run(Self.dev, batch: batch, tokens: tokens, cols: cols, y16: y16) }
                    #expect(ok, "rows by warp \(warp): [\(batch), \(tokens), \(cols)] y16 \(y16)")
                }
            }
        }
    }

    /// A host-only device of its own (its launch counts are exact while other suites run in parallel).
    static let hostOnly = hostOnlyDevice(16)

    /// One launch for dx and the chunk sums (and the column reduce): SiT-XL/2's rows at batch 2, its dynamic shared
    /// memory (8 warps × 2 × 32·36 floats); the partials kernel where the sums are not wanted is not launched either.
    @Test func oneLaunchForDxAndTheSums() {
        CUDABackend.$fusedMLNPartialsAllowed.withValue(true) {
            CUDABackend.$rowWarpAllowed.withValue(true) {
                let (dev, driver) = Self.hostOnly
                let (batch, tokens, cols) = (2, 256, 1152)
                let x = Tensor.empty([batch * tokens, cols], dtype: .float32, device: dev), dx = Tensor.empty(like: x)
                let dy = Tensor.empty([batch * tokens, cols], dtype: .bfloat16, device: dev)
                let scale = Tensor.empty([batch, cols], dtype: .float32, device: dev), dshift = Tensor.empty(like: scale), dscale = Tensor.empty(like: scale)
                let mean = Tensor.empty([batch * tokens], dtype: .float32, device: dev), rstd = Tensor.empty(like: mean)
                let be = x.backend
                driver.resetCounts()
                be.modulatedLayerNormBackward(x.buffer, scale: scale.buffer, mean: mean.buffer, rstd: rstd.buffer, dy.buffer, dx: dx.buffer,
                                              residual: x.buffer, dshift: dshift.buffer, dscale: dscale.buffer, batch: batch, tokens: tokens, cols: cols)
                #expect(driver.launches == ["fused_mln_backward_dx_partials_dy16_w36": 1, "fused_column_reduce": 1], "\(driver.launches)")
                let launch = driver.lastLaunch["fused_mln_backward_dx_partials_dy16_w36"]
                #expect(launch?.grid.x == 8 && launch?.sharedBytes == 73_728, "\(String(describing: launch))")   // 64 chunks of 8 rows, 8 a block
                driver.resetCounts()
                be.modulatedLayerNormBackward(x.buffer, scale: scale.buffer, mean: mean.buffer, rstd: rstd.buffer, dy.buffer, dx: dx.buffer,
                                              residual: nil, dshift: nil, dscale: nil, batch: batch, tokens: tokens, cols: cols)
                #expect(driver.launches == ["fused_mln_backward_dx_dy16_w36": 1], "\(driver.launches)")
            }
        }
    }
}
