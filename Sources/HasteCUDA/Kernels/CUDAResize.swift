import HasteTensor

extension CUDABackend {
    /// The resize family's CUDA C++ (empty until written).
    static let resizeSource = KernelSource(family: "resize", kernels: [], code: "")

    public func upsampleNearest2x(x: Buffer, y: Buffer, planes: Int, height: Int, width: Int) { unimplemented() }
    public func upsampleNearest2xBackward(dy: Buffer, dx: Buffer, planes: Int, height: Int, width: Int) { unimplemented() }
    public func resample(_ filter: ResizeFilter, x: Buffer, y: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int) { unimplemented() }
    public func resampleBackward(_ filter: ResizeFilter, dy: Buffer, dx: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int) { unimplemented() }
}
