import HasteTensor

extension CUDABackend {
    /// The elementwise family's CUDA C++ (empty until written).
    static let elementwiseSource = KernelSource(family: "elementwise", kernels: [], code: "")

    public func binary(_ op: BinaryOp, _ a: Buffer, _ aStrides: [Int], _ b: Buffer, _ bStrides: [Int], _ out: Buffer, shape: [Int]) { unimplemented() }
    public func unary(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int) { unimplemented() }
    public func unaryBackward(_ op: UnaryOp, x: Buffer, y: Buffer, dy: Buffer, dx: Buffer, count: Int) { unimplemented() }
    public func axpy(alpha: Double, x: Buffer, y: Buffer, count: Int) { unimplemented() }
}
