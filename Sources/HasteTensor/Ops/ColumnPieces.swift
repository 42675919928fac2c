/// The k column pieces of an (N, k·D) tensor as k contiguous (N, D) tensors with one gradient: adaLN's modulation
/// (`x.chunk(k, axis: 1)` in torch), whose shift, scale and gate pieces the fused kernels read contiguous.
extension Tensor {
    /// `chunk(k, axis: 1)` of an (N, k·D) tensor, each piece contiguous: one copy into (k, N, D), whose slices are the
    /// pieces. Backward: the walk holds the pieces' gradients until the last piece in its order, then gathers them
    /// side by side into the (N, k·D) gradient in one pass (`GatheredPieceBackward`; rounded to bf16 by that pass
    /// where the walk offers it, as a `LowGradientBackward` would), where each piece's `NarrowBackward` scattered
    /// itself into a zero-filled (k, N, D) running sum (a fill, a copy, k − 1 adds) that a copy took back to
    /// (N, k·D) and a cast rounded. The values of chunk's gradient: torch's cat of the pieces' gradients (zeros for a
    /// piece with none), so a −0 stays −0 in every piece.
    public func columnPieces(_ k: Int) -> [Tensor] {
        require(rank == 2 && k > 0 && shape[1] % k == 0, "columnPieces: \(k) pieces of the columns of \(shape) (an (N, k·D) tensor)")
        let n = shape[0], d = shape[1] / k
        let laid = GradMode.withoutGrad { reshaped([n, k, d]).transposed(0, 1).contiguous() }   // (k, N, D)
        let group = ColumnPieceGroup()
        return (0..<k).map { i in
            Tensor(storage: laid.storage, shape: [n, d], offset: laid.offset + i * n * d, dtype: dtype)
                .recorded(ColumnPieceBackward(x: self, group: group, index: i, pieces: k))
        }
    }
}

/// What the k pieces of one `columnPieces` call share: the walk's key for gathering their gradients.
final class ColumnPieceGroup {}

/// Piece `index` of `pieces` column pieces of x (N, pieces·D).
struct ColumnPieceBackward: GatheredPieceBackward {
    let x: Tensor, group: ColumnPieceGroup, index: Int, pieces: Int
    var inputs: [Tensor] { [x] }
    var groupID: ObjectIdentifier { ObjectIdentifier(group) }

    /// This piece's gradient alone (zeros elsewhere): what a walk that does not gather would add up.
    func gradients(_ dy: Tensor) -> [Tensor?] {
        var terms = [Tensor?](repeating: nil, count: pieces)
        terms[index] = dy
        return [gathered(terms, low: nil)]
    }

    /// x's gradient: the pieces' gradients side by side (nil: zeros), float32 as x, or rounded to `low` in the same pass.
    /// The walk hands each piece's gradient in the piece's dtype (x's), contiguous.
    func gathered(_ terms: [Tensor?], low: DType?) -> Tensor {
        let n = x.shape[0], d = x.shape[1] / pieces
        let out = Tensor.empty(x.shape, dtype: low ?? x.dtype, device: x.device)
        let backend = out.backend
        if backend.gatherColumns(terms.map { $0?.buffer }, rows: n, width: d, into: out.buffer) { return out }
        // Each piece copied into its columns (zeros first where one is missing), then rounded in one cast where asked.
        let wide = low == nil ? out : Tensor.empty(x.shape, dtype: x.dtype, device: x.device)
        if terms.contains(where: { $0 == nil }) { backend.fill(wide.buffer, count: wide.count, value: 0) }
        for (i, part) in terms.enumerated() {
            guard let part else { continue }
            backend.stridedCopy(from: part.buffer, srcStrides: [d, 1], to: Buffer(storage: wide.storage, offset: wide.offset + i * d, dtype: wide.dtype),
                                dstStrides: [pieces * d, 1], shape: [n, d])
        }
        if wide !== out { backend.cast(from: wide.buffer, to: out.buffer, count: out.count) }
        return out
    }
}
