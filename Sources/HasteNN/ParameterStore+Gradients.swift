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
