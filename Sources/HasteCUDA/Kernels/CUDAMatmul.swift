import HasteTensor

/// GEMMs through the driver's strided-batched GEMM (cuBLAS on a GPU). haste's call is row-major; cuBLAS's is
/// column-major. A row-major matrix with leading dimension ld is, read column-major, its transpose with the
/// same ld, so row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: the operands swap places, m and n
/// swap, and each operand keeps its own transpose flag (Bᵀ stored row-major is B read column-major, and so on).
extension CUDABackend {
    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double, a: Buffer, lda: Int, strideA: Int,
                     b: Buffer, ldb: Int, strideB: Int, beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        requireFloat32(a, "gemm"); requireFloat32(b, "gemm"); requireFloat32(c, "gemm")
        rowMajorGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha), a: address(a), lda: lda,
                     strideA: strideA, b: address(b), ldb: ldb, strideB: strideB, beta: Float(beta), c: address(c),
                     ldc: ldc, strideC: strideC, batch: batch)
    }

    /// The row-major strided-batched float32 GEMM on device addresses (also used by the attention kernels on
    /// their workspaces). Nothing is queued for an empty C. For k = 0 the driver's GEMM computes C = beta·C
    /// (cuBLAS follows BLAS: beta = 0 writes zeros without reading C), which is the CPU backend's result.
    func rowMajorGemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: DevicePointer, lda: Int,
                      strideA: Int, b: DevicePointer, ldb: Int, strideB: Int, beta: Float, c: DevicePointer, ldc: Int,
                      strideC: Int, batch: Int) {
        if m == 0 || n == 0 || batch == 0 { return }
        driver.gemm(GemmDescriptor(transA: transB, transB: transA, m: n, n: m, k: k, alpha: alpha, beta: beta,
                                   a: b, lda: ldb, strideA: strideB,
                                   b: a, ldb: lda, strideB: strideA,
                                   c: c, ldc: ldc, strideC: strideC, batch: batch))
    }
}
