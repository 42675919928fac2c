import Foundation
import HasteTensor

/// GEMMs through the driver's strided-batched GEMM (cuBLAS on a GPU). haste's call is row-major; cuBLAS's is
/// column-major. A row-major matrix with leading dimension ld is, read column-major, its transpose with the
/// same ld, so row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: the operands swap places, m and n
/// swap, and each operand keeps its own transpose flag (Bᵀ stored row-major is B read column-major, and so on).
extension CUDABackend {
    /// The one GEMM case not sent to cuBLAS: an empty inner dimension (k = 0), where BLAS defines C = beta·C
    /// (zeros for beta = 0, C never read): written here rather than relying on every cuBLAS version's k = 0 path.
    static let matmulSource = KernelSource(family: "matmul", kernels: ["gemm_scale_c"], code: #"""
    /// C[b, i, j] = beta·C[b, i, j] (0 when beta = 0) over batch × m × n, rows ldc apart, matrices strideC apart.
    extern "C" __global__ void gemm_scale_c(float* c, i64 batch, i64 m, i64 n, i64 ldc, i64 strideC, float beta) {
        HASTE_GRID_STRIDE_LOOP(e, batch * m * n) {
            i64 j = e % n, i = (e / n) % m, b = e / (n * m);
            float* p = c + b * strideC + i * ldc + j;
            *p = beta == 0.0f ? 0.0f : beta * *p;
        }
    }
    """#)

    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double, a: Buffer, lda: Int, strideA: Int,
                     b: Buffer, ldb: Int, strideB: Int, beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        require(a.dtype == b.dtype && GemmDescriptor.supports(inputs: a.dtype, output: c.dtype),
                "gemm: \(a.dtype) × \(b.dtype) → \(c.dtype) (the CUDA backend multiplies float32 × float32 → float32 "
                + "and bfloat16 × bfloat16 → float32 or bfloat16)")
        if k == 0 && c.dtype == .bfloat16 {   // C = beta·C in bf16: only what linear/matmul ask for (beta 0 or 1)
            require(beta == 0 || beta == 1, "gemm: k = 0 into a bfloat16 C with beta \(beta)")
            if beta == 0 && m > 0 && n > 0 && batch > 0 { fill(c, count: batch == 1 ? m * ldc : batch * strideC, value: 0) }
            return
        }
        rowMajorGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha), a: address(a), lda: lda,
                     strideA: strideA, b: address(b), ldb: ldb, strideB: strideB, beta: Float(beta), c: address(c),
                     ldc: ldc, strideC: strideC, batch: batch, inputs: a.dtype, output: c.dtype)
    }

    /// A linear layer's forward with its bias: one GEMM whose epilogue adds the bias (`GPUDriver.gemm(_:epilogue:)`,
    /// cuBLASLt, as PyTorch's `addmm`), where the composite would write the bias into every row of y and have the
    /// GEMM read it back (two passes over y: for SiT-XL/2 at batch 64 in bf16, 340 MB a block). The same values
    /// (the bias added in float32 before y's one rounding); the composite where the driver turns the GEMM down.
    public func linearWithBias(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer, y: Buffer) {
        if CUDABackend.biasEpilogueAllowed && rows > 0 && inF > 0 && outF > 0 && bias.dtype == y.dtype && x.dtype == weight.dtype
            && GemmDescriptor.supports(inputs: x.dtype, output: y.dtype)
            && driver.gemm(GemmDescriptor(transA: true, transB: false, m: outF, n: rows, k: inF, alpha: 1, beta: 0,
                                          a: address(weight), lda: inF, strideA: 0, b: address(x), ldb: inF, strideB: 0,
                                          c: address(y), ldc: outF, strideC: 0, batch: 1, inputs: x.dtype, output: y.dtype),
                           epilogue: .bias(address(bias))) {
            return
        }
        linearWithBiasComposite(rows: rows, inF: inF, outF: outF, x: x, weight: weight, bias: bias, y: y)
    }

    /// `HASTE_GEMM_BIAS_EPILOGUE=0`: every linear adds its bias by copy and beta 1 (the composite), for comparisons
    /// (both give the same values; a test switches it for its own task: `$biasEpilogueAllowed.withValue`).
    @TaskLocal static var biasEpilogueAllowed = ProcessInfo.processInfo.environment["HASTE_GEMM_BIAS_EPILOGUE"] != "0"

    /// The row-major strided-batched GEMM (float32, or bf16 operands: `GemmDescriptor`) on device addresses (also used by the attention kernels on
    /// their workspaces). Nothing is queued for an empty C, nor for k = 0 with beta = 1.
    func rowMajorGemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: DevicePointer, lda: Int,
                      strideA: Int, b: DevicePointer, ldb: Int, strideB: Int, beta: Float, c: DevicePointer, ldc: Int,
                      strideC: Int, batch: Int, inputs: DType = .float32, output: DType = .float32) {
        if m == 0 || n == 0 || batch == 0 { return }
        if k == 0 {
            if beta == 1 { return }
            let count = batch * m * n
            launch(CUDABackend.matmulSource, "gemm_scale_c", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256), [
                .pointer(c), .int64(Int64(batch)), .int64(Int64(m)), .int64(Int64(n)), .int64(Int64(ldc)),
                .int64(Int64(strideC)), .float(beta),
            ])
            return
        }
        driver.gemm(GemmDescriptor(transA: transB, transB: transA, m: n, n: m, k: k, alpha: alpha, beta: beta,
                                   a: b, lda: ldb, strideA: strideB, b: a, ldb: lda, strideB: strideA,
                                   c: c, ldc: ldc, strideC: strideC, batch: batch, inputs: inputs, output: output))
    }
}
