import HasteTensor

extension CUDABackend {
    /// Softmax over rows of bfloat16 values (the aligned attention's probabilities under autocast bf16,
    /// `Tensor.autocastAdaLNAttentionWithLogits`), kernels of the softmax family (CUDASoftmax.swift): the float32
    /// kernels' code on the widened values (exact), the same block size and reduction tree, each result rounded once
    /// to nearest even — so the results are the float32 kernels' on a float32 carrier of the same values, rounded, bit
    /// for bit. Forward y = bf16(softmax(x)); backward dx = bf16(y·(dy − Σ dy·y)), a bf16 tensor (the gradient autograd
    /// adds to the logits' other one, as torch adds two bf16 gradients: Graph.swift `gradientSum`).
    public func softmaxForwardLow(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) -> Bool {
        guard x.dtype == .bfloat16, y.dtype == .bfloat16 else { return false }
        if rows * cols == 0 { return true }
        softmaxRows("softmax_forward_bf16", [.pointer(address(x)), .pointer(address(y)), .int64(Int64(rows)), .int64(Int64(cols))],
                    rows: rows, cols: cols, repeatable: CUDABackend.separate(outputs: [y], inputs: [x]))
        return true
    }

    public func softmaxBackwardLow(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) -> Bool {
        guard y.dtype == .bfloat16, dy.dtype == .bfloat16, dx.dtype == .bfloat16 else { return false }
        if rows * cols == 0 { return true }
        softmaxRows("softmax_backward_bf16", [.pointer(address(y)), .pointer(address(dy)), .pointer(address(dx)),
                                                      .int64(Int64(rows)), .int64(Int64(cols))],
                    rows: rows, cols: cols, repeatable: CUDABackend.separate(outputs: [dx], inputs: [y, dy]))
        return true
    }
}
