import HasteTensor

extension CUDABackend {
    /// The optimizer family's CUDA C++ (empty until written).
    static let optimizerSource = KernelSource(family: "optimizer", kernels: [], code: "")

    public func adamw(param: Buffer, grad: Buffer, m: Buffer, v: Buffer, count: Int, lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) { unimplemented() }
    public func emaUpdate(ema: Buffer, param: Buffer, count: Int, decay: Double) { unimplemented() }
    public func sumOfSquares(_ x: Buffer, count: Int) -> Double { unimplemented() }
    public func scale(_ x: Buffer, count: Int, by: Double) { unimplemented() }
}
