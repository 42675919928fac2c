import HasteTensor

extension CUDABackend {
    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double, a: Buffer, lda: Int, strideA: Int, b: Buffer, ldb: Int, strideB: Int, beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) { unimplemented() }
}
