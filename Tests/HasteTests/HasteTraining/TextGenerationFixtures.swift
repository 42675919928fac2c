import Foundation
import HasteIO
import HasteModels
import HasteTensor
import HasteText
@testable import HasteTraining

/// A tiny pixel-space MMDiT (1×8×8, patch 2, depth 2) with PyTorch's default (non-zero) init. Width 64 = 32·depth
/// is the named size MMDiT-D2/2 (2 heads); other widths need their heads given.
func tinyT2IMMDiT(hidden: Int = 64, heads: Int = 2, contextDim: Int = 64, projectors: [Int] = [], seed: UInt64 = 1) throws -> MMDiT {
    var c = MMDiTConfig()
    (c.inputSize, c.patchSize, c.inChannels, c.depth, c.hiddenSize, c.numHeads) = (8, 2, 1, 2, hidden, heads)
    (c.contextDim, c.posEmbedMaxSize, c.encoderDepth, c.projectorDims, c.projectorHidden) = (contextDim, nil, 1, projectors, 8)
    let m = try MMDiT(c, seed: seed)
    m.store.setRequiresGrad(false)
    return m
}

/// Files for text-to-image generation tests, made once per test process in a temporary folder:
/// - `run/checkpoints/0000010.safetensors`: a haste training checkpoint of `tinyT2IMMDiT` (ema. = seed 5, model. =
///   seed 6, config: MMDiT-D2/2 on fashion-mnist, i.e. pixel space) and `run/text_encoder.safetensors` beside it;
/// - `plain.safetensors`: the EMA weights as a bare state dict (latent, since no config says otherwise);
/// - `clip64.safetensors`, `clip32/` (model.safetensors + config.json): random CLIP text models (1 layer, widths 64
///   and 32, the full 49 408-id vocabulary) with Hugging Face `text_model.` keys;
/// - `vocab.txt`: a synthetic BPE merges file of the real one's length (the real one may be absent offline).
final class T2IFiles: @unchecked Sendable {
    static let shared = try! T2IFiles()
    let dir: String
    var checkpoint: String { dir + "/run/checkpoints/0000010.safetensors" }
    var plain: String { dir + "/plain.safetensors" }
    var clip64: String { dir + "/clip64.safetensors" }
    var clip32: String { dir + "/clip32" }
    var vocab: String { dir + "/vocab.txt" }

    static let clipConfig = CLIPTextConfig(vocabSize: CLIPVocabulary.size, hiddenSize: 64, numLayers: 1, numHeads: 1, intermediateSize: 64)
    static let trainConfig: TrainConfig = {
        var c = TrainConfig()
        (c.dataset, c.model, c.encoderDepth, c.projectorDim) = ("fashion-mnist", "MMDiT-D2/2", 1, 8)
        return c
    }()

    private init() throws {
        dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/run/checkpoints", withIntermediateDirectories: true)
        let ema = try tinyT2IMMDiT(projectors: [6], seed: 5), raw = try tinyT2IMMDiT(projectors: [6], seed: 6)
        let tensors = ema.store.stateDict().map { ("ema." + $0.0, $0.1) } + raw.store.stateDict().map { ("model." + $0.0, $0.1) }
        try SafetensorsWriter.write(tensors, metadata: ["format": Checkpoint.format, "config": try T2IFiles.trainConfig.yaml()], to: checkpoint)
        try SafetensorsWriter.write(ema.store.stateDict(), to: plain)
        let clip = CLIPTextModel(T2IFiles.clipConfig, seed: 3)
        try SafetensorsWriter.write(clip.store.stateDict(), to: clip64)
        try FileManager.default.copyItem(atPath: clip64, toPath: dir + "/run/text_encoder.safetensors")
        var narrow = T2IFiles.clipConfig
        (narrow.hiddenSize, narrow.numHeads) = (32, 2)
        try FileManager.default.createDirectory(atPath: clip32, withIntermediateDirectories: true)
        try SafetensorsWriter.write(CLIPTextModel(narrow, seed: 4).store.stateDict(), to: clip32 + "/model.safetensors")
        let json = #"{"model_type": "clip_text_model", "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 49408, "max_position_embeddings": 77}"#
        try json.write(toFile: clip32 + "/config.json", atomically: true, encoding: .utf8)
        let letters = Array("abcdefghijklmnopqrstuvwxyz").map(String.init)
        let merges = (0..<CLIPVocabulary.mergeCount).map { (i: Int) -> String in
            let (a, b): (String, String) = (letters[i % 26], letters[(i / 26) % 26])
            return a + " " + b + "</w>"
        }
        try ("#version: 0.2\n" + merges.joined(separator: "\n") + "\n").write(toFile: vocab, atomically: true, encoding: .utf8)
    }

    /// The CLIP text encoder of width 64 with the synthetic vocabulary.
    func encoder() throws -> CLIPTextEncoder {
        try CLIPTextEncoder(weights: clip64, tokenizer: try CLIPTokenizer(vocabularyFile: vocab))
    }
}

/// A COCO captions file: images 42 (2 captions), 7 (3 captions), 19 (1 caption); annotations in file order.
func writeTinyCOCOCaptions(_ path: String) throws {
    let anns: [[String: Any]] = [
        ["image_id": 42, "id": 1, "caption": "A dog on a beach."], ["image_id": 7, "id": 2, "caption": "a red bus"],
        ["image_id": 42, "id": 3, "caption": "A dog running by the sea"], ["image_id": 19, "id": 4, "caption": "two cats \"sleeping\""],
        ["image_id": 7, "id": 5, "caption": "A bus in the city"], ["image_id": 7, "id": 6, "caption": "double-decker bus"],
    ]
    let top: [String: Any] = ["images": [["id": 7], ["id": 19], ["id": 42]], "annotations": anns]
    try JSONSerialization.data(withJSONObject: top).write(to: URL(fileURLWithPath: path))
}
