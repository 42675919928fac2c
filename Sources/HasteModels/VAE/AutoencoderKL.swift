import HasteNN
import HasteTensor

/// The SD-VAE (diffusers `AutoencoderKL`, KL-f8; spec/vae.md), encoder and decoder, with diffusers' current
/// key names (older names are mapped in WeightAdapters.swift). Registration order is diffusers': encoder,
/// decoder, quant_conv, post_quant_conv. Inference only; callers run it under `noGrad`.
public struct AutoencoderKL {
    public let config: AutoencoderKLConfig
    public let store: ParameterStore
    let encoder: VAEEncoder, decoder: VAEDecoder
    let quantConv: ConvLayer, postQuantConv: ConvLayer

    public init(_ config: AutoencoderKLConfig = .sdKLF8, seed: UInt64 = 0) throws {
        try self.init(config, store: ParameterStore(seed: seed))
    }

    /// (key, shape) of the state dict, without allocating.
    public static func stateDictShapes(_ config: AutoencoderKLConfig = .sdKLF8) throws -> [(String, [Int])] {
        let store = ParameterStore(shapesOnly: true)
        _ = try AutoencoderKL(config, store: store)
        return store.declaredShapes
    }

    init(_ config: AutoencoderKLConfig, store: ParameterStore) throws {
        try config.validate()
        self.config = config
        self.store = store
        let p = store.root, z = config.latentChannels
        encoder = VAEEncoder(p["encoder"], config)
        decoder = VAEDecoder(p["decoder"], config)
        quantConv = ConvLayer(p["quant_conv"], 2 * z, 2 * z, kernel: 1)
        postQuantConv = ConvLayer(p["post_quant_conv"], z, z, kernel: 1)
        store.setRequiresGrad(false)   // inference only: no gradient arena
        store.finalize()
    }

    /// quant_conv(encoder(x)): x [N, 3, H, W] in [−1, 1] → [N, 2·latent, H/f, W/f] = (mean | log-variance).
    public func moments(_ x: Tensor) -> Tensor {
        require(x.rank == 4 && x.shape[1] == config.inChannels && x.shape[2] % config.downsamplingFactor == 0
                     && x.shape[3] % config.downsamplingFactor == 0,
                     "AutoencoderKL.moments: input \(x.shape), expected [N, \(config.inChannels), H, W] with H, W multiples of \(config.downsamplingFactor)")
        return quantConv(encoder(x))
    }

    /// The posterior: mean and std = exp(½·clamp(logvar, −30, 20)) (diffusers `DiagonalGaussianDistribution`).
    public func encode(_ x: Tensor) -> (mean: Tensor, std: Tensor) {
        let m = moments(x).chunk(2, axis: 1)
        return (m[0], (m[1].clamp(min: -30, max: 20) * 0.5).exp())
    }

    /// decoder(post_quant_conv(z)): z [N, latent, h, w] (already divided by the scaling factor) → images
    /// [N, 3, f·h, f·w], roughly in [−1, 1].
    public func decode(_ z: Tensor) -> Tensor {
        require(z.rank == 4 && z.shape[1] == config.latentChannels,
                     "AutoencoderKL.decode: latent \(z.shape), expected [N, \(config.latentChannels), h, w]")
        return decoder(postQuantConv(z))
    }

    /// Sampler latents → images: decode(latents / scale) (bias 0, as HASTE; scale defaults to the config's
    /// 0.18215), `batch` images at a time to bound activation memory (a 256-px image's last stage alone holds
    /// 128·256² floats per tensor).
    public func decodeLatents(_ latents: Tensor, scale: Double? = nil, batch: Int = 4) -> Tensor {
        require(batch >= 1, "AutoencoderKL.decodeLatents: batch \(batch) < 1")
        return noGrad {
            let z = latents.to(store.dtype) / (scale ?? config.scalingFactor)
            let n = z.shape[0]
            if n <= batch { return decode(z) }
            let parts = stride(from: 0, to: n, by: batch).map { decode(z.narrowed(0, start: $0, length: min(batch, n - $0))) }
            return Tensor.cat(parts, axis: 0)
        }
    }
}

/// diffusers `Encoder` (double_z): conv_in → down blocks (all but the last downsample) → mid block →
/// GN → SiLU → conv_out to 2·latent channels.
struct VAEEncoder {
    let convIn: ConvLayer
    let downBlocks: [ResampleBlock]
    let midBlock: MidBlock
    let convNormOut: GroupNormLayer, convOut: ConvLayer

    init(_ p: ParameterScope, _ c: AutoencoderKLConfig) {
        let ch = c.blockOutChannels, last = ch[ch.count - 1]
        convIn = ConvLayer(p["conv_in"], c.inChannels, ch[0], kernel: 3, padding: 1)
        downBlocks = ch.indices.map { i in
            ResampleBlock(p["down_blocks"][i], i == 0 ? ch[0] : ch[i - 1], ch[i], layers: c.layersPerBlock,
                          kind: i < ch.count - 1 ? .down : .none, c)
        }
        midBlock = MidBlock(p["mid_block"], last, c)
        convNormOut = GroupNormLayer(p["conv_norm_out"], last, groups: c.normGroups, eps: c.eps)
        convOut = ConvLayer(p["conv_out"], last, 2 * c.latentChannels, kernel: 3, padding: 1)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = convIn(x)
        for b in downBlocks { h = b(h) }
        return convOut(convNormOut(midBlock(h), silu: true))
    }
}

/// diffusers `Decoder`: conv_in → mid block → up blocks over the reversed channels (layers + 1 resnets each,
/// all but the last upsample) → GN → SiLU → conv_out. up_blocks is registered before mid_block, as in diffusers.
struct VAEDecoder {
    let convIn: ConvLayer
    let upBlocks: [ResampleBlock]
    let midBlock: MidBlock
    let convNormOut: GroupNormLayer, convOut: ConvLayer

    init(_ p: ParameterScope, _ c: AutoencoderKLConfig) {
        let ch = Array(c.blockOutChannels.reversed())
        convIn = ConvLayer(p["conv_in"], c.latentChannels, ch[0], kernel: 3, padding: 1)
        upBlocks = ch.indices.map { i in
            ResampleBlock(p["up_blocks"][i], i == 0 ? ch[0] : ch[i - 1], ch[i], layers: c.layersPerBlock + 1,
                          kind: i < ch.count - 1 ? .up : .none, c)
        }
        midBlock = MidBlock(p["mid_block"], ch[0], c)
        convNormOut = GroupNormLayer(p["conv_norm_out"], ch[ch.count - 1], groups: c.normGroups, eps: c.eps)
        convOut = ConvLayer(p["conv_out"], ch[ch.count - 1], c.outChannels, kernel: 3, padding: 1)
    }

    func callAsFunction(_ z: Tensor) -> Tensor {
        var h = midBlock(convIn(z))
        for b in upBlocks { h = b(h) }
        return convOut(convNormOut(h, silu: true))
    }
}
