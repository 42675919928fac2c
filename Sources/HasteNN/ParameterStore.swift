import HasteTensor

/// A model's parameters and frozen state, keyed by PyTorch's state-dict names (STYLE §0.2, §2.6).
///
/// Layers register through `root` (a `ParameterScope`) in PyTorch's state-dict order. `finalize(on:)` then
/// lays every value out in one arena — decayed parameters (rank ≥ 2), non-decayed parameters, buffers —
/// and re-points each registered tensor into it, with a gradient arena mirroring the trainable part, so
/// zero-grad, clipping, AdamW and EMA are each one pass over one buffer [llm.c, nanoGPT].
public final class ParameterStore {
    /// Where a value lives in the arena; fixed at registration.
    enum Kind { case decayed, nonDecayed, buffer }

    struct Entry {
        let key: String
        let tensor: Tensor
        let kind: Kind
        /// Element offset in the arena (and, for trainable entries, in the gradient and moment arenas).
        var offset = 0
        var isTrainable: Bool { kind != .buffer }
    }

    /// Slots start on 16-element (64-byte) boundaries: vector loads and cuBLAS want aligned operands.
    /// The padding is zero in every arena, and each region kernel maps zeros to zeros, so it is harmless.
    static let slotAlignment = 16

    public let dtype: DType
    /// Draws of the random initializers, consumed in registration order.
    public let generator: RandomGenerator
    private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]
    public private(set) var isFinalized = false
    /// Whether trainable parameters are tracked by autograd (false for a frozen teacher).
    public private(set) var requiresGrad = true
    public private(set) var device: Device = .cpu

    /// Weights packed in place for the CPU GEMM by a frozen model's `prepackedForInference` (their values are not
    /// W meanwhile): `stateDict`, `load`, `move(to:)` and `setRequiresGrad(true)` unpack them first (W bit for bit;
    /// the packed layers then refuse to run, so nothing reads a packed weight as W).
    public private(set) var packedWeights: [PackedLinearWeight] = []

    /// Records weights of this store that were packed in place (`PackedLinearWeight`).
    public func notePacked(_ weights: [PackedLinearWeight]) { packedWeights += weights }

    /// Every packed weight back to W (see `packedWeights`).
    public func unpackWeights() {
        for w in packedWeights { w.unpack() }
        packedWeights = []
    }

    /// The value arena and its regions (element ranges), set by `finalize(on:)`.
    private(set) var arena: Storage?
    private(set) var nonDecayedRange = 0..<0
    private(set) var bufferRange = 0..<0
    /// Gradients of the trainable region `0..<trainableEnd`, same offsets as the arena.
    private(set) var gradArena: Storage?

    /// A store that only records declared keys and shapes (no memory, no initialisation): lets tests and
    /// `haste inspect` list a full-size model's state dict (e.g. SiT-XL/2's 675M parameters) for free.
    public let shapesOnly: Bool
    /// (key, shape) in declaration order, for `shapesOnly` stores.
    public private(set) var declaredShapes: [(String, [Int])] = []

    public init(seed: UInt64 = 0, dtype: DType = .float32, shapesOnly: Bool = false) {
        require(dtype.isComputeFloat, "ParameterStore: dtype \(dtype) (use float32, or float64 on cpu)")
        self.dtype = dtype
        self.shapesOnly = shapesOnly
        generator = RandomGenerator(seed: seed)
    }

    /// Whether each declaration of a `shapesOnly` store is trainable (a parameter) or not (a buffer).
    private(set) var declaredTrainable: [Bool] = []
    /// A store built `planned(from:)`: each registered key's arena offset, with the arena allocated up front.
    private var plan: [String: (offset: Int, shape: [Int], kind: Kind)]?

    /// Records a declaration of a `shapesOnly` store and returns a zero-stride placeholder of that shape.
    func declare(_ key: String, _ shape: [Int], trainable: Bool) -> Tensor {
        declaredShapes.append((key, shape))
        declaredTrainable.append(trainable)
        return Tensor.zeros([1], dtype: dtype).expanded(shape)
    }

    /// A store for the same model as the `shapesOnly` store `shapes` (built by the same code): its arena is laid
    /// out from the declarations and allocated now, and each value is copied into its slot as it is registered,
    /// so building holds one arena plus one initial value, not every value twice (`finalize` then only attaches
    /// gradients). Same layout, values and draws as an unplanned store.
    public convenience init(seed: UInt64 = 0, dtype: DType = .float32, plannedFrom shapes: ParameterStore) {
        require(shapes.shapesOnly, "ParameterStore(plannedFrom:): the plan must be a shapesOnly store")
        self.init(seed: seed, dtype: dtype)
        let kinds = zip(shapes.declaredShapes, shapes.declaredTrainable).map { d, trainable in
            ParameterStore.kind(rank: d.1.count, trainable: trainable)
        }
        let layout = ParameterStore.layout(shapes.declaredShapes.map { $0.1.reduce(1, *) }, kinds)
        var plan: [String: (offset: Int, shape: [Int], kind: Kind)] = [:]
        for (i, d) in shapes.declaredShapes.enumerated() { plan[d.0] = (layout.offsets[i], d.1, kinds[i]) }
        self.plan = plan
        (nonDecayedRange, bufferRange) = (layout.nonDecayed, layout.buffers)
        arena = ParameterStore.zeroedStorage(count: layout.end, dtype: dtype, device: .cpu)
    }

    static func kind(rank: Int, trainable: Bool) -> Kind { !trainable ? .buffer : (rank >= 2 ? .decayed : .nonDecayed) }

    /// Arena offsets of entries with `counts` elements and `kinds`, in registration order: decayed, non-decayed,
    /// then buffers, each slot aligned.
    static func layout(_ counts: [Int], _ kinds: [Kind]) -> (offsets: [Int], nonDecayed: Range<Int>, buffers: Range<Int>, end: Int) {
        var offsets = [Int](repeating: 0, count: counts.count), end = 0
        func place(_ kind: Kind) -> Range<Int> {
            let start = end
            for i in counts.indices where kinds[i] == kind {
                offsets[i] = end
                end += aligned(counts[i])
            }
            return start..<end
        }
        _ = place(.decayed)
        let nonDecayed = place(.nonDecayed), buffers = place(.buffer)
        return (offsets, nonDecayed, buffers, end)
    }

    /// The scope with an empty prefix.
    public var root: ParameterScope { ParameterScope(store: self, prefix: "") }

    /// End of the trainable regions (decayed then non-decayed) in the arena.
    var trainableEnd: Int { nonDecayedRange.upperBound }

    /// Trainable parameters in registration order (buffers excluded; see `stateDict()` for all entries).
    public var parameters: [(name: String, tensor: Tensor)] {
        entries.filter(\.isTrainable).map { ($0.key, $0.tensor) }
    }

    /// Frozen state-dict entries (`scope.buffer`) in registration order.
    public var buffers: [(name: String, tensor: Tensor)] {
        entries.filter { !$0.isTrainable }.map { ($0.key, $0.tensor) }
    }

    /// Number of trainable elements (what papers call the parameter count).
    public var trainableCount: Int { entries.filter(\.isTrainable).reduce(0) { $0 + $1.tensor.count } }

    /// The registered tensor for a state-dict key, if any.
    public subscript(key: String) -> Tensor? { index[key].map { entries[$0].tensor } }

    func entry(_ key: String) -> Entry? { index[key].map { entries[$0] } }

    /// Every state-dict key in registration order.
    public var keys: [String] { entries.map(\.key) }

    /// Adds a parameter (trainable) or buffer (frozen). `value` must be fresh CPU storage owned by the store.
    func register(_ key: String, _ value: Tensor, trainable: Bool) -> Tensor {
        require(!isFinalized, "ParameterStore: '\(key)' registered after finalize() (build the whole model first)")
        require(index[key] == nil, "ParameterStore: '\(key)' registered twice")
        require(value.dtype == dtype && value.isContiguous && value.offset == 0,
                     "ParameterStore: '\(key)' value must be a fresh contiguous \(dtype) tensor")
        let kind = ParameterStore.kind(rank: value.rank, trainable: trainable)
        var tensor = value, offset = 0
        if let plan, let arena {                                     // planned: the value goes to its slot now
            let planned = plan[key]
            require(planned?.shape == value.shape && planned?.kind == kind,
                    "ParameterStore: '\(key)' \(value.shape) is not in the plan this store was made from (build both with the same code)")
            let slot = planned!
            tensor = Tensor(storage: arena, shape: value.shape, offset: slot.offset, dtype: dtype)
            noGrad { tensor.copyValues(from: value) }
            offset = slot.offset
        }
        tensor.requiresGrad = trainable && requiresGrad
        index[key] = entries.count
        entries.append(Entry(key: key, tensor: tensor, kind: kind, offset: offset))
        return tensor
    }

    /// Lays out the arena on `device` (decayed, non-decayed, buffers), copies every value into its slot and
    /// re-points the registered tensors there; then presets each trainable parameter's `grad` to its slot of
    /// the gradient arena, so backward accumulates in place. Call once, after the model is built.
    public func finalize(on device: Device = .cpu) {
        require(!isFinalized, "finalize: the store is already finalized")
        if shapesOnly { isFinalized = true; return }
        if plan != nil {                                              // values already in their slots
            require(entries.count == plan!.count, "finalize: \(entries.count) entries registered, \(plan!.count) planned")
            plan = nil
            isFinalized = true
            if requiresGrad { attachGradients() }
            if device != .cpu { move(to: device) }
            CPUBackend.releaseFreeMemory()                            // the initial values' temporaries
            return
        }
        let layout = ParameterStore.layout(entries.map(\.tensor.count), entries.map(\.kind))
        for i in entries.indices { entries[i].offset = layout.offsets[i] }
        (nonDecayedRange, bufferRange) = (layout.nonDecayed, layout.buffers)
        let storage = ParameterStore.zeroedStorage(count: layout.end, dtype: dtype, device: device)
        noGrad {
            for e in entries {
                let slot = Tensor(storage: storage, shape: e.tensor.shape, offset: e.offset, dtype: dtype)
                slot.copyValues(from: e.tensor)
                e.tensor.storage = storage
                e.tensor.offset = e.offset
                e.tensor.grad = nil
                e.tensor.gradIsOwnedSlot = false
            }
        }
        arena = storage
        self.device = device
        isFinalized = true
        if requiresGrad { attachGradients() }
        CPUBackend.releaseFreeMemory()                                // the values copied into the arena
    }

    /// Moves a finalized store to `device`: one copy of the value arena, every registered tensor re-pointed
    /// into it, and (when trainable) a fresh zeroed gradient arena there. Models are built (and may be loaded)
    /// on the CPU, then moved; the layout, and so a checkpoint, does not depend on the device. Call before an
    /// optimizer or EMA is made over the store (they allocate on the store's device); gradients are not kept.
    public func move(to device: Device) {
        require(isFinalized, "move(to:): finalize the store before moving it")
        unpackWeights()
        guard device != self.device, !shapesOnly, let old = arena else { return }
        let count = old.byteCount / dtype.byteSize
        let moved = noGrad { Tensor(storage: old, shape: [count], offset: 0, dtype: dtype).to(device) }
        for e in entries {
            e.tensor.storage = moved.storage
            e.tensor.offset = e.offset
            e.tensor.grad = nil
            e.tensor.gradIsOwnedSlot = false
        }
        arena = moved.storage
        self.device = device
        gradArena = nil
        if requiresGrad { attachGradients() }
    }

    /// Freezes (false) or unfreezes (true) every trainable parameter: frozen ones are not tracked by autograd
    /// and hold no gradient arena (a frozen teacher or sampling copy would otherwise carry a second copy of its
    /// weights' size); unfreezing attaches a zeroed one again.
    public func setRequiresGrad(_ flag: Bool) {
        if flag { unpackWeights() }
        requiresGrad = flag
        for e in entries where e.isTrainable {
            e.tensor.requiresGrad = flag
            if !flag { e.tensor.grad = nil; e.tensor.gradIsOwnedSlot = false }
        }
        if !flag { gradArena = nil } else if isFinalized && gradArena == nil { attachGradients() }
    }

    /// Sets every gradient to zero. No pass over the arena: each slot is marked stale (`Tensor.gradIsStale`), the
    /// next backward overwrites the slots it reaches, and a slot still stale when it is read is filled then
    /// (`grad`, `gradBuffer`, `clearStaleGradients`), so only the slots no backward reached cost a fill.
    public func zeroGrad() {
        require(isFinalized, "zeroGrad: call finalize() first")
        guard let g = gradArena else { return }
        if gradientPaddingDirty, trainableEnd > 0 {          // the padding, never written by a walk, must be zero again
            g.backend.fill(ParameterStore.buffer(g, 0, dtype), count: trainableEnd, value: 0)
            gradientPaddingDirty = false
        }
        for e in entries where e.isTrainable && e.tensor.gradIsOwnedSlot { e.tensor.gradIsStale = true }
    }

    /// Set when a pass over the whole arena may have left the zero padding between slots non-zero (clipping by a
    /// non-finite coefficient: 0 · NaN); the next `zeroGrad` then fills the whole arena.
    package var gradientPaddingDirty = false

    /// Fills the stale gradient slots (all, or those starting in the element range `within`) with zeros, one
    /// fill per run of adjacent stale slots (the zero padding between them rides along).
    package func clearStaleGradients(within: Range<Int>? = nil) {
        guard let g = gradArena else { return }
        var run: Range<Int>? = nil
        func flush() {
            if let r = run { g.backend.fill(ParameterStore.buffer(g, r.lowerBound, dtype), count: r.count, value: 0) }
            run = nil
        }
        for e in trainableByOffset where within?.contains(e.offset) ?? true {
            guard e.tensor.gradIsStale else { flush(); continue }
            e.tensor.gradIsStale = false
            let end = e.offset + e.tensor.count
            run = run.map { $0.lowerBound..<end } ?? e.offset..<end
        }
        flush()
    }

    /// Trainable entries in arena order (decayed, then non-decayed); read only once a gradient arena exists
    /// (after `finalize`, which fixes the offsets).
    private lazy var trainableByOffset: [Entry] = entries.filter(\.isTrainable).sorted { $0.offset < $1.offset }

    /// Gradients of `loss` for every trainable parameter, in registration order, without touching `grad`
    /// (torch.autograd.grad); parameters the loss does not reach get zeros.
    public func gradients(of loss: Tensor) -> [(String, Tensor)] {
        let params = parameters
        let grads = HasteTensor.gradients(of: loss, wrt: params.map(\.tensor))
        return zip(params, grads).map { p, g in (p.name, g ?? Tensor.zeros(like: p.tensor)) }
    }

    /// The value arena from element `start` on (for the region kernels).
    func arenaBuffer(_ start: Int) -> Buffer {
        ParameterStore.buffer(arena!, start, dtype)
    }

    /// The gradient arena from element `start` on, stale slots filled first (the caller reads the whole arena).
    func gradBuffer(_ start: Int) -> Buffer {
        require(gradArena != nil, "ParameterStore: no gradients (the store is frozen; setRequiresGrad(true))")
        clearStaleGradients()
        return ParameterStore.buffer(gradArena!, start, dtype)
    }

    /// Whether `other` has the same keys, shapes, kinds and dtype in the same order (so arenas match).
    func hasSameLayout(as other: ParameterStore) -> Bool {
        dtype == other.dtype && entries.count == other.entries.count
            && zip(entries, other.entries).allSatisfy { $0.key == $1.key && $0.tensor.shape == $1.tensor.shape && $0.kind == $1.kind }
    }

    private func attachGradients() {
        let g = ParameterStore.zeroedStorage(count: trainableEnd, dtype: dtype, device: device)
        for e in entries where e.isTrainable {
            e.tensor.grad = Tensor(storage: g, shape: e.tensor.shape, offset: e.offset, dtype: dtype)
            e.tensor.gradIsOwnedSlot = true
        }
        gradArena = g
    }

    /// A kernel operand from element `start` of `storage` (Buffer's initializer is HasteTensor's own).
    static func buffer(_ storage: Storage, _ start: Int, _ dtype: DType) -> Buffer {
        Tensor(storage: storage, shape: [0], offset: start, dtype: dtype).buffer
    }

    static func aligned(_ count: Int) -> Int { (count + slotAlignment - 1) / slotAlignment * slotAlignment }

    static func zeroedStorage(count: Int, dtype: DType, device: Device) -> Storage {
        let s = Storage(byteCount: count * dtype.byteSize, device: device)
        if count > 0 { s.backend.fill(buffer(s, 0, dtype), count: count, value: 0) }
        return s
    }
}
