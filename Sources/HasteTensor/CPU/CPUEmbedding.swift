/// Embedding kernels (Ops/Embedding.swift): the lookup is a row gather, the gradient a scatter-add that
/// walks the indices in order inside column chunks each thread owns (CPU/CPUMovement.swift's helpers).
extension CPUBackend {
    public func embeddingForward(weight: Buffer, indices: Buffer, out: Buffer, rows: Int, dim: Int, count: Int) {
        CPUBackend.checkIndices(indices, count: count, limit: rows, "embedding", "a table of V = \(rows) rows")
        switch weight.dtype {
        case .float32: CPUBackend.gather(Float.self, weight, indices, out, outer: 1, size: rows, inner: dim, count: count)
        case .float64: CPUBackend.gather(Double.self, weight, indices, out, outer: 1, size: rows, inner: dim, count: count)
        default: fatalError("embedding: unsupported weight dtype \(weight.dtype)")
        }
    }

    public func embeddingBackward(dy: Buffer, indices: Buffer, dWeight: Buffer, rows: Int, dim: Int, count: Int) {
        CPUBackend.checkIndices(indices, count: count, limit: rows, "embedding backward", "a table of V = \(rows) rows")
        switch dWeight.dtype {
        case .float32: CPUBackend.scatterAdd(Float.self, dy, indices, dWeight, outer: 1, size: rows, inner: dim, count: count)
        case .float64: CPUBackend.scatterAdd(Double.self, dy, indices, dWeight, outer: 1, size: rows, inner: dim, count: count)
        default: fatalError("embedding backward: unsupported dtype \(dWeight.dtype)")
        }
    }
}
