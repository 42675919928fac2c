import HasteTensor
import HasteNN

/// SiT with REPA projectors and HASTE attention taps (reference `models/sit.py`; spec/sit.md).
/// Parameters are registered in the reference's state-dict order; initialisation follows spec/sit.md §9.
public struct SiT {
    public let config: SiTConfig
    public let store: ParameterStore
    let patchWeight: Tensor, patchBias: Tensor
    let posEmbed: Tensor
    let tMLP: MLP
    let labelTable: Tensor
    let blocks: [SiTBlock]
    let projectors: [(Linear, Linear, Linear)]
    let finalLayer: FinalLayer

    /// Built twice: shapes only, then into an arena laid out from them (`ParameterStore(plannedFrom:)`: one copy of
    /// the weights while building, not two).
    public init(_ config: SiTConfig, seed: UInt64 = 0) throws {
        let shapes = ParameterStore(shapesOnly: true)
        _ = try SiT(config, store: shapes)
        try self.init(config, store: ParameterStore(seed: seed, plannedFrom: shapes))
    }

    /// (key, shape) of the state dict, without allocating (tests compare it with the reference's key list).
    public static func stateDictShapes(_ config: SiTConfig) throws -> [(String, [Int])] {
        let store = ParameterStore(shapesOnly: true)
        _ = try SiT(config, store: store)
        return store.declaredShapes
    }

    init(_ config: SiTConfig, store: ParameterStore) throws {
        try config.validate()
        self.config = config
        self.store = store
        let p = store.root, d = config.hiddenSize, ps = config.patchSize, grid = config.inputSize / ps
        posEmbed = p.buffer("pos_embed", [1, grid * grid, d], Embeddings.sincos2D(dim: d, grid: grid).reshaped([1, grid * grid, d]))
        let xe = p["x_embedder"]["proj"]
        patchWeight = xe.parameter("weight", [d, config.inChannels, ps, ps], .xavierUniform)    // on the [D, C·p·p] view
        patchBias = xe.parameter("bias", [d], .zeros)
        tMLP = MLP(p["t_embedder"]["mlp"], inFeatures: 256, hidden: d, outFeatures: d, activation: .silu,
                   names: ("0", "2"), weightInit: .normal(std: 0.02))
        labelTable = p["y_embedder"]["embedding_table"].parameter("weight", [config.numClasses + 1, d], .normal(std: 0.02))
        blocks = (0..<config.depth).map {
            SiTBlock(p["blocks"][$0], hidden: d, heads: config.numHeads, mlpRatio: config.mlpRatio, qkNorm: config.qkNorm)
        }
        projectors = config.projectorDims.enumerated().map { j, z in
            let q = p["projectors"][j]
            let h = config.projectorHidden
            return (Linear(q[0], d, h), Linear(q[2], h, h), Linear(q[4], h, z))
        }
        finalLayer = FinalLayer(p["final_layer"], hidden: d, patch: ps, outChannels: config.inChannels)
        store.finalize()
    }

    /// x: (N, C, S, S); t: (N) in [0, 1] (t = 1 noise); y: (N) int64 labels, numClasses = null.
    /// `logitLayers`: 0-based blocks (< encoderDepth) whose logits to return; `projections`: run the projectors.
    /// `checkpointing`: each block's activations are recomputed in backward instead of kept (`Tensor.checkpoint`).
    public func callAsFunction(_ x: Tensor, t: Tensor, y: Tensor, logitLayers: Set<Int> = [],
                               projections wantProjections: Bool = false, checkpointing: Bool = false) -> SiTOutput {
        require(x.rank == 4 && x.shape[1] == config.inChannels && x.shape[2] == config.inputSize && x.shape[3] == config.inputSize,
                     "SiT: input \(x.shape), expected [N, \(config.inChannels), \(config.inputSize), \(config.inputSize)]")
        require(t.shape == [x.shape[0]] && y.shape == [x.shape[0]], "SiT: t \(t.shape) and y \(y.shape) for batch \(x.shape[0])")
        let n = x.shape[0], d = config.hiddenSize
        // The patch embedding (torch: Conv2d(C, D, p, stride p), `x_embedder.proj`) as patchify + linear: each token's
        // C·p·p inputs in the conv weight's (c, i, j) order, one GEMM, whose weight and bias gradients are one GEMM
        // too (BGRADB on CUDA) where the conv's weight gradient took one GEMM per image.
        let p = config.patchSize, g = config.inputSize / p, k = config.inChannels * p * p
        let patches = x.reshaped([n, config.inChannels, g, p, g, p]).permuted([0, 2, 4, 1, 3, 5]).contiguous()
            .reshaped([n, g * g, k])                                                         // (N, T, C·p·p)
        let h = patches.linear(patchWeight.reshaped([d, k]), patchBias) + posEmbed           // (N, T, D)
        let temb = tMLP(Embeddings.timestep(t, dim: 256))                  // (N, D)
        let c = temb + Tensor.embedding(labelTable, y)                                       // (N, D)
        let activated = c.silu()                // every adaLN modulation's input, computed once (`SiTBlock.modulated`)
        // … and narrowed to bf16 once for their GEMMs under Autocast bf16 on CUDA (`LowPrecisionCopies.with`).
        let (out, logits, projected) = LowPrecisionCopies.with(activated) {
            let (tokens, logits, projected) = blockStack(h, activated, logitLayers: logitLayers, projections: wantProjections,
                                                         checkpointing: checkpointing)
            return (finalLayer.modulated(tokens, activated), logits, projected)                // (N, T, p·p·C)
        }
        return SiTOutput(velocity: out.unpatchify(patch: config.patchSize, channels: config.inChannels),
                         attentionLogits: logits, projections: projected)
    }

    /// The blocks from the embedded tokens h, with silu(c): the tokens, the asked logits, the projections.
    private func blockStack(_ h0: Tensor, _ activated: Tensor, logitLayers: Set<Int>, projections wantProjections: Bool,
                            checkpointing: Bool) -> (Tensor, [Int: Tensor], [Tensor]) {
        var h = h0
        var logits: [Int: Tensor] = [:], projected: [Tensor] = []
        for (i, block) in blocks.enumerated() {
            let wantLogits = logitLayers.contains(i)
            let (out, l) = checkpointing ? block.checkpointed(h, activated, logits: wantLogits)
                                         : block.modulated(h, activated, logits: wantLogits)
            h = out
            if let l { logits[i] = l }
            if wantProjections && i == config.encoderDepth - 1 {
                projected = projectors.map { project(h, $0) }                                  // (N, T, z)
            }
        }
        return (h, logits, projected)
    }

    /// A REPA projector: l2(silu(l1(silu(l0(h))))). Under Autocast bf16 on CUDA its first two layers are one bf16 MLP
    /// (`autocastBranch(.mlp)`: the hidden activation a bf16 tensor, forward and backward) where the general path
    /// widens it to a float32 carrier for the SiLU and narrows it again for the next GEMM: the same bits.
    private func project(_ h: Tensor, _ p: (Linear, Linear, Linear)) -> Tensor {
        let mlp = BF16Branch.mlp(w1: p.0.weight, b1: p.0.bias, activation: .silu, w2: p.1.weight, b2: p.1.bias)
        let mid = Tensor.autocastBranch(h, mlp) ?? p.1(p.0(h).silu())
        return p.2(mid.silu())
    }
}
