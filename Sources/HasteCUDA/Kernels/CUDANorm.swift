import HasteTensor

extension CUDABackend {
    /// The norm family's CUDA C++ (empty until written).
    static let normSource = KernelSource(family: "norm", kernels: [], code: "")

    public func layerNormForward(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, mean: Buffer, rstd: Buffer, rows: Int, cols: Int, eps: Double) { unimplemented() }
    public func layerNormBackward(_ x: Buffer, weight: Buffer?, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer, dweight: Buffer?, dbias: Buffer?, rows: Int, cols: Int) { unimplemented() }
}
