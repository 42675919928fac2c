import Foundation
import HasteIO
import HasteModels
import HasteNN
import HasteTensor
import HasteText

/// The text encoder of a run whose captions are encoded at start-up (the Fashion-MNIST demo): the real tokenizer
/// and vocabulary (located as `haste tokenize` does), and either the weights named by `text-encoder` or a small
/// CLIP-architecture text model with random frozen weights drawn from a fixed seed. The random one is saved as
/// `<run>/text_encoder.safetensors` with Hugging Face `text_model.` keys, where `haste generate` looks for it
/// beside the run's `checkpoints/` (so `CLIPTextModel.load` reads it back: heads of 64, as it infers them).
public enum TextEncoderSetup {
    /// The file beside a run's `checkpoints/` folder (contract with `haste generate`).
    public static let fileName = "text_encoder.safetensors"
    /// The random encoder's seed: fixed, so every demo run encodes captions the same way.
    public static let seed: UInt64 = 0x7E47
    public static func path(runRoot: String) -> String { "\(runRoot)/\(fileName)" }

    /// The random demo encoder's configuration: `width` (a multiple of 64) in heads of 64, MLP 4·width, 77 positions,
    /// CLIP's 49 408 tokens.
    public static func randomConfig(width: Int, layers: Int) -> CLIPTextConfig {
        CLIPTextConfig(vocabSize: CLIPVocabulary.size, hiddenSize: width, numLayers: layers, numHeads: max(1, width / 64),
                       intermediateSize: 4 * width)
    }

    /// The encoder `config` asks for, and the model to save beside the run (nil when the weights came from a file).
    public static func make(_ config: TrainConfig, device: Device = .cpu) throws -> (encoder: CLIPTextEncoder, save: CLIPTextModel?) {
        let vocab = try CLIPVocabulary.resolve(config.tokenizerVocab.isEmpty ? nil : config.tokenizerVocab)
        let tokenizer = try CLIPTokenizer(vocabularyFile: vocab)
        if !config.textEncoder.isEmpty {
            return (try CLIPTextEncoder(weights: config.textEncoder, tokenizer: tokenizer, device: device), nil)
        }
        let model = CLIPTextModel(randomConfig(width: config.textEncoderWidth, layers: config.textEncoderLayers), seed: seed, trainable: false)
        model.store.move(to: device)
        return (try CLIPTextEncoder(model: model, tokenizer: tokenizer), model)
    }

    /// Writes `model` to `<runRoot>/text_encoder.safetensors` (atomically, via a temporary file).
    public static func save(_ model: CLIPTextModel, runRoot: String) throws {
        try SafetensorsWriter.write(model.store.stateDict(), metadata: ["format": "pt"], to: path(runRoot: runRoot))
    }
}
