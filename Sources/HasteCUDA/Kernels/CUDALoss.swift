import HasteTensor

extension CUDABackend {
    /// The loss family's CUDA C++ (empty until written).
    static let lossSource = KernelSource(family: "loss", kernels: [], code: "")

    public func crossEntropyForward(_ logits: Buffer, targets: Buffer, loss: Buffer, rows: Int, classes: Int) { unimplemented() }
    public func crossEntropyBackward(_ logits: Buffer, targets: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, classes: Int) { unimplemented() }
}
