import HasteTensor

extension ParameterStore {
    /// Trainable parameters (registration order) with their element ranges in the gradient arena, for code that
    /// moves gradients in pieces (data parallelism's buckets). The padding between slots lies in no range.
    package var gradientSlots: [(tensor: Tensor, range: Range<Int>)] {
        entries.filter(\.isTrainable).map { ($0.tensor, $0.offset..<($0.offset + $0.tensor.count)) }
    }

    /// The whole gradient arena: `count` elements from `buffer` (trainable region, padding included).
    package var gradientArena: (buffer: Buffer, count: Int) { (gradBuffer(0), trainableEnd) }
}

extension ParameterStore {
    /// Every registered value (parameters and buffers) cast to `low` in one pass over the arena, as
    /// `LowPrecisionCopies` for a step's narrowing to read (`Tensor.narrowed`: the same cast per element, one launch
    /// instead of one per tensor). Only where narrowing runs on real low tensors: bf16 on a CUDA device (elsewhere
    /// Autocast rounds in float32 and nothing would read the copies); nil otherwise, and for a store without an arena.
    public func lowPrecisionCopies(_ low: DType) -> LowPrecisionCopies? {
        guard LowPrecisionCopies.arenaCastAllowed, low == .bfloat16, case .cuda = device, isFinalized, !shapesOnly,
              let arena, dtype == .float32, packedWeights.isEmpty else { return nil }
        let count = arena.byteCount / dtype.byteSize
        let all = noGrad { Tensor(storage: arena, shape: [count], offset: 0, dtype: dtype).to(low) }
        return LowPrecisionCopies(dtype: low, pairs: entries.map { e in
            (e.tensor, Tensor(storage: all.storage, shape: e.tensor.shape, offset: e.offset, dtype: low))
        })
    }
}
