import HasteTensor

extension CUDABackend {
    /// The attention family's CUDA C++ (empty until written).
    static let attentionSource = KernelSource(family: "attention", kernels: [], code: "")

    public func attentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape: AttentionShape, scale: Double) { unimplemented() }
    public func attentionBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double) { unimplemented() }
    public func softmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, shape: AttentionShape) { unimplemented() }
    public func softmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?, shape: AttentionShape) { unimplemented() }
}
