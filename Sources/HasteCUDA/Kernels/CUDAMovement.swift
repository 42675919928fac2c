import HasteTensor

extension CUDABackend {
    /// The movement family's CUDA C++ (empty until written).
    static let movementSource = KernelSource(family: "movement", kernels: [], code: "")

    public func indexSelect(_ x: Buffer, indices: Buffer, _ y: Buffer, outer: Int, size: Int, inner: Int, count: Int) { unimplemented() }
    public func indexAdd(_ dy: Buffer, indices: Buffer, _ dx: Buffer, outer: Int, size: Int, inner: Int, count: Int) { unimplemented() }
    public func select(_ condition: Buffer, _ conditionStrides: [Int], _ a: Buffer, _ aStrides: [Int], _ b: Buffer, _ bStrides: [Int], _ out: Buffer, shape: [Int]) { unimplemented() }
    public func compare(_ op: CompareOp, _ x: Buffer, scalar: Double, _ out: Buffer, count: Int) { unimplemented() }
}
