import HasteTensor
import HasteNN

/// CLIP's text transformer, Hugging Face `CLIPTextModel` (transformers 4.23 `modeling_clip.py`, spec/mmdit.md §6):
/// token + position embeddings; N pre-LN layers (LayerNorm → causal self-attention → residual; LayerNorm → fc1 →
/// quick-GELU → fc2 → residual); the final LayerNorm. No attention mask besides the causal one (the reference passes
/// only input_ids). State-dict keys are HF's, `text_model.`-prefixed, in HF's order; the `position_ids` buffer of HF
/// files is not a parameter here (its values are always 0..<77) and `adapt` drops it. Built on the CPU, loaded there,
/// then `store.move(to:)` like the other models (`CLIPTextModel.load`, HasteTraining/CLIPTextLoader.swift, reads hub files).
public struct CLIPTextModel {
    public let config: CLIPTextConfig
    public let store: ParameterStore
    let tokenEmbedding: Tensor, positionEmbedding: Tensor
    let layers: [CLIPTextLayer]
    let finalNorm: (Tensor, Tensor)

    /// Random weights as HF's `_init_weights` draws them (normal std 0.02 embeddings, scaled normal projections,
    /// zero biases, unit LayerNorms), from our generator: the demo's frozen random encoder.
    /// `trainable: false` builds a frozen model (no autograd, no gradient arena: half the memory), as an encoder runs.
    public init(_ config: CLIPTextConfig, seed: UInt64 = 0, trainable: Bool = true) {
        let store = ParameterStore(seed: seed)
        if !trainable { store.setRequiresGrad(false) }
        self.init(config, store: store)
    }

    /// (key, shape) of the state dict, without allocating (HF's keys, `position_ids` excepted).
    public static func stateDictShapes(_ config: CLIPTextConfig) -> [(String, [Int])] {
        let store = ParameterStore(shapesOnly: true)
        _ = CLIPTextModel(config, store: store)
        return store.declaredShapes
    }

    init(_ config: CLIPTextConfig, store: ParameterStore) {
        require(config.problem == nil, "CLIPTextModel: \(config.problem ?? "")")
        self.config = config
        self.store = store
        let p = store.root["text_model"], d = config.hiddenSize
        tokenEmbedding = p["embeddings"]["token_embedding"].parameter("weight", [config.vocabSize, d], .normal(std: 0.02))
        positionEmbedding = p["embeddings"]["position_embedding"].parameter("weight", [config.maxPositions, d], .normal(std: 0.02))
        layers = (0..<config.numLayers).map { CLIPTextLayer(p["encoder"]["layers"][$0], config) }
        finalNorm = (p["final_layer_norm"].parameter("weight", [d], .ones), p["final_layer_norm"].parameter("bias", [d], .zeros))
        store.finalize()
    }

    /// Token ids [N, L] (L ≤ maxPositions, each id in 0..<vocabSize), as rows of host integers.
    public func callAsFunction(_ ids: [[Int32]]) -> CLIPTextOutput {
        let n = ids.count, l = ids.first?.count ?? 0
        require(n > 0 && l > 0 && ids.allSatisfy { $0.count == l },
                "CLIPTextModel: ids must be N ≥ 1 rows of the same length ≥ 1 (got \(ids.map(\.count)))")
        require(l <= config.maxPositions, "CLIPTextModel: \(l) tokens per row, the model has \(config.maxPositions) positions")
        for (r, row) in ids.enumerated() {
            let bad = row.first { $0 < 0 || Int($0) >= config.vocabSize }
            require(bad == nil, "CLIPTextModel: row \(r) holds token id \(bad ?? 0), outside the vocabulary 0..<\(config.vocabSize)")
        }
        let device = store.device, d = config.hiddenSize
        let tokens = Tensor(ids.flatMap { $0.map(Int64.init) }, shape: [n, l], device: device)
        var x = Tensor.embedding(tokenEmbedding, tokens) + positionEmbedding.narrowed(0, start: 0, length: l)   // (N, L, D)
        let mask = CLIPTextModel.causalMask(l, dtype: x.dtype, device: device)
        for layer in layers { x = layer(x, mask: mask) }
        let last = x.layerNorm(weight: finalNorm.0, bias: finalNorm.1, eps: config.layerNormEps)              // (N, L, D)
        // HF: last_hidden_state[arange(N), input_ids.argmax(-1)]: the first largest id of each row.
        let rows = ids.enumerated().map { r, row -> Int64 in
            var best = 0
            for j in row.indices where row[j] > row[best] { best = j }
            return Int64(r * l + best)
        }
        let pooled = last.reshaped([n * l, d]).indexSelect(axis: 0, indices: Tensor(rows, shape: [n], device: device))
        return CLIPTextOutput(lastHiddenState: last, pooled: pooled)
    }

    /// `ids` as an integer tensor [N, L] (int32 or int64, on any device; read back to the host).
    public func callAsFunction(_ ids: Tensor) -> CLIPTextOutput {
        require(ids.rank == 2 && (ids.dtype == .int64 || ids.dtype == .int32),
                "CLIPTextModel: ids must be an int64 or int32 tensor [N, L], got \(ids.dtype) \(ids.shape)")
        let flat = ids.dtype == .int64 ? ids.to(.cpu).scalars(as: Int64.self) : ids.to(.cpu).scalars(as: Int32.self).map(Int64.init)
        let l = ids.shape[1]
        return self((0..<ids.shape[0]).map { r in flat[r * l ..< (r + 1) * l].map { Int32(clamping: $0) } })
    }

    /// HF's `_build_causal_attention_mask`: 0 on and below the diagonal, the dtype's lowest finite value above it
    /// (`torch.finfo(dtype).min`, so a masked logit stays finite), [L, L], added to every head's logits.
    public static func causalMask(_ l: Int, dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        var values = [Double](repeating: 0, count: l * l)
        let lowest = dtype == .float64 ? -Double.greatestFiniteMagnitude : -Double(Float.greatestFiniteMagnitude)
        for i in 0..<l { for j in (i + 1)..<max(l, i + 1) { values[i * l + j] = lowest } }
        return Tensor(values, shape: [l, l]).to(dtype).to(device)
    }
}

/// One pre-LN layer: x + out_proj(attn(layer_norm1(x))); x + fc2(act(fc1(layer_norm2(x)))).
struct CLIPTextLayer {
    let qProj: Linear, kProj: Linear, vProj: Linear, outProj: Linear
    let norm1: (Tensor, Tensor), norm2: (Tensor, Tensor)
    let fc1: Linear, fc2: Linear
    let heads: Int, eps: Double
    let activation: CLIPTextConfig.Activation

    init(_ p: ParameterScope, _ c: CLIPTextConfig) {
        let d = c.hiddenSize
        // HF `_init_weights`: q/k/v std d^-0.5·(2·layers)^-0.5, out_proj d^-0.5, fc1 (2d)^-0.5, fc2 like q; zero biases.
        let inStd = 1 / (Double(d) * Double(2 * c.numLayers)).squareRoot()
        let a = p["self_attn"]
        // HF's registration order (CLIPAttention.__init__): k, v, q, out.
        kProj = Linear(a["k_proj"], d, d, weightInit: .normal(std: inStd))
        vProj = Linear(a["v_proj"], d, d, weightInit: .normal(std: inStd))
        qProj = Linear(a["q_proj"], d, d, weightInit: .normal(std: inStd))
        outProj = Linear(a["out_proj"], d, d, weightInit: .normal(std: 1 / Double(d).squareRoot()))
        norm1 = (p["layer_norm1"].parameter("weight", [d], .ones), p["layer_norm1"].parameter("bias", [d], .zeros))
        fc1 = Linear(p["mlp"]["fc1"], d, c.intermediateSize, weightInit: .normal(std: 1 / Double(2 * d).squareRoot()))
        fc2 = Linear(p["mlp"]["fc2"], c.intermediateSize, d, weightInit: .normal(std: inStd))
        norm2 = (p["layer_norm2"].parameter("weight", [d], .ones), p["layer_norm2"].parameter("bias", [d], .zeros))
        heads = c.numHeads
        eps = c.layerNormEps
        activation = c.activation
    }

    /// x (N, L, D); mask (L, L) additive.
    func callAsFunction(_ x: Tensor, mask: Tensor) -> Tensor {
        let (n, l, d) = (x.shape[0], x.shape[1], x.shape[2]), dh = d / heads
        let h = x.layerNorm(weight: norm1.0, bias: norm1.1, eps: eps)
        func split(_ t: Tensor) -> Tensor { t.reshaped([n, l, heads, dh]).transposed(1, 2) }                 // (N, H, L, Dh)
        // HF: q_proj(x)·scale, then q·kᵀ + mask, softmax, ·v (our attention op has no mask: composed here).
        let q = split(qProj(h) * (1 / Double(dh).squareRoot())), k = split(kProj(h)), v = split(vProj(h))
        let probs = (q.matmul(k.transposed(-2, -1)) + mask).softmax(axis: -1)                                 // (N, H, L, L)
        let attn = probs.matmul(v).transposed(1, 2).reshaped([n, l, d])
        let y = x + outProj(attn)
        let m = fc1(y.layerNorm(weight: norm2.0, bias: norm2.1, eps: eps))
        let act = activation == .quickGELU ? m * (m * 1.702).sigmoid() : m.gelu()
        return y + fc2(act)
    }
}
