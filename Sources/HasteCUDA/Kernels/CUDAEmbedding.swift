import HasteTensor

extension CUDABackend {
    /// The embedding family's CUDA C++ (empty until written).
    static let embeddingSource = KernelSource(family: "embedding", kernels: [], code: "")

    public func embeddingForward(weight: Buffer, indices: Buffer, out: Buffer, rows: Int, dim: Int, count: Int) { unimplemented() }
    public func embeddingBackward(dy: Buffer, indices: Buffer, dWeight: Buffer, rows: Int, dim: Int, count: Int) { unimplemented() }
}
