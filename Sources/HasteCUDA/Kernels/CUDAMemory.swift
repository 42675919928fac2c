import HasteTensor

extension CUDABackend {
    /// The memory family's CUDA C++ (empty until written).
    static let memorySource = KernelSource(family: "memory", kernels: [], code: "")

    public func fill(_ dst: Buffer, count: Int, value: Double) { unimplemented() }
    public func stridedCopy(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) { unimplemented() }
    public func cast(from src: Buffer, to dst: Buffer, count: Int) { unimplemented() }
}
