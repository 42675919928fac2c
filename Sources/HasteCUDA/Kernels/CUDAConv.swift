import HasteTensor

extension CUDABackend {
    /// The conv family's CUDA C++ (empty until written).
    static let convSource = KernelSource(family: "conv", kernels: [], code: "")

    public func im2col(x: Buffer, cols: Buffer, batch: Int, geometry: ConvGeometry) { unimplemented() }
    public func col2im(cols: Buffer, dx: Buffer, batch: Int, geometry: ConvGeometry) { unimplemented() }
}
