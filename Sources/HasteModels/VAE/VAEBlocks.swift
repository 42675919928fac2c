import HasteNN
import HasteTensor

/// The SD-VAE's building blocks (diffusers `ResnetBlock2D`, `Attention` with a group norm, `UNetMidBlock2D`,
/// `Downsample2D`, `Upsample2D`; spec/vae.md §2). Inference only: weights come from a checkpoint, so init is
/// PyTorch's default and nothing here is tuned for training.

/// torch: `nn.Conv2d(cin, cout, k, stride, padding)` with bias; default init U(±1/√fan_in) for weight and bias.
struct ConvLayer {
    let weight: Tensor, bias: Tensor
    let stride: Int, padding: Int

    init(_ p: ParameterScope, _ cin: Int, _ cout: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        let fanIn = cin * kernel * kernel
        weight = p.parameter("weight", [cout, cin, kernel, kernel], .torchDefaultLinear(fanIn: fanIn))
        bias = p.parameter("bias", [cout], .torchDefaultLinear(fanIn: fanIn))
        (self.stride, self.padding) = (stride, padding)
    }

    func callAsFunction(_ x: Tensor) -> Tensor { x.conv2d(weight, bias, stride: stride, padding: padding) }
}

/// torch: `nn.GroupNorm(groups, channels, eps, affine=True)`.
struct GroupNormLayer {
    let weight: Tensor, bias: Tensor
    let groups: Int, eps: Double

    init(_ p: ParameterScope, _ channels: Int, groups: Int, eps: Double) {
        weight = p.parameter("weight", [channels], .ones)
        bias = p.parameter("bias", [channels], .zeros)
        (self.groups, self.eps) = (groups, eps)
    }

    /// The norm, then SiLU where `silu` (one fused pass on the CPU under noGrad).
    func callAsFunction(_ x: Tensor, silu: Bool = false) -> Tensor {
        x.groupNorm(groups: groups, weight: weight, bias: bias, eps: eps, silu: silu)
    }
}

/// diffusers `ResnetBlock2D` without time embedding: y = shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))),
/// shortcut a 1×1 conv when the channel count changes (dropout 0, output scale 1).
struct ResnetBlock2D {
    let norm1: GroupNormLayer, conv1: ConvLayer, norm2: GroupNormLayer, conv2: ConvLayer
    let convShortcut: ConvLayer?

    init(_ p: ParameterScope, _ cin: Int, _ cout: Int, _ c: AutoencoderKLConfig) {
        norm1 = GroupNormLayer(p["norm1"], cin, groups: c.normGroups, eps: c.eps)
        conv1 = ConvLayer(p["conv1"], cin, cout, kernel: 3, padding: 1)
        norm2 = GroupNormLayer(p["norm2"], cout, groups: c.normGroups, eps: c.eps)
        conv2 = ConvLayer(p["conv2"], cout, cout, kernel: 3, padding: 1)
        convShortcut = cin == cout ? nil : ConvLayer(p["conv_shortcut"], cin, cout, kernel: 1)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let h = conv2(norm2(conv1(norm1(x, silu: true)), silu: true))
        // Both terms are conv outputs (or a block input that is one): bf16 tensors under autocast, a bf16 sum.
        return ((convShortcut.map { $0(x) } ?? x) + h).roundedUnderAutocast()
    }
}

/// The mid-block attention: one head over all H·W pixels, head dim = channels, scale 1/√C, residual added
/// after `to_out.0` (diffusers `Attention(query_dim=C, heads=1, dim_head=C, norm_num_groups, residual_connection)`).
struct VAEAttention {
    let groupNorm: GroupNormLayer
    let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear

    init(_ p: ParameterScope, _ channels: Int, _ c: AutoencoderKLConfig) {
        groupNorm = GroupNormLayer(p["group_norm"], channels, groups: c.normGroups, eps: c.eps)
        let fan = Initializer.torchDefaultLinear(fanIn: channels)
        toQ = Linear(p["to_q"], channels, channels, weightInit: fan, biasInit: fan)
        toK = Linear(p["to_k"], channels, channels, weightInit: fan, biasInit: fan)
        toV = Linear(p["to_v"], channels, channels, weightInit: fan, biasInit: fan)
        toOut = Linear(p["to_out"][0], channels, channels, weightInit: fan, biasInit: fan)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let t = groupNorm(x).reshaped([n, c, h * w]).transposed(1, 2)                  // (N, HW, C)
        let q = toQ(t).unsqueezed(1), k = toK(t).unsqueezed(1), v = toV(t).unsqueezed(1)  // (N, 1, HW, C)
        let o = toOut(Tensor.scaledDotProductAttention(q, k, v).squeezed(1))               // (N, HW, C)
        return (o.transposed(1, 2).reshaped([n, c, h, w]) + x).roundedUnderAutocast()       // bf16 + bf16, as the resnets
    }
}

/// diffusers `UNetMidBlock2D`: resnet → attention → resnet at constant width. Attentions are registered
/// first, as in diffusers, so the state dict lists them first.
struct MidBlock {
    let attention: VAEAttention
    let resnets: (ResnetBlock2D, ResnetBlock2D)

    init(_ p: ParameterScope, _ channels: Int, _ c: AutoencoderKLConfig) {
        attention = VAEAttention(p["attentions"][0], channels, c)
        resnets = (ResnetBlock2D(p["resnets"][0], channels, channels, c), ResnetBlock2D(p["resnets"][1], channels, channels, c))
    }

    func callAsFunction(_ x: Tensor) -> Tensor { resnets.1(attention(resnets.0(x))) }
}

/// A stack of resnets, then (optionally) the encoder's downsampler — zero pad right and bottom by one, then a
/// 3×3 stride-2 unpadded conv — or the decoder's upsampler — nearest 2×, then a 3×3 conv.
struct ResampleBlock {
    enum Kind { case down, up, none }
    let resnets: [ResnetBlock2D]
    let resample: ConvLayer?
    let kind: Kind

    init(_ p: ParameterScope, _ cin: Int, _ cout: Int, layers: Int, kind: Kind, _ c: AutoencoderKLConfig) {
        resnets = (0..<layers).map { ResnetBlock2D(p["resnets"][$0], $0 == 0 ? cin : cout, cout, c) }
        self.kind = kind
        switch kind {
        case .down: resample = ConvLayer(p["downsamplers"][0]["conv"], cout, cout, kernel: 3, stride: 2)
        case .up: resample = ConvLayer(p["upsamplers"][0]["conv"], cout, cout, kernel: 3, padding: 1)
        case .none: resample = nil
        }
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for r in resnets { h = r(h) }
        guard let resample else { return h }
        return kind == .down ? resample(h.padded(right: 1, bottom: 1)) : resample(h.upsampleNearest2x())
    }
}
