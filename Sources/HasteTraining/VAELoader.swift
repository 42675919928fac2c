import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// Locates and loads the SD-VAE decoder for latent models (spec/vae.md; generate.py's `--vae ema|mse`).
public enum VAELoader {
    /// `ema`/`ft-ema` → "ema", `mse`/`ft-mse` → "mse" (the reference's spelling, used in folder names).
    public static func shortName(_ name: String) throws -> String {
        switch name {
        case "ema", "ft-ema", "sd-vae-ft-ema": return "ema"
        case "mse", "ft-mse", "sd-vae-ft-mse": return "mse"
        default: throw HasteError.config(key: "vae", detail: "'\(name)' is not ft-ema or ft-mse (stabilityai/sd-vae-ft-ema, sd-vae-ft-mse)")
        }
    }

    /// Where the weights are looked for when `--vae-weights` is not given, in order.
    public static func defaultLocations(_ short: String) -> [String] {
        let file = "sd-vae-ft-\(short)/diffusion_pytorch_model.safetensors"
        var dirs = ["models"]
        if let env = ProcessInfo.processInfo.environment["HASTE_VAE_DIR"] { dirs.insert(env, at: 0) }
        return dirs.map { "\($0)/\(file)" }
    }

    /// The download a missing file is named after.
    public static func url(_ short: String) -> String {
        "https://huggingface.co/stabilityai/sd-vae-ft-\(short)/resolve/main/diffusion_pytorch_model.safetensors"
    }

    /// The first default location that holds a file, if any.
    public static func installedFile(_ short: String) -> String? {
        defaultLocations(short).first { FileManager.default.fileExists(atPath: $0) }
    }

    /// Loads `weights` (a file, or a folder holding diffusion_pytorch_model.safetensors), or the first default
    /// location that exists. Any of diffusers' current, older (query/key/value/proj_attn) or LDM key styles, from
    /// safetensors or a torch file. A diffusers `config.json` beside the file is honoured (block_out_channels,
    /// layers_per_block, norm_num_groups, latent_channels: the real sd-vae-ft-* files say KL-f8, small test models
    /// load too); without one, KL-f8. Loaded on the CPU, then moved to `device`.
    public static func load(_ name: String = "mse", weights: String? = nil, device: Device = .cpu) throws -> AutoencoderKL {
        let short = try shortName(name)
        var path = weights ?? installedFile(short) ?? defaultLocations(short).last!
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            path += "/diffusion_pytorch_model.safetensors"
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "Latent models decode with the SD-VAE (sd-vae-ft-\(short)). Download \(url(short)) and pass --vae-weights FILE, or save it as \(defaultLocations(short).last!) (or under $HASTE_VAE_DIR/sd-vae-ft-\(short)/).")
        }
        let cfgPath = ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent("config.json")
        var config = AutoencoderKLConfig.sdKLF8
        if let data = FileManager.default.contents(atPath: cfgPath),
           let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            if let v = obj["block_out_channels"] as? [Int] { config.blockOutChannels = v }
            if let v = obj["layers_per_block"] as? Int { config.layersPerBlock = v }
            if let v = obj["norm_num_groups"] as? Int { config.normGroups = v }
            if let v = obj["latent_channels"] as? Int { config.latentChannels = v }
        }
        let vae = try AutoencoderKL(config)
        let state = TorchCheckpoint.isTorchFile(path) ? try TorchCheckpoint(path: path).stateDict() : try SafetensorsFile(path: path).tensors()
        do { try vae.store.load(AutoencoderKL.adapt(state), strict: true) } catch let e as HasteError {
            let what = config == .sdKLF8 ? "an SD-VAE (KL-f8 AutoencoderKL) state dict" : "the AutoencoderKL of \(cfgPath)"
            throw HasteError.fileFormat(path: path, detail: "is not \(what):\n\(e)")
        }
        vae.store.move(to: device)
        return vae
    }
}
