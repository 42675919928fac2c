import HasteTensor

/// A dotted key prefix in a `ParameterStore` (STYLE §2.6, R4). `scope["blocks"][3]["attn"]` extends the
/// prefix to `blocks.3.attn`; `.parameter("weight", …)` registers `blocks.3.attn.weight`. Keys are
/// PyTorch's verbatim, including `nn.Sequential` indices (`scope["adaLN_modulation.1"]`).
public struct ParameterScope {
    public let store: ParameterStore
    /// The dotted prefix, empty at the root.
    public let prefix: String

    public init(store: ParameterStore, prefix: String) {
        self.store = store
        self.prefix = prefix
    }

    public subscript(_ name: String) -> ParameterScope {
        require(!name.isEmpty, "ParameterScope: empty name under '\(prefix)'")
        return ParameterScope(store: store, prefix: key(name))
    }

    public subscript(_ index: Int) -> ParameterScope { self[String(index)] }

    /// The full state-dict key of `name` in this scope.
    public func key(_ name: String) -> String { prefix.isEmpty ? name : prefix + "." + name }

    /// Registers a trainable parameter `prefix.name` of `shape`, filled by `initializer` (random kinds draw
    /// from the store's generator, in registration order). Rank ≥ 2 parameters get weight decay.
    /// torch: `nn.Parameter(...)` on a module.
    @discardableResult
    public func parameter(_ name: String, _ shape: [Int], _ initializer: Initializer) -> Tensor {
        let k = key(name)
        if store.shapesOnly { return store.declare(k, shape, trainable: true) }
        let value = initializer.make(shape, dtype: store.dtype, generator: store.generator, key: k)
        return store.register(k, value, trainable: true)
    }

    /// Registers a frozen state-dict entry (never trained, never decayed), e.g. SiT's fixed `pos_embed`
    /// (a `requires_grad=False` Parameter in PyTorch). The value is computed only for real stores, and copied.
    @discardableResult
    public func buffer(_ name: String, _ shape: [Int], _ make: @autoclosure () -> Tensor) -> Tensor {
        let k = key(name)
        if store.shapesOnly { return store.declare(k, shape, trainable: false) }   // the value is never computed
        let value = make()
        require(value.shape == shape, "buffer '\(k)': value \(value.shape) for declared shape \(shape)")
        let own = noGrad { value.to(.cpu).to(store.dtype).clone() }
        return store.register(k, own, trainable: false)
    }
}
