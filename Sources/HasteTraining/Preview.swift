import Foundation
import HasteDiffusion
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

/// Sample grids from the EMA model during training (spec/method.md §15; **[robust]** EMA weights in eval
/// mode, no label dropout). Fixed noise and labels, drawn once from their own stream, so grids are comparable
/// across steps and across resumes. Euler ODE, `sample-num-steps` steps, guidance `sample-cfg` on [0, 1].
/// Latent samples are decoded by the SD-VAE (latent / latent-scale → decoder; spec/method.md §15) when one is
/// given; without it latent previews are skipped with one note.
final class Preview {
    let config: TrainConfig
    let model: SiT
    let noise: Tensor, labels: Tensor
    let pixelSpace: Bool
    let vae: AutoencoderKL?
    private var warned = false

    init(config: TrainConfig, models: ResolvedModels, sampleShape: [Int], pixelSpace: Bool, vae: AutoencoderKL? = nil,
         device: Device = .cpu) throws {
        self.config = config
        let c = models.student                                 // same layout as the EMA (projectors unused here)
        model = try SiT(c)
        model.store.setRequiresGrad(false)                     // sampled under noGrad only
        model.store.move(to: device)                           // the EMA's device; noise and labels stay on the host
        vae?.store.move(to: device)
        let g = RandomGenerator(seed: UInt64(config.seed) &+ 2)
        let n = config.sampleCount
        noise = g.normal([n] + sampleShape)
        labels = Tensor((0..<n).map { Int64($0 % c.numClasses) }, shape: [n])
        self.pixelSpace = pixelSpace
        self.vae = vae
    }

    func render(ema: EMA, step: Int, run: RunDirectory, say: (String) -> Void) throws {
        guard pixelSpace || vae != nil else {
            if !warned {
                say("no SD-VAE for previews of this latent model: set vae-weights (sd-vae-ft-mse's diffusion_pytorch_model.safetensors) or put it under models/sd-vae-ft-mse/; skipping sample grids")
                warned = true
            }
            return
        }
        ema.copy(into: model.store)
        let guidance = Guidance(scale: config.sampleCfg, low: 0, high: 1, nullClass: model.config.numClasses)
        let m = model
        let x = Samplers.euler(Samplers.onDevice(m.store.device) { x, t, y in m(x, t: t, y: y).velocity }, noise: noise, labels: labels,
                               steps: config.sampleNumSteps, guidance: guidance)
        let images = pixelSpace ? x : vae!.decodeLatents(x.to(vae!.store.device), scale: config.latentScale)
        let path = "\(run.root)/samples/\(String(format: "%07d", step)).png"
        try ImageGrid.write(images, to: path)
        try run.sampleGrid(at: path, step: step)
        say("samples at step \(step): \(path)")
    }
}

/// Images in [-1, 1] (N, C, H, W) → one PNG grid, nrow = round(√N), 2-px gaps; uint8 by x·255 + 0.5 (previews
/// round; evaluation outputs truncate: spec README #10).
public enum ImageGrid {
    public static func write(_ images: Tensor, to path: String, pad: Int = 2) throws {
        let (n, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        let v = ((images.to(.float32) + 1.0) * 0.5).clamp(min: 0, max: 1).scalars(as: Float.self)
        let cols = max(1, Int(Double(n).squareRoot().rounded())), rows = (n + cols - 1) / cols
        let gw = cols * (w + pad) + pad, gh = rows * (h + pad) + pad
        var out = [UInt8](repeating: 0, count: gw * gh * 3)
        for i in 0..<n {
            let r0 = pad + (i / cols) * (h + pad), c0 = pad + (i % cols) * (w + pad)
            for y in 0..<h { for x in 0..<w { for ch in 0..<3 {
                let src = v[((i * c) + min(ch, c - 1)) * h * w + y * w + x]
                out[((r0 + y) * gw + c0 + x) * 3 + ch] = UInt8(min(255, max(0, src * 255 + 0.5)))
            } } }
        }
        try PNGImage.write(out, height: gh, width: gw, channels: 3, to: path)
    }
}
