import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// Loads the SD-VAE for encoding: the KL-f8 config, or the one in a diffusers `config.json` beside the weights
/// (block_out_channels, layers_per_block, norm_num_groups, latent_channels), so small test models load too.
public enum PreprocessVAE {
    public static func load(_ weights: String?) throws -> AutoencoderKL {
        guard let weights else { return try VAELoader.load("mse") }
        let cfgPath = ((weights as NSString).deletingLastPathComponent as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: cfgPath),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return try VAELoader.load("mse", weights: weights)
        }
        var c = AutoencoderKLConfig()
        if let v = obj["block_out_channels"] as? [Int] { c.blockOutChannels = v }
        if let v = obj["layers_per_block"] as? Int { c.layersPerBlock = v }
        if let v = obj["norm_num_groups"] as? Int { c.normGroups = v }
        if let v = obj["latent_channels"] as? Int { c.latentChannels = v }
        let vae = try AutoencoderKL(c)
        do { try vae.store.load(AutoencoderKL.adapt(try SafetensorsFile(path: weights).tensors()), strict: true) } catch let e as HasteError {
            throw HasteError.fileFormat(path: weights, detail: "does not fit the AutoencoderKL of \(cfgPath):\n\(e)")
        }
        return vae
    }
}
