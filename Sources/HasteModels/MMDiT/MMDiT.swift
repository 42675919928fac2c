import HasteTensor
import HasteNN

/// torch `nn.Linear(in, out)` with its own default init (weight and bias U(±1/√in)), or zeros (adaLN-Zero).
func torchLinear(_ p: ParameterScope, _ inFeatures: Int, _ outFeatures: Int, zero: Bool = false) -> Linear {
    let i: Initializer = zero ? .zeros : .torchDefaultLinear(fanIn: inFeatures)
    return Linear(p, inFeatures, outFeatures, weightInit: i, biasInit: i)
}

/// SD3-style joint-attention DiT of the HASTE/REPA text-to-image run (reference `models/mmdit.py`;
/// spec/mmdit.md §1–5) with REPA projectors and HASTE image-stream attention taps. Parameters are registered
/// in the reference's state-dict order; initialisation is PyTorch's default (spec §4) unless `adaLNZeroInit`.
public struct MMDiT {
    public let config: MMDiTConfig
    public let store: ParameterStore
    let patchWeight: Tensor, patchBias: Tensor
    let posEmbed: Tensor                       // [1, M², D], M = posTableSide; the centred grid window is used
    let tMLP: (Linear, Linear)
    let contextEmbedder: Linear
    let blocks: [MMDiTJointBlock]
    let finalLinear: Linear, finalAdaLN: Linear
    let projectors: [(Linear, Linear, Linear)]

    public init(_ config: MMDiTConfig, seed: UInt64 = 0) throws {
        try self.init(config, store: ParameterStore(seed: seed))
    }

    /// (key, shape) of the state dict, without allocating.
    public static func stateDictShapes(_ config: MMDiTConfig) throws -> [(String, [Int])] {
        let store = ParameterStore(shapesOnly: true)
        _ = try MMDiT(config, store: store)
        return store.declaredShapes
    }

    init(_ config: MMDiTConfig, store: ParameterStore) throws {
        try config.validate()
        self.config = config
        self.store = store
        let p = store.root, d = config.hiddenSize, ps = config.patchSize, m = config.posTableSide
        let zero = config.adaLNZeroInit
        posEmbed = p.buffer("pos_embed", [1, m * m, d], Embeddings.sincos2D(dim: d, grid: m).reshaped([1, m * m, d]))
        let conv = Initializer.torchDefaultLinear(fanIn: config.inChannels * ps * ps)   // Conv2d default: U(±1/√(C·k·k))
        patchWeight = p["x_embedder"]["proj"].parameter("weight", [d, config.inChannels, ps, ps], conv)
        patchBias = p["x_embedder"]["proj"].parameter("bias", [d], conv)
        tMLP = (torchLinear(p["t_embedder"]["mlp"][0], 256, d), torchLinear(p["t_embedder"]["mlp"][2], d, d))
        contextEmbedder = torchLinear(p["context_embedder"], config.contextDim, d)
        let mlpHidden = Int(Double(d) * config.mlpRatio)
        blocks = (0..<config.depth).map { i in
            MMDiTJointBlock(p["joint_blocks"][i], hidden: d, heads: config.numHeads, mlpHidden: mlpHidden,
                            contextPreOnly: i == config.depth - 1, zeroAdaLN: zero)
        }
        let f = p["final_layer"]
        finalLinear = torchLinear(f["linear"], d, ps * ps * config.inChannels, zero: zero)
        finalAdaLN = torchLinear(f["adaLN_modulation"][1], d, 2 * d, zero: zero)
        projectors = config.projectorDims.enumerated().map { j, z in
            let q = p["projectors"][j], h = config.projectorHidden
            return (torchLinear(q[0], d, h), torchLinear(q[2], h, h), torchLinear(q[4], h, z))
        }
        store.finalize()
    }

    /// The centred grid × grid window of the M × M table (reference `cropped_pos_embed`): [1, T, D].
    var croppedPosEmbed: Tensor {
        let m = config.posTableSide, g = config.grid, d = config.hiddenSize
        guard m != g else { return posEmbed }
        let top = (m - g) / 2
        return posEmbed.reshaped([1, m, m, d]).narrowed(1, start: top, length: g).narrowed(2, start: top, length: g)
            .reshaped([1, g * g, d])
    }

    /// x: (N, C, S, S) latents; t: (N) in [0, 1] (t = 1 noise); context: (N, L, contextDim) text features.
    /// `logitLayers`: 0-based blocks (< encoderDepth) whose image-stream logits to return ([N, H, T, T], from the
    /// image q and k only, spec §3); `projections`: run the projectors on the image stream after block encoderDepth−1.
    /// `checkpointing`: each joint block's activations are recomputed in backward instead of kept (`Tensor.checkpoint`).
    public func callAsFunction(_ x: Tensor, t: Tensor, context: Tensor, logitLayers: Set<Int> = [],
                               projections wantProjections: Bool = false, checkpointing: Bool = false) -> SiTOutput {
        let c = config, n = x.shape[0], d = c.hiddenSize
        require(x.rank == 4 && x.shape[1] == c.inChannels && x.shape[2] == c.inputSize && x.shape[3] == c.inputSize,
                "MMDiT: input \(x.shape), expected [N, \(c.inChannels), \(c.inputSize), \(c.inputSize)]")
        require(t.shape == [n], "MMDiT: t \(t.shape) for batch \(n)")
        require(context.rank == 3 && context.shape[0] == n && context.shape[2] == c.contextDim,
                "MMDiT: context \(context.shape), expected [\(n), tokens, \(c.contextDim)]")
        require(logitLayers.allSatisfy { $0 >= 0 && $0 < c.encoderDepth },
                "MMDiT: logit layers \(logitLayers.sorted()) must lie in 0..<\(c.encoderDepth) (encoder depth)")
        var h = x.conv2d(patchWeight, patchBias, stride: c.patchSize)                      // (N, D, G, G)
            .reshaped([n, d, c.tokens]).transposed(1, 2) + croppedPosEmbed                    // (N, T, D)
        let cond = tMLP.1(tMLP.0(Embeddings.timestep(t, dim: 256)).silu())                    // (N, D)
        var ctx: Tensor? = contextEmbedder(context)                                           // (N, L, D)
        var logits: [Int: Tensor] = [:], projected: [Tensor] = []
        for (i, block) in blocks.enumerated() {
            let wantLogits = logitLayers.contains(i)
            let out = checkpointing ? block.checkpointed(ctx!, h, cond, logits: wantLogits) : block(ctx!, h, cond, logits: wantLogits)
            (ctx, h) = (out.context, out.x)
            if let l = out.logits { logits[i] = l }
            if wantProjections && i == c.encoderDepth - 1 {
                projected = projectors.map { $0.2($0.1($0.0(h).silu()).silu()) }              // (N, T, z)
            }
        }
        let m = modulationChunks(finalAdaLN(cond.silu()), 2)                                  // shift, scale
        let out = finalLinear(h.modulatedLayerNorm(shift: m[0], scale: m[1], eps: 1e-6))                  // (N, T, p·p·C)
        return SiTOutput(velocity: out.unpatchify(patch: c.patchSize, channels: c.inChannels),
                         attentionLogits: logits, projections: projected)
    }
}
