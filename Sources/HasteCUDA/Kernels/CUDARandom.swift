import HasteTensor

extension CUDABackend {
    /// The random family's CUDA C++ (empty until written).
    static let randomSource = KernelSource(family: "random", kernels: [], code: "")

    public func fillUniform(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) { unimplemented() }
    public func fillNormal(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) { unimplemented() }
}
