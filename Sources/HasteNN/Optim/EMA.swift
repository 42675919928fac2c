import HasteTensor

/// An exponential moving average of a store's values, held in a copy of its arena (DiT/SiT/HASTE
/// `update_ema`: initialised by copy, then `ema.mul_(decay).add_(param, alpha=1 - decay)` per step).
/// The reference averages every `named_parameters()` entry, frozen ones such as `pos_embed` included, so
/// the whole arena is averaged: one kernel call.
public final class EMA {
    /// The store being averaged.
    public let source: ParameterStore
    let arena: Storage

    public init(from store: ParameterStore) {
        require(store.isFinalized, "EMA: finalize the store first")
        source = store
        let count = store.bufferRange.upperBound
        arena = ParameterStore.zeroedStorage(count: count, dtype: store.dtype, device: store.device)
        if count > 0 {
            arena.backend.copy(from: store.arenaBuffer(0), to: buffer, byteCount: count * store.dtype.byteSize)
        }
    }

    private var count: Int { source.bufferRange.upperBound }
    private var buffer: Buffer { ParameterStore.buffer(arena, 0, source.dtype) }

    /// ema ← decay·ema + (1 − decay)·value over the whole arena (HASTE: decay 0.9999).
    public func update(decay: Double) {
        require((0...1).contains(decay), "EMA.update: decay \(decay) outside [0, 1]")
        if count > 0 { arena.backend.emaUpdate(ema: buffer, param: source.arenaBuffer(0), count: count, decay: decay) }
    }

    /// Writes the averaged values into `target` (the source itself, or a store built from the same model
    /// definition, e.g. for sampling): one copy of the arena.
    public func copy(into target: ParameterStore) {
        require(target.isFinalized && target.device == source.device && target.hasSameLayout(as: source),
                     "EMA.copy(into:): the target store must be finalized with the source's keys, shapes and device")
        if count > 0 { arena.backend.copy(from: buffer, to: target.arenaBuffer(0), byteCount: count * source.dtype.byteSize) }
    }

    /// The averaged values keyed like the source's state dict, in its order (views, no copies); a
    /// checkpoint writes them under `ema.` (STYLE §2.7).
    public func stateDict() -> [(String, Tensor)] {
        source.entries.map { ($0.key, Tensor(storage: arena, shape: $0.tensor.shape, offset: $0.offset, dtype: source.dtype)) }
    }

    /// Restores averaged values (e.g. from a checkpoint's `ema.` entries), strictly checked first (STYLE R6).
    public func load(_ tensors: [String: Tensor], strict: Bool = true) throws {
        let state = stateDict()
        try StateDictCheck.validate(expected: state.map { ($0.0, $0.1.shape) }, given: tensors, strict: strict,
                                    what: "EMA state dict")
        noGrad { for (key, view) in state { if let t = tensors[key] { view.copyValues(from: t) } } }
    }
}
