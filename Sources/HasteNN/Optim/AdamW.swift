import HasteTensor

/// torch `torch.optim.AdamW` (foreach=False, amsgrad=False, maximize=False) over a finalized store, with
/// weight decay on the decayed region only (rank ≥ 2 parameters, STYLE §2.6): decoupled decay
/// `p ← p·(1 − lr·wd)`, bias correction on, eps after the square root (STYLE §5).
///
/// The moments `m`, `v` mirror the store's trainable arena, so a step is one kernel call per region.
/// Like torch, each parameter counts its own steps: a parameter skipped in a step (torch: its grad is None,
/// e.g. projectors after HASTE's early stop) keeps its value, moments and step count.
public final class AdamW {
    public let store: ParameterStore
    /// Learning rate of the next step (schedules set it before each `step()`).
    public var lr: Double
    public let betas: (Double, Double)
    public let eps: Double
    /// Applied to the decayed region; the non-decayed region always uses 0.
    public let weightDecay: Double
    /// Number of `step()` calls.
    public private(set) var stepCount = 0

    let m: Storage
    let v: Storage
    /// Indices into `store.entries` of trainable entries, in arena order (decayed, then non-decayed).
    private let trainable: [Int]
    /// Steps taken by each entry of `trainable` (torch's per-parameter `state["step"]`).
    private var steps: [Int]

    public init(store: ParameterStore, lr: Double, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                weightDecay: Double = 0) {
        require(store.isFinalized, "AdamW: finalize the store before creating its optimizer")
        require(lr >= 0 && eps >= 0 && weightDecay >= 0 && (0..<1).contains(betas.0) && (0..<1).contains(betas.1),
                     "AdamW: lr \(lr), betas \(betas), eps \(eps), weightDecay \(weightDecay)")
        self.store = store
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
        m = ParameterStore.zeroedStorage(count: store.trainableEnd, dtype: store.dtype, device: store.device)
        v = ParameterStore.zeroedStorage(count: store.trainableEnd, dtype: store.dtype, device: store.device)
        trainable = store.entries.indices.filter { store.entries[$0].isTrainable }
            .sorted { store.entries[$0].offset < store.entries[$1].offset }
        steps = Array(repeating: 0, count: trainable.count)
    }

    /// One update from the gradients in the store's gradient arena. Parameters named in `skipping`
    /// (state-dict keys) are left untouched, moments and step count included. With nothing skipped this is
    /// one kernel call for the decayed region and one for the non-decayed region.
    public func step(skipping: Set<String> = []) {
        for key in skipping {
            require(store.entry(key)?.isTrainable == true,
                         "AdamW.step: skipping '\(key)', which is not a trainable parameter of the store")
        }
        stepCount += 1
        var runStart: Int? = nil      // position in `trainable` of the current run's first entry
        for position in trainable.indices {
            let entry = store.entries[trainable[position]]
            let skipped = skipping.contains(entry.key)
            if let start = runStart, skipped || !continues(from: start, to: position) {
                update(start..<position)
                runStart = nil
            }
            if !skipped && runStart == nil { runStart = position }
        }
        if let start = runStart { update(start..<trainable.count) }
    }

    /// Whether entry `position` can join the run starting at `start`: same region, same step count.
    private func continues(from start: Int, to position: Int) -> Bool {
        store.entries[trainable[start]].kind == store.entries[trainable[position]].kind && steps[start] == steps[position]
    }

    /// One kernel call over the arena span of the entries at `positions` of `trainable` (adjacent in the
    /// arena; the padding between them is zero in every arena and stays zero).
    private func update(_ positions: Range<Int>) {
        let first = store.entries[trainable[positions.first!]], last = store.entries[trainable[positions.last!]]
        let start = first.offset, count = last.offset + last.tensor.count - start
        for p in positions { steps[p] += 1 }
        let wd = first.kind == .decayed ? weightDecay : 0
        m.backend.adamw(param: store.arenaBuffer(start), grad: store.gradBuffer(start), m: buffer(m, start),
                        v: buffer(v, start), count: count, lr: lr, beta1: betas.0, beta2: betas.1, eps: eps,
                        weightDecay: wd, step: steps[positions.first!])
    }

    private func buffer(_ s: Storage, _ start: Int) -> Buffer { ParameterStore.buffer(s, start, store.dtype) }

    /// The moments as `m.<key>` and `v.<key>` views (no copies), trainable parameters in registration order
    /// (for checkpoints: STYLE §2.7 writes them under `opt.`).
    public func stateTensors() -> [(String, Tensor)] {
        let params = store.entries.filter(\.isTrainable)
        func views(_ s: Storage, _ prefix: String) -> [(String, Tensor)] {
            params.map { (prefix + $0.key, Tensor(storage: s, shape: $0.tensor.shape, offset: $0.offset, dtype: store.dtype)) }
        }
        return views(m, "m.") + views(v, "v.")
    }

    /// Restores moments saved by `stateTensors()` and the step count (every parameter resumes at
    /// `stepCount`). Checked strictly before anything is copied (STYLE R6).
    public func loadState(_ tensors: [String: Tensor], stepCount: Int) throws {
        require(stepCount >= 0, "AdamW.loadState: stepCount \(stepCount)")
        let state = stateTensors()
        try StateDictCheck.validate(expected: state.map { ($0.0, $0.1.shape) }, given: tensors, strict: true,
                                    what: "optimizer state")
        noGrad { for (key, view) in state { view.copyValues(from: tensors[key]!) } }
        self.stepCount = stepCount
        steps = Array(repeating: stepCount, count: trainable.count)
    }
}
