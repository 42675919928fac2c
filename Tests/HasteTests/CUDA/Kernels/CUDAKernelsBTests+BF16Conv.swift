import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// Autocast bf16 conv2d and differentiable matmul on CUDA: real bf16 GEMMs forward and backward (bf16 column
/// matrices for conv), against the CPU composite (operands rounded, float32 op, output and gradients rounded).
extension CUDAKernelsBTests {
    /// Odd sizes, stride 2, per-axis padding, non-square kernels, the pointwise case (x is its own column matrix),
    /// the patch-embedding case (kernel = stride) and a column budget that splits the batch into groups (the last
    /// one partial). bf16 GEMMs: forward one per column group, dx one per group, dw one per image.
    @Test func autocastConv2dWithGradientsRunsBF16GemmsOnCUDA() {
        var rng = TestRNG(seed: 91)
        func t(_ shape: [Int]) -> Tensor { Tensor(rng.floats(shape.reduce(1, *)), shape: shape) }
        let cases: [(String, [Tensor], stride: Int, padding: (Int, Int), budget: Int, gemms: Int)] = [
            ("3×3 stride 2 padding (1, 2) +bias", [t([3, 3, 9, 7]), t([5, 3, 3, 3]), t([5])], 2, (1, 2), ConvColumns.budget, 1 + 1 + 3),
            ("3×2 stride 1 padding (1, 0), groups of 2 images", [t([3, 2, 7, 9]), t([4, 2, 3, 2]), t([4])], 1, (1, 0),
             2 * (2 * 3 * 2) * (7 * 8), 2 + 2 + 3),
            ("1×1 pointwise, no bias", [t([2, 5, 3, 5]), t([3, 5, 1, 1])], 1, (0, 0), ConvColumns.budget, 1 + 1 + 2),
            ("2×2 patch embedding +bias", [t([2, 4, 6, 6]), t([7, 4, 2, 2]), t([7])], 2, (0, 0), ConvColumns.budget, 1 + 1 + 2),
        ]
        for (name, inputs, stride, padding, budget, gemms) in cases {
            func conv(_ v: [Tensor]) -> Tensor {
                v[0].conv2d(v[1], v.count > 2 ? v[2] : nil, stride: stride, padding: padding, columnBudget: budget)
            }
            Self.expectAutocastGradients("conv2d \(name)", inputs, bf16Gemms: gemms, conv)
            // Real bf16 tensors (no gradient): bf16 columns and GEMM on both backends, the composite's values.
            let composite = GradMode.withoutGrad { Autocast.run(.bfloat16) { conv(inputs) } }
            let narrow = inputs.map { $0.to(.bfloat16) }
            Self.expectBF16Close(conv(narrow).to(.float32), composite, "conv2d \(name), bf16 tensors on the CPU")
            let gpu = conv(narrow.map { $0.to(EmulatedCUDA.device) })
            #expect(gpu.dtype == .bfloat16, "conv2d \(name): bf16 tensors on CUDA give \(gpu.dtype)")
            Self.expectBF16Close(gpu.to(.cpu).to(.float32), composite, "conv2d \(name), bf16 tensors on the emulator")
        }
    }

    /// matmul with gradients: three bf16 GEMMs (forward, dA, dB); a broadcast operand's gradient is summed over the
    /// broadcast batch axes in float32 and rounded once, as the composite does.
    @Test func autocastMatmulWithGradientsRunsBF16GemmsOnCUDA() {
        var rng = TestRNG(seed: 92)
        func t(_ shape: [Int]) -> Tensor { Tensor(rng.floats(shape.reduce(1, *)), shape: shape) }
        let cases: [(String, [Tensor], ([Tensor]) -> Tensor)] = [
            ("batched", [t([2, 3, 13, 9]), t([2, 3, 9, 6])], { $0[0].matmul($0[1]) }),
            ("3-D · 2-D (B broadcast over the batch)", [t([3, 13, 9]), t([9, 7])], { $0[0].matmul($0[1]) }),
            ("Aᵀ with a size-1 batch axis · B", [t([2, 1, 9, 5]), t([2, 3, 9, 4])], { $0[0].transposed(-1, -2).matmul($0[1]) }),
        ]
        for (name, inputs, op) in cases {
            Self.expectAutocastGradients("matmul \(name)", inputs, bf16Gemms: 3, op)
        }
    }

    /// The column matrix conv2d builds is x's dtype: bf16 columns take half the bytes of float32 ones for the same
    /// group of images (here 2 images × 27 rows × 20 pixels: 4320 bytes of float32, 2160 of bf16).
    @Test func bf16ColumnMatrixIsHalfTheFloat32One() {
        var rng = TestRNG(seed: 93)
        let x = Tensor(rng.floats(2 * 3 * 9 * 7), shape: [2, 3, 9, 7]).to(EmulatedCUDA.device)
        let g = ConvGeometry(input: x.shape, weight: [5, 3, 3, 3], stride: 2, padding: (1, 1))
        func columnBytes(_ x: Tensor) -> [Int] {
            var bytes: [Int] = []
            ConvColumns.forEachGroup(x, g, budget: ConvColumns.budget) { _, _, cols in bytes.append(cols.storage.byteCount) }
            return bytes
        }
        #expect(g.patchSize == 27 && g.outPixels == 20)
        #expect(columnBytes(x) == [4320])
        #expect(columnBytes(x.to(.bfloat16)) == [2160])
    }
}
