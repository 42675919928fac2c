import Foundation
import HasteDiffusion
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

/// Sample grids from the EMA model during training (spec/method.md §15; **[robust]** EMA weights in eval
/// mode, no label dropout). Fixed noise and labels (or prompts), drawn once from their own stream, so grids are
/// comparable across steps and across resumes. Euler ODE, `sample-num-steps` steps, guidance `sample-cfg` on [0, 1].
/// Latent samples are decoded by the SD-VAE (latent / latent-scale → decoder; spec/method.md §15) when one is
/// given; without it latent previews are skipped with one note. Text-conditioned students sample the dataset's
/// fixed prompts (`PreviewPrompts`), one per column, guided against the empty caption, with the caption under each
/// column (`CaptionGrid`).
final class Preview {
    let config: TrainConfig
    let model: any DenoisingStudent
    let noise: Tensor, labels: Tensor
    let prompts: PreviewPrompts?
    /// The prompts' features and the empty caption's (last row) on the model's device; the sampler's "labels" index it.
    let table: Tensor?
    let nullLabel: Int
    let pixelSpace: Bool
    let vae: AutoencoderKL?
    private var warned = false

    init(config: TrainConfig, models: ResolvedModels, sampleShape: [Int], pixelSpace: Bool, vae: AutoencoderKL? = nil,
         device: Device = .cpu, prompts: PreviewPrompts? = nil) throws {
        self.config = config
        model = try models.student.make()                      // same layout as the EMA (projectors unused here)
        model.store.setRequiresGrad(false)                     // sampled under noGrad only
        model.store.move(to: device)                           // the EMA's device; noise and labels stay on the host
        vae?.store.move(to: device)
        let g = RandomGenerator(seed: UInt64(config.seed) &+ 2)
        let n = config.sampleCount
        noise = g.normal([n] + sampleShape)
        var null = prompts?.texts.count ?? 0
        if case .sit(let c) = models.student { null = c.numClasses }
        require(null > 0, "Preview: a text-conditioned student needs the dataset's preview prompts")
        nullLabel = null
        labels = Tensor((0..<n).map { Int64($0 % null) }, shape: [n])
        self.prompts = prompts
        table = prompts?.table.to(device)
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
        let guidance = Guidance(scale: config.sampleCfg, low: 0, high: 1, nullClass: nullLabel)
        let (m, table) = (model, table)
        let velocity: VelocityModel = { x, t, y in
            let condition: Conditioning = table.map { .context($0.indexSelect(axis: 0, indices: y)) } ?? .labels(y)
            return m.predict(x, t: t, condition: condition, logitLayers: [], projections: false, checkpointing: false).velocity
        }
        let x = Samplers.euler(Samplers.onDevice(m.store.device, velocity), noise: noise, labels: labels,
                               steps: config.sampleNumSteps, guidance: guidance)
        let images = pixelSpace ? x : vae!.decodeLatents(x.to(vae!.store.device), scale: config.latentScale)
        let path = "\(run.root)/samples/\(String(format: "%07d", step)).png"
        if let prompts { try CaptionGrid.write(images.to(.cpu), captions: prompts.texts, to: path) } else { try ImageGrid.write(images, to: path) }
        try run.sampleGrid(at: path, step: step)
        say("samples at step \(step): \(path)")
    }
}

/// The fixed preview prompts of caption data: the first `min(sample-count, maxColumns)` the dataset offers (one grid
/// column each) and their features with the empty caption's as the last row, [P + 1, L, D]. nil for class labels.
struct PreviewPrompts {
    static let maxColumns = 10
    let texts: [String]
    let table: Tensor

    init?(dataset: TrainingDataset, count: Int) throws {
        guard let d = dataset as? CaptionedDataset else { return nil }
        let p = try d.previewPrompts(min(count, PreviewPrompts.maxColumns))
        texts = p.texts
        table = Tensor.cat([p.context, d.emptyContext.unsqueezed(0)], axis: 0)
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
