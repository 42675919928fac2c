import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// gatedResidual's backward in one pass (`fused_gated_backward_both*`: the partials kernel's `haste_partials` writing
/// dy too, CUDAFusedGatedBackward.swift) gives the bits of the dy kernel and the partials kernel it replaces
/// (`HASTE_FUSED_GATED_BACKWARD=0`): float32, Autocast bf16 on float32 carriers, and with y, dy or both in bf16; tokens
/// below, at and past a chunk (64) and not a multiple of the four rows loaded at once, odd columns, several items;
/// and the one pass runs exactly when both are wanted. dgate is the same code either way (its values against the
/// CPU: CUDAFusedTests); dy is checked against the dy kernel's own expression.
@Suite struct FusedGatedBackwardTests {
    static let dev = EmulatedCUDA.device


    /// dy and dgate for one shape and variant (y16: y bf16; d16: dy bf16; low: Autocast bf16 rounding).
    static func run(batch: Int, tokens: Int, cols: Int, low: Bool, y16: Bool, d16: Bool) -> [[UInt32]] {
        let be = EmulatedCUDA.backend
        // dout with a spread of magnitudes, so bf16(dout) and the rounded products differ from the float32 ones.
        let dout = (Tensor.randn([batch * tokens, cols], seed: 201) * Tensor.randn([batch * tokens, cols], seed: 202).exp()).to(dev)
        let gate = Tensor.randn([batch, cols], seed: 203).to(dev)
        let yf = Tensor.randn([batch * tokens, cols], seed: 204).to(dev)
        let y = y16 ? yf.to(.bfloat16) : yf
        let dy = Tensor.empty([batch * tokens, cols], dtype: d16 ? .bfloat16 : .float32, device: dev)
        let dgate = Tensor.empty([batch, cols], dtype: .float32, device: dev)
        be.gatedResidualBackward(gate: gate.buffer, y.buffer, dout.buffer, dy: dy.buffer, dgate: dgate.buffer,
                                 batch: batch, tokens: tokens, cols: cols, low: low ? .bfloat16 : nil)
        return [floatBits(dy), floatBits(dgate)]
    }

    @Test func onePassGivesTheTwoKernelsBits() {
        let variants = [(false, false, false), (true, false, false), (true, true, false), (true, false, true), (true, true, true)]
        for (batch, tokens, cols) in [(1, 1, 7), (2, 5, 33), (3, 64, 40), (2, 67, 129), (1, 130, 16), (2, 256, 72)] {
            for (low, y16, d16) in variants {
                let two = CUDABackend.$fusedGatedBackwardAllowed.withValue(false) {
                    Self.run(batch: batch, tokens: tokens, cols: cols, low: low, y16: y16, d16: d16)
                }
                let one = CUDABackend.$fusedGatedBackwardAllowed.withValue(true) {
                    Self.run(batch: batch, tokens: tokens, cols: cols, low: low, y16: y16, d16: d16)
                }
                for (i, name) in ["dy", "dgate"].enumerated() {
                    let differing = zip(one[i], two[i]).filter { $0 != $1 }.count
                    #expect(one[i].count == two[i].count && differing == 0,
                            "\(name) [\(batch), \(tokens), \(cols)] low \(low) y16 \(y16) d16 \(d16): \(differing) of \(two[i].count) differ")
                }
            }
        }
    }

    /// Both wanted: one `fused_gated_backward_both*` launch (and the column reduce), no dy or partials kernel; dy or
    /// dgate alone: their own kernels, as before.
    /// A host-only device of its own (nothing computed: launches counted).
    static let hostOnly = hostOnlyDevice(14)

    @Test func onePassRunsExactlyWhenBothAreWanted() {
        CUDABackend.$fusedGatedBackwardAllowed.withValue(true) {
            let (dev, driver) = Self.hostOnly
            let (batch, tokens, cols) = (2, 256, 1152)
            let gate = Tensor.empty([batch, cols], dtype: .float32, device: dev), dgate = Tensor.empty(like: gate)
            let dout = Tensor.empty([batch * tokens, cols], dtype: .float32, device: dev)
            let y = Tensor.empty([batch * tokens, cols], dtype: .bfloat16, device: dev), dy = Tensor.empty(like: y)
            let be = dout.backend
            driver.resetCounts()
            be.gatedResidualBackward(gate: gate.buffer, y.buffer, dout.buffer, dy: dy.buffer, dgate: dgate.buffer,
                                     batch: batch, tokens: tokens, cols: cols, low: .bfloat16)
            #expect(driver.launches == ["fused_gated_backward_both_bf16_y16_d16": 1, "fused_column_reduce": 1], "\(driver.launches)")
            driver.resetCounts()
            be.gatedResidualBackward(gate: gate.buffer, y.buffer, dout.buffer, dy: dy.buffer, dgate: nil,
                                     batch: batch, tokens: tokens, cols: cols, low: .bfloat16)
            be.gatedResidualBackward(gate: gate.buffer, y.buffer, dout.buffer, dy: nil, dgate: dgate.buffer,
                                     batch: batch, tokens: tokens, cols: cols, low: .bfloat16)
            #expect(driver.launches == ["fused_gated_backward_dy_bf16_d16": 1, "fused_gated_partials_bf16_y16": 1, "fused_column_reduce": 1],
                    "\(driver.launches)")
            CUDABackend.$fusedGatedBackwardAllowed.withValue(false) {
                driver.resetCounts()
                be.gatedResidualBackward(gate: gate.buffer, y.buffer, dout.buffer, dy: dy.buffer, dgate: dgate.buffer,
                                         batch: batch, tokens: tokens, cols: cols, low: .bfloat16)
                #expect(driver.launches == ["fused_gated_backward_dy_bf16_d16": 1, "fused_gated_partials_bf16_y16": 1, "fused_column_reduce": 1],
                        "\(driver.launches)")
            }
        }
    }
}
