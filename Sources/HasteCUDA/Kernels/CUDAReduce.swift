import HasteTensor

extension CUDABackend {
    /// The reduce family's CUDA C++ (empty until written).
    static let reduceSource = KernelSource(family: "reduce", kernels: [], code: "")

    public func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) { unimplemented() }
    public func reduceMax(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) { unimplemented() }
    public func reduceMaxBackward(_ x: Buffer, _ y: Buffer, _ dy: Buffer, _ dx: Buffer, outer: Int, reduce: Int, inner: Int) { unimplemented() }
}
