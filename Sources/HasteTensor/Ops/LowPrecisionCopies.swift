import Foundation

/// Low-precision copies of many tensors made in one pass (a model's parameter arena cast to bf16 at once:
/// `ParameterStore.lowPrecisionCopies`), for the ops of a scope to read instead of casting each tensor when they
/// narrow it (`Tensor.narrowed(_:)`, the bf16 operands of Autocast's GEMMs on CUDA). The same values as the casts
/// (each element rounded by the same kernel), in one launch where SiT-XL/2's training step made ~290 (one per
/// weight and bias). Valid while the tensors' values do not change: a training step installs it around its
/// forward (`LowPrecisionCopies.$current.withValue`), where the parameters are read and never written. A copy is
/// found by what a tensor views — its storage, offset and element count, contiguous — so a contiguous view of a
/// source (a conv weight read as [D, C·k·k]) gets the copy in its own shape, and a tensor re-pointed elsewhere
/// (`ParameterStore.move`) none.
public final class LowPrecisionCopies: @unchecked Sendable {
    /// The copies the running task's narrowing reads first (nil: every narrowing casts).
    @TaskLocal public static var current: LowPrecisionCopies?
    /// `HASTE_ARENA_CAST=0`: no store makes them (each narrowing casts its tensor, as before; the same values), for
    /// comparisons on a GPU; tests switch it per task.
    @TaskLocal public static var arenaCastAllowed = ProcessInfo.processInfo.environment["HASTE_ARENA_CAST"] != "0"

    public let dtype: DType
    /// Where a source's elements start: its storage (held, so the identifier stays its own) and element offset.
    private struct Key: Hashable { let storage: ObjectIdentifier, offset: Int }
    private var copies: [Key: (storage: Storage, copy: Tensor)] = [:]

    /// `pairs`: each source tensor (contiguous) and its copy (`dtype`, the source's shape), made from the source's
    /// current values.
    public init(dtype: DType, pairs: [(source: Tensor, copy: Tensor)]) {
        self.dtype = dtype
        for (source, copy) in pairs {
            require(copy.dtype == dtype && copy.shape == source.shape && source.isContiguous && copy.isContiguous,
                    "LowPrecisionCopies: \(source.shape) \(source.dtype) with a copy \(copy.shape) \(copy.dtype)")
            copies[Key(storage: ObjectIdentifier(source.storage), offset: source.offset)] = (source.storage, copy)
        }
    }

    /// `body` with `t` added to the running task's copies (cast now, once), where narrowing would read it: Autocast
    /// bf16 on CUDA (`arenaCastAllowed`), `t` float32. For an activation many ops narrow and none writes in `body`:
    /// SiT's silu(c), the input of every block's adaLN modulation GEMM.
    public static func with<R>(_ t: Tensor, _ body: () -> R) -> R {
        guard arenaCastAllowed, Autocast.current == .bfloat16, case .cuda = t.device, t.dtype == .float32, t.isContiguous else {
            return body()
        }
        let mine = LowPrecisionCopies(dtype: .bfloat16, pairs: [(t, GradMode.withoutGrad { t.narrowed(.bfloat16) })])
        return $current.withValue(current?.merged(with: mine) ?? mine, operation: body)
    }

    /// These copies and `other`'s (both of `dtype`; nil ones are skipped).
    public func merged(with other: LowPrecisionCopies?) -> LowPrecisionCopies {
        guard let other else { return self }
        require(other.dtype == dtype, "LowPrecisionCopies: merging \(other.dtype) copies into \(dtype) ones")
        let m = LowPrecisionCopies(dtype: dtype, pairs: [])
        m.copies = copies.merging(other.copies) { a, _ in a }
        return m
    }

    public var count: Int { copies.count }

    /// Counts the copies handed out in the running task (tests: that a path reads them).
    final class Tally: @unchecked Sendable { var served = 0 }
    @TaskLocal static var tally: Tally?

    /// `t`'s copy (in t's shape), where one of dtype `low` was made of the elements t views.
    func copy(of t: Tensor, _ low: DType) -> Tensor? {
        guard low == dtype, t.isContiguous, let c = copies[Key(storage: ObjectIdentifier(t.storage), offset: t.offset)],
              c.copy.count == t.count else { return nil }
        LowPrecisionCopies.tally?.served += 1
        return c.copy.shape == t.shape ? c.copy : c.copy.reshaped(t.shape)
    }
}
