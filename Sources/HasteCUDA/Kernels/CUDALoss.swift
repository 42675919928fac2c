import HasteTensor

extension CUDABackend {
    public func crossEntropyForward(_ logits: Buffer, targets: Buffer, loss: Buffer, rows: Int, classes: Int) { unimplemented() }
    public func crossEntropyBackward(_ logits: Buffer, targets: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, classes: Int) { unimplemented() }
}
