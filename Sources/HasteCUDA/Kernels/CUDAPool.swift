import HasteTensor

extension CUDABackend {
    /// The pool family's CUDA C++ (empty until written).
    static let poolSource = KernelSource(family: "pool", kernels: [], code: "")

    public func maxPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry) { unimplemented() }
    public func avgPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry, countIncludePad: Bool) { unimplemented() }
}
