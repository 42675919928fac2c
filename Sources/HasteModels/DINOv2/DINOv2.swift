import HasteTensor
import HasteNN

/// DINOv2 ViT (non-register), reference `dinov2/models/vision_transformer.py` with HASTE's modified forward
/// that also returns per-block attention logits (spec/dinov2.md). Keys as in the hub checkpoints.
public struct DINOv2 {
    public let config: DINOv2Config
    public let store: ParameterStore
    let clsToken: Tensor, posEmbed: Tensor
    let patchWeight: Tensor, patchBias: Tensor
    private(set) var blocks: [DINOv2Block]
    let norm: (Tensor, Tensor)
    /// Whether this value runs the packed weights (`prepackedForInference` returned it).
    private(set) var runsPacked = false

    /// `frozen`: a teacher that is never trained (HASTE/REPA's encoder): its store never allocates a gradient
    /// arena (setting it frozen after construction frees the arena, but its pages were touched: 344 MB of RSS
    /// for DINOv2-B/14).
    /// Built twice: shapes only, then into an arena laid out from them (`ParameterStore(plannedFrom:)`: one copy of
    /// the weights while building, not two).
    public init(_ config: DINOv2Config, seed: UInt64 = 0, frozen: Bool = false) {
        let shapes = ParameterStore(shapesOnly: true)
        _ = DINOv2(config, store: shapes)
        let store = ParameterStore(seed: seed, plannedFrom: shapes)
        if frozen { store.setRequiresGrad(false) }
        self.init(config, store: store)
    }

    /// (key, shape) of the state dict, without allocating.
    public static func stateDictShapes(_ config: DINOv2Config) throws -> [(String, [Int])] {
        let store = ParameterStore(shapesOnly: true)
        _ = DINOv2(config, store: store)
        return store.declaredShapes
    }

    init(_ config: DINOv2Config, store: ParameterStore) {
        self.config = config
        self.store = store
        let p = store.root, d = config.embedDim
        clsToken = p.parameter("cls_token", [1, 1, d], .normal(std: 1e-6))
        posEmbed = p.parameter("pos_embed", [1, 1 + config.tokens, d], .truncatedNormal(std: 0.02))
        _ = p.parameter("mask_token", [1, d], .zeros)                         // in the weights, unused
        patchWeight = p["patch_embed"]["proj"].parameter("weight", [d, config.inChannels, config.patchSize, config.patchSize],
                                                         .torchDefaultLinear(fanIn: config.inChannels * config.patchSize * config.patchSize))
        patchBias = p["patch_embed"]["proj"].parameter("bias", [d], .torchDefaultLinear(fanIn: config.inChannels * config.patchSize * config.patchSize))
        blocks = (0..<config.depth).map { DINOv2Block(p["blocks"][$0], config) }
        norm = (p["norm"].parameter("weight", [d], .ones), p["norm"].parameter("bias", [d], .zeros))
        store.finalize()
    }

    /// This frozen encoder with its linear weights packed in place for the CPU GEMM (`PackedLinearWeight`: those
    /// whose output width is a multiple of 48, on a float32 CPU store with AVX-512F): a forward pass then reads them
    /// straight into the kernel instead of packing every weight again (the HASTE teacher runs one forward per
    /// training step). The same bits as before. Forward passes without gradients only, on the CPU in float32
    /// (not under autocast); the store unpacks them before anything reads its values (`ParameterStore.packedWeights`),
    /// after which this value refuses to run. Use the returned value in place of this one.
    public func prepackedForInference() -> DINOv2 {
        guard !store.requiresGrad, store.device == .cpu, store.packedWeights.isEmpty else { return self }
        var copy = self
        copy.blocks = blocks.map { $0.prepackedForInference() }
        copy.runsPacked = true
        store.notePacked(copy.blocks.flatMap(\.packedWeights))
        return copy
    }

    /// images: (B, 3, g·14, g·14), already preprocessed (`DINOv2.preprocess`). `logitLayers`: 0-based blocks.
    public func callAsFunction(_ images: Tensor, logitLayers: Set<Int> = []) -> DINOv2Output {
        let side = config.imageSize
        require(runsPacked || store.packedWeights.isEmpty,
                "DINOv2: its weights are packed in place (prepackedForInference); run the value that call returned, or unpack the store")
        require(images.rank == 4 && images.shape[1] == config.inChannels && images.shape[2] == side && images.shape[3] == side,
                     "DINOv2: input \(images.shape), expected [B, \(config.inChannels), \(side), \(side)] (grid \(config.grid) × patch \(config.patchSize))")
        let b = images.shape[0], d = config.embedDim, np = config.tokens
        let patches = images.conv2d(patchWeight, patchBias, stride: config.patchSize).reshaped([b, d, np]).transposed(1, 2)
        var x = Tensor.cat([clsToken.expanded([b, 1, d]), patches], axis: 1) + posEmbed   // (B, 1+Np, D)
        var logits: [Int: Tensor] = [:]
        for (i, block) in blocks.enumerated() {
            let (out, l) = block(x, logits: logitLayers.contains(i))
            x = out
            if let l { logits[i] = l.narrowed(2, start: 1, length: np).narrowed(3, start: 1, length: np) }  // drop class row/col
        }
        let normed = x.layerNorm(weight: norm.0, bias: norm.1, eps: 1e-6)                 // (B, 1+Np, D)
        return DINOv2Output(patchTokens: normed.narrowed(1, start: 1, length: np),
                            classToken: normed.select(axis: 1, index: 0), attentionLogits: logits)
    }
}

/// One ViT block: x + ls1·Attn(norm1(x)); x + ls2·MLP(norm2(x)).
struct DINOv2Block {
    let norm1: (Tensor, Tensor), norm2: (Tensor, Tensor)
    private(set) var qkv: Linear, proj: Linear
    let ls1: Tensor, ls2: Tensor
    private(set) var mlp: MLP?, w12: Linear?, w3: Linear?
    let heads: Int

    init(_ p: ParameterScope, _ c: DINOv2Config) {
        let d = c.embedDim
        norm1 = (p["norm1"].parameter("weight", [d], .ones), p["norm1"].parameter("bias", [d], .zeros))
        qkv = Linear(p["attn"]["qkv"], d, 3 * d, weightInit: .truncatedNormal(std: 0.02))
        proj = Linear(p["attn"]["proj"], d, d, weightInit: .truncatedNormal(std: 0.02))
        ls1 = p["ls1"].parameter("gamma", [d], .ones)
        norm2 = (p["norm2"].parameter("weight", [d], .ones), p["norm2"].parameter("bias", [d], .zeros))
        if c.swiGLU {
            mlp = nil
            w12 = Linear(p["mlp"]["w12"], d, 2 * c.swiGLUHidden, weightInit: .truncatedNormal(std: 0.02))
            w3 = Linear(p["mlp"]["w3"], c.swiGLUHidden, d, weightInit: .truncatedNormal(std: 0.02))
        } else {
            mlp = MLP(p["mlp"], inFeatures: d, hidden: Int(Double(d) * c.mlpRatio), outFeatures: d, activation: .gelu,
                      weightInit: .truncatedNormal(std: 0.02))
            w12 = nil; w3 = nil
        }
        ls2 = p["ls2"].parameter("gamma", [d], .ones)
        heads = c.numHeads
    }

    func prepackedForInference() -> DINOv2Block {
        var copy = self
        copy.qkv = qkv.prepackedForInference()
        copy.proj = proj.prepackedForInference()
        copy.mlp = mlp?.prepackedForInference()
        copy.w12 = w12?.prepackedForInference()
        copy.w3 = w3?.prepackedForInference()
        return copy
    }

    var packedWeights: [PackedLinearWeight] {
        [qkv.packed, proj.packed, mlp?.fc1.packed, mlp?.fc2.packed, w12?.packed, w3?.packed].compactMap { $0 }
    }

    func callAsFunction(_ x: Tensor, logits: Bool) -> (Tensor, Tensor?) {
        // The teacher's pass (no gradient, Autocast bf16 on CUDA): each half-block's LayerNorm writes the branch's
        // bf16 input and LayerScale reads its bf16 output (`autocastLayerScaledBranch`; the same values).
        if !logits, qkv.packed == nil, proj.packed == nil,
           let y = Tensor.autocastLayerScaledBranch(x, norm: norm1.0, norm1.1, eps: 1e-6, gamma: ls1,
                                                    .attention(qkv: qkv.weight, qkvBias: qkv.bias, proj: proj.weight,
                                                               projBias: proj.bias, heads: heads)) {
            return (mlpHalf(y), nil)
        }
        let (b, n, d) = (x.shape[0], x.shape[1], x.shape[2])
        let h = x.layerNorm(weight: norm1.0, bias: norm1.1, eps: 1e-6)
        let attended: Tensor, l: Tensor?                                                        // (B, N, D), (B, H, N, N)
        if !logits, qkv.packed == nil, proj.packed == nil,                     // Autocast bf16 on CUDA: bf16 operands
           let a = Tensor.autocastBranch(h, .attention(qkv: qkv.weight, qkvBias: qkv.bias, proj: proj.weight,
                                                       projBias: proj.bias, heads: heads)) {
            (attended, l) = (a, nil)
        } else if logits, qkv.packed == nil, proj.packed == nil,         // a logit layer without a gradient (the teacher)
                  let r = Tensor.autocastAttentionBranchWithLogits(h, .attention(qkv: qkv.weight, qkvBias: qkv.bias, proj: proj.weight,
                                                                                 projBias: proj.bias, heads: heads)) {
            (attended, l) = r
        } else {
            let fusedQKV = qkv(h)
            let merged: Tensor
            if let fused = Tensor.packedQKVAttention(fusedQKV, heads: heads, logits: logits) {  // no gradient: no head copies
                (merged, l) = fused
            } else {
                let parts = fusedQKV.reshaped([b, n, 3, heads, d / heads]).permuted([2, 0, 3, 1, 4])  // (3, B, H, N, Dh)
                let q = parts.select(axis: 0, index: 0), k = parts.select(axis: 0, index: 1), v = parts.select(axis: 0, index: 2)
                let a: Tensor
                (a, l) = logits ? Tensor.attentionWithLogits(q, k, v) : (Tensor.scaledDotProductAttention(q, k, v), nil)
                merged = a.transposed(1, 2).reshaped([b, n, d])
            }
            attended = proj(merged)
        }
        return (mlpHalf(x.layerScaledResidual(gamma: ls1, attended)), l)                       // (B, N, D)
    }

    /// y + ls2·MLP(norm2(y)).
    private func mlpHalf(_ y: Tensor) -> Tensor {
        if let branch = mlp?.bf16Branch,
           let out = Tensor.autocastLayerScaledBranch(y, norm: norm2.0, norm2.1, eps: 1e-6, gamma: ls2, branch) { return out }
        let h2 = y.layerNorm(weight: norm2.0, bias: norm2.1, eps: 1e-6)
        let f: Tensor
        if let mlp { f = mlp(h2) } else {
            let u = w12!(h2).chunk(2, axis: -1)
            f = w3!(u[0].silu() * u[1])
        }
        return y.layerScaledResidual(gamma: ls2, f)
    }
}
