import Foundation
import HasteDiffusion
import HasteIO
import HasteModels
import HasteTensor

/// What a text-to-image generation run conditions each sample on (spec/sampling.md §7): the CLIP text features of
/// its caption (`CaptionPlan`), and for classifier-free guidance the features of "" (the reference's
/// `empty_context`). Prompts are encoded once, in one batch; COCO captions batch by batch. Features live on the host,
/// where the samplers keep their state.
public final class TextConditioning {
    public let captions: CaptionPlan
    public let encoder: CLIPTextEncoder
    /// Features of "", [77, D].
    public let nullContext: Tensor
    /// Features of each prompt, [P, 77, D]; nil for COCO.
    let fixed: Tensor?

    /// Encodes "" and the prompts after checking that `model` takes this encoder's features (an error naming both
    /// widths and `encoderPath` otherwise).
    public init(captions: CaptionPlan, encoder: CLIPTextEncoder, model: MMDiT, encoderPath: String) throws {
        guard model.config.contextDim == encoder.width else {
            throw HasteError.config(key: "text-encoder", detail: "\(encoderPath) makes \(encoder.width)-wide text features, but the MMDiT's "
                + "context_embedder takes \(model.config.contextDim) (its context dim): pass the text encoder the model was trained "
                + "with (openai/clip-vit-large-patch14 for the reference's 768)")
        }
        self.captions = captions
        self.encoder = encoder
        nullContext = encoder.encode("").to(.cpu)
        fixed = captions.fixedTexts.map { encoder.encode($0).to(.cpu) }
    }

    /// Feature width D (the MMDiT's context width).
    public var width: Int { encoder.width }

    /// Contexts [n, 77, D] (host) of samples `indices`.
    public func contexts(_ indices: [Int]) -> Tensor {
        if let fixed {
            return Tensor.cat(indices.map { fixed.narrowed(0, start: $0 % fixed.shape[0], length: 1) }, axis: 0).contiguous()
        }
        return encoder.encode(indices.map { captions.caption($0).text }).to(.cpu)
    }
}

extension SampleGenerator {
    /// Text-to-image: writes `captionsPath` (which caption each sample gets). A table already there from an earlier
    /// run must agree wherever that run left a PNG: resuming into a folder made from other captions (another prompt
    /// list, seed or annotations file) is refused instead of mixing the two sets.
    func writeCaptionTable() throws {
        guard let text else { return }
        let table = text.captions.table(count: options.numFidSamples)
        if let data = FileManager.default.contents(atPath: captionsPath) {
            let old = String(decoding: data, as: UTF8.self)
            if old == table { return }
            let (was, now) = (old.split(separator: "\n"), table.split(separator: "\n"))
            for i in 0..<min(was.count, now.count) where was[i] != now[i] && FileManager.default.fileExists(atPath: pngPath(i)) {
                throw HasteError.fileFormat(path: folder, detail: "holds samples made from other captions (\(captionsPath) line \(i + 1): \(was[i]); "
                    + "this run: \(now[i])): use another --sample-dir\(text.captions.isCOCO ? " or --prefix" : ""), or delete the folder and \(captionsPath)")
            }
        }
        try AtomicFile.write(Array(table.utf8), to: captionsPath)
    }
}

extension SampleGenerator {
    /// Prompts: `<folder>.grid.png`, one column per prompt (the first 16) holding its samples (up to 8; `limit` caps
    /// the samples in the grid) with the prompt under it. Returns the path, or nil when this is not a prompt run or
    /// a sample of the grid has no PNG yet (other shards).
    public func writePromptGrid(limit: Int? = nil) throws -> String? {
        guard let captions = text?.captions, !captions.isCOCO else { return nil }
        let count = min(options.numFidSamples, limit ?? .max), p = captions.period
        let columns = (0..<min(p, 16)).map { c in Array(stride(from: c, to: count, by: p).prefix(8)) }.filter { !$0.isEmpty }
        guard columns.allSatisfy({ $0.allSatisfy { FileManager.default.fileExists(atPath: pngPath($0)) } }) else { return nil }
        let path = folder + ".grid.png"
        try CaptionedGrid.write(columns: try columns.map { try $0.map { try PNGImage.read(pngPath($0)) } },
                                captions: columns.map { captions.caption($0[0]).text }, to: path)
        return path
    }
}
