import HasteTensor

extension CUDABackend {
    /// The softmax family's CUDA C++ (empty until written).
    static let softmaxSource = KernelSource(family: "softmax", kernels: [], code: "")

    public func softmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) { unimplemented() }
    public func softmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) { unimplemented() }
    public func logSoftmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) { unimplemented() }
    public func logSoftmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) { unimplemented() }
}
