import HasteTensor

/// SD-VAE hyper-parameters (diffusers `AutoencoderKL` config; spec/vae.md §1). `.sdKLF8` is the config shared
/// by stabilityai/sd-vae-ft-mse and sd-vae-ft-ema; tests use tiny ones (`normGroups` is configurable for that).
public struct AutoencoderKLConfig: Codable, Equatable, Sendable {
    public var inChannels = 3
    public var outChannels = 3
    public var latentChannels = 4
    public var blockOutChannels = [128, 256, 512, 512]
    public var layersPerBlock = 2
    public var normGroups = 32              // norm_num_groups
    public var eps = 1e-6                   // every GroupNorm (resnets, attention, conv_norm_out)
    public var scalingFactor = 0.18215      // latents = z · scale; HASTE hard-codes it (bias 0)

    public init() {}

    /// The KL-f8 autoencoder of Stable Diffusion (ft-mse and ft-ema share it).
    public static let sdKLF8 = AutoencoderKLConfig()

    /// Spatial down-sampling factor: 2^(blocks − 1) (8 for KL-f8: 256 px ↔ 32 latents).
    public var downsamplingFactor: Int { 1 << (blockOutChannels.count - 1) }

    public func validate() throws {
        func bad(_ detail: String) -> HasteError { .config(key: "vae", detail: detail) }
        if blockOutChannels.isEmpty { throw bad("block_out_channels is empty") }
        if let c = blockOutChannels.first(where: { $0 % normGroups != 0 }) {
            throw bad("\(c) channels do not split into \(normGroups) groups")
        }
        if layersPerBlock < 1 { throw bad("layers_per_block \(layersPerBlock) < 1") }
    }
}
