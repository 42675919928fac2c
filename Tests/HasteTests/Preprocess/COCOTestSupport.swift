import Foundation
import Testing
@testable import HasteIO
@testable import HasteModels
@testable import HasteTensor
@testable import HasteText
@testable import HasteTraining

/// A tiny COCO world written by the tests: images (PNG and a JPEG, bad and missing files, one without captions), a
/// captions file, a tiny random VAE and CLIP text model saved as their loaders read them, and a synthetic BPE merges
/// file (real 49 408-id vocabulary layout, no merges that apply: tokens are byte symbols), so nothing is fetched.
struct COCOWorld {
    let root: String
    var images: String { "\(root)/images" }
    var annotations: String { "\(root)/captions_train2014.json" }
    var vocab: String { "\(root)/merges.txt" }
    var clip: String { "\(root)/clip" }
    var vaeFile: String { "\(root)/vae/diffusion_pytorch_model.safetensors" }
    let vae: AutoencoderKL
    let text: CLIPTextEncoder
    /// Decoded sources of the usable images, by COCO id.
    var sources: [Int: DecodedImage] = [:]
    /// Captions by COCO id in annotation-list order.
    var captions: [Int: [String]] = [:]

    static let vaeConfig: AutoencoderKLConfig = {
        var cfg = AutoencoderKLConfig()
        (cfg.blockOutChannels, cfg.layersPerBlock, cfg.normGroups) = ([4, 4, 8, 8], 1, 4)
        return cfg
    }()

    init(_ root: String) throws {
        self.root = root
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(root)/images", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/clip", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/vae", withIntermediateDirectories: true)
        // Ids out of order in the file; expected idx: 7 → 0, 13 → 1, 100 → 2 (42 truncated, 55 missing, 77 no captions).
        func png(_ w: Int, _ h: Int, _ seed: Int) -> [UInt8] {
            (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: ($0 * 37 + seed * 11) ^ ($0 / (3 * w)) * 5) }
        }
        for (id, w, h) in [(7, 70, 50), (100, 40, 64), (77, 30, 30)] {
            let px = png(w, h, id)
            try PNGImage.write(px, height: h, width: w, channels: 3, to: "\(root)/images/\(id).png", compressionLevel: 6)
            if id != 77 { sources[id] = DecodedImage(width: w, height: h, channels: 3, pixels: px) }
        }
        let jpeg = try Fixture("preprocess_pil.safetensors")["exif_jpg.bytes"].scalars(as: UInt8.self)   // 45×30
        _ = fm.createFile(atPath: "\(root)/images/13.jpg", contents: Data(jpeg))
        sources[13] = try ImageDecoder.decodeRGB(path: "\(root)/images/13.jpg")
        let whole = try Data(contentsOf: URL(fileURLWithPath: "\(root)/images/7.png"))
        _ = fm.createFile(atPath: "\(root)/images/42.png", contents: whole.prefix(whole.count / 2))
        captions = [7: ["A cat on a mat.", "two cats"], 13: ["a photo of a rocket"], 100: ["x", "A DOG!", "a dog, running"]]
        let imgs: [[String: Any]] = [(100, "100.png"), (42, "42.png"), (7, "7.png"), (55, "55.png"), (13, "13.jpg"), (77, "77.png")]
            .map { ["id": $0.0, "file_name": $0.1, "height": 1, "width": 1] }
        var anns: [[String: Any]] = []
        for k in 0..<3 {   // interleaved: each image's captions keep their list order
            for id in [100, 7, 13, 42, 55] where k < (captions[id]?.count ?? 1) {
                anns.append(["image_id": id, "id": anns.count + 1, "caption": captions[id]?[k] ?? "caption of \(id)"])
            }
        }
        try JSONSerialization.data(withJSONObject: ["images": imgs, "annotations": anns]).write(to: URL(fileURLWithPath: "\(root)/captions_train2014.json"))
        // Merges file: header and 48 894 two-symbol lines that never apply.
        try (["#version: synthetic"] + (0..<CLIPVocabulary.mergeCount).map { "q\($0) z" }).joined(separator: "\n").write(toFile: "\(root)/merges.txt", atomically: true, encoding: .utf8)
        let cfg = CLIPTextConfig(vocabSize: CLIPVocabulary.size, hiddenSize: 8, numLayers: 1, numHeads: 2, intermediateSize: 16)
        let model = CLIPTextModel(cfg, seed: 11, trainable: false)
        try SafetensorsWriter.write(model.store.stateDict(), to: "\(root)/clip/model.safetensors")
        try #"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 49408, "max_position_embeddings": 77}"#
            .write(toFile: "\(root)/clip/config.json", atomically: true, encoding: .utf8)
        text = try CLIPTextEncoder(model: model, tokenizer: CLIPTokenizer(vocabularyFile: "\(root)/merges.txt"))
        vae = try AutoencoderKL(Self.vaeConfig, seed: 3)
        try SafetensorsWriter.write(vae.store.stateDict(), to: "\(root)/vae/diffusion_pytorch_model.safetensors")
        try #"{"block_out_channels": [4, 4, 8, 8], "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4}"#
            .write(toFile: "\(root)/vae/config.json", atomically: true, encoding: .utf8)
    }

    /// Resolution 64 (moments [8, 8, 8]) keeps the tiny VAE quick where 256 adds nothing to a test.
    func options(dest: String, format: PreprocessOptions.Format = .folder, resolution: Int = 256) -> COCOPreprocessOptions {
        var o = COCOPreprocessOptions()
        o.resolution = resolution
        (o.annotations, o.source, o.root, o.split, o.format, o.batchSize, o.workers, o.progress) =
            (annotations, images, dest, "train", format, 2, 2, false)
        return o
    }
}

/// Both readers hold the same items, bit for bit, through CaptionFeatureSource.
func expectSameItems(_ a: CaptionFeatureSource, _ b: CaptionFeatureSource, sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(a.count == b.count && a.contextShape == b.contextShape, sourceLocation: sourceLocation)
    #expect(a.emptyContext.scalars(as: Float.self) == b.emptyContext.scalars(as: Float.self), sourceLocation: sourceLocation)
    for i in 0..<min(a.count, b.count) {
        #expect(a.captionCount(i) == b.captionCount(i), sourceLocation: sourceLocation)
        #expect(try a.image(i).shape == b.image(i).shape && a.image(i).scalars(as: UInt8.self) == b.image(i).scalars(as: UInt8.self), "image \(i)", sourceLocation: sourceLocation)
        #expect(try a.moments(i).shape == b.moments(i).shape && a.moments(i).scalars(as: Float.self) == b.moments(i).scalars(as: Float.self), "moments \(i)", sourceLocation: sourceLocation)
        for k in 0..<min(a.captionCount(i), b.captionCount(i)) {
            #expect(try a.caption(i, k).scalars(as: Float.self) == b.caption(i, k).scalars(as: Float.self), "caption \(i)_\(k)", sourceLocation: sourceLocation)
        }
    }
}
