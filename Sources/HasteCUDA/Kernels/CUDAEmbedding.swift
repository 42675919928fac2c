import HasteTensor

extension CUDABackend {
    public func embeddingForward(weight: Buffer, indices: Buffer, out: Buffer, rows: Int, dim: Int, count: Int) { unimplemented() }
    public func embeddingBackward(dy: Buffer, indices: Buffer, dWeight: Buffer, rows: Int, dim: Int, count: Int) { unimplemented() }
}
