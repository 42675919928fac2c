import HasteTensor

extension CUDABackend {
    public func fill(_ dst: Buffer, count: Int, value: Double) { unimplemented() }
    public func stridedCopy(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) { unimplemented() }
    public func cast(from src: Buffer, to dst: Buffer, count: Int) { unimplemented() }
}
