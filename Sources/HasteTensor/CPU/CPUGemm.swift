import COpenBLAS

/// GEMM through OpenBLAS: one cblas call per batch item (Debian's 0.3.21 has no sgemm_batch, and
/// nesting BLAS threads inside our own pool oversubscribes: STYLE §4.9).
extension CPUBackend {
    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                     a: Buffer, lda: Int, strideA: Int, b: Buffer, ldb: Int, strideB: Int,
                     beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        if m == 0 || n == 0 { return }
        let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
        if k == 0 {   // BLAS leaves C untouched only for beta = 1; scale explicitly like torch
            if beta == 0 { fill(c, count: batch == 1 ? m * ldc : batch * strideC, value: 0) }
            return
        }
        for i in 0..<batch {
            switch c.dtype {
            case .float32:
                cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), Float(alpha),
                            a.pointer(Float.self) + i * strideA, Int32(lda), b.pointer(Float.self) + i * strideB, Int32(ldb),
                            Float(beta), c.pointer(Float.self) + i * strideC, Int32(ldc))
            case .float64:
                cblas_dgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), alpha,
                            a.pointer(Double.self) + i * strideA, Int32(lda), b.pointer(Double.self) + i * strideB, Int32(ldb),
                            beta, c.pointer(Double.self) + i * strideC, Int32(ldc))
            default: fatalError("gemm: unsupported dtype \(c.dtype)")
            }
        }
    }
}
