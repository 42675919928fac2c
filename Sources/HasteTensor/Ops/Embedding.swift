/// Kernels of the Embedding family: row lookup and its deterministic scatter-add gradient.
public protocol EmbeddingKernels: AnyObject {
    /// out[n, :] = weight[indices[n], :] for n < count; weight [rows, dim] and out [count, dim] contiguous
    /// float, indices int32 or int64. Traps on an index outside [0, rows), naming embedding, index and V.
    func embeddingForward(weight: Buffer, indices: Buffer, out: Buffer, rows: Int, dim: Int, count: Int)
    /// dWeight[indices[n], :] += dy[n, :], accumulated into dWeight [rows, dim] (the caller zeroes it).
    /// Repeated indices add up in index order for every element: no races, bitwise reproducible.
    func embeddingBackward(dy: Buffer, indices: Buffer, dWeight: Buffer, rows: Int, dim: Int, count: Int)
}

extension Tensor {
    /// torch: `F.embedding(indices, weight)`. weight [V, D] (float), indices int64/int32 of any shape
    /// → [..., D]. The gradient reaches weight only (dense [V, D], zero for rows never looked up).
    public static func embedding(_ weight: Tensor, _ indices: Tensor) -> Tensor {
        require(weight.rank == 2 && weight.dtype.isComputeFloat,
                     "embedding: weight must be a 2-D float tensor [V, D], got \(weight.dtype) \(weight.shape)")
        require(indices.dtype == .int64 || indices.dtype == .int32,
                     "embedding: indices must be int64 or int32, got \(indices.dtype) \(indices.shape)")
        require(weight.device == indices.device, "embedding: weight on \(weight.device), indices on \(indices.device)")
        let w = weight.contiguous(), idx = indices.contiguous()
        let rows = weight.shape[0], dim = weight.shape[1]
        let out = Tensor.empty(indices.shape + [dim], dtype: weight.dtype, device: weight.device)
        if idx.count > 0 {   // validates indices even when D = 0
            out.backend.embeddingForward(weight: w.buffer, indices: idx.buffer, out: out.buffer, rows: rows, dim: dim,
                                         count: idx.count)
        }
        return out.recorded(EmbeddingBackward(weight: weight, indices: idx))
    }
}

/// Saves the (contiguous) indices; the gradient is a dense [V, D] scatter-add of dy's rows.
struct EmbeddingBackward: Backward {
    let weight: Tensor, indices: Tensor
    var inputs: [Tensor] { [weight] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dw = Tensor.zeros(weight.shape, dtype: dy.dtype, device: dy.device)
        if dy.count > 0 {
            dw.backend.embeddingBackward(dy: dy.contiguous().buffer, indices: indices.buffer, dWeight: dw.buffer,
                                         rows: weight.shape[0], dim: weight.shape[1], count: indices.count)
        }
        return [dw]
    }
}
