import Foundation
import HasteTensor

/// Hyper-parameters of CLIP's text transformer: Hugging Face `CLIPTextConfig` (spec/mmdit.md §6). The reference's
/// encoder is `vitL14` (openai/clip-vit-large-patch14's text model); any other size works (tests, the demo).
public struct CLIPTextConfig: Codable, Equatable, Sendable {
    /// The MLP's activation: HF `hidden_act`.
    public enum Activation: String, Codable, Sendable {
        /// `quick_gelu`: x·sigmoid(1.702·x) (OpenAI's CLIP, the reference's encoder).
        case quickGELU = "quick_gelu"
        /// `gelu`: exact erf GELU (some converted OpenCLIP text towers).
        case gelu
    }

    public var vocabSize: Int = 49408
    public var hiddenSize: Int = 768
    public var numLayers: Int = 12
    public var numHeads: Int = 12
    public var intermediateSize: Int = 3072
    public var maxPositions: Int = 77
    public var activation: Activation = .quickGELU
    public var layerNormEps: Double = 1e-5

    public init() {}

    public init(vocabSize: Int, hiddenSize: Int, numLayers: Int, numHeads: Int, intermediateSize: Int,
                maxPositions: Int = 77, activation: Activation = .quickGELU, layerNormEps: Double = 1e-5) {
        (self.vocabSize, self.hiddenSize, self.numLayers, self.numHeads) = (vocabSize, hiddenSize, numLayers, numHeads)
        (self.intermediateSize, self.maxPositions, self.activation, self.layerNormEps) = (intermediateSize, maxPositions, activation, layerNormEps)
    }

    /// openai/clip-vit-large-patch14's text model: 12 layers, width 768, 12 heads of 64, MLP 3072, 49 408 tokens, 77 positions.
    public static let vitL14 = CLIPTextConfig()

    public var headDim: Int { hiddenSize / numHeads }

    /// Why this configuration cannot be built, or nil.
    public var problem: String? {
        if [vocabSize, hiddenSize, numLayers, numHeads, intermediateSize, maxPositions].contains(where: { $0 <= 0 }) {
            return "sizes must be positive (vocab \(vocabSize), hidden \(hiddenSize), layers \(numLayers), heads \(numHeads), intermediate \(intermediateSize), positions \(maxPositions))"
        }
        if hiddenSize % numHeads != 0 { return "hidden size \(hiddenSize) is not a multiple of the \(numHeads) heads" }
        if !(layerNormEps > 0) { return "layer_norm_eps \(layerNormEps) must be positive" }
        return nil
    }

    /// The text part of a Hugging Face `config.json`: a `CLIPConfig` (its `text_config`, as openai/clip-vit-large-patch14
    /// ships) or a `CLIPTextConfig` (top level). Keys it leaves out take HF's defaults, as `from_pretrained` does.
    public init(huggingFaceJSON data: Data, name: String) throws {
        guard let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw HasteError.fileFormat(path: name, detail: "not a JSON object (expected a Hugging Face CLIP config.json)")
        }
        let text = top["text_config"] as? [String: Any] ?? top
        guard text["hidden_size"] != nil || text["model_type"] as? String == "clip_text_model" else {
            throw HasteError.fileFormat(path: name, detail: "neither a CLIPConfig (no text_config) nor a CLIPTextConfig (no hidden_size)")
        }
        // HF 4.23 CLIPTextConfig defaults (ViT-B/32's text model).
        self.init(vocabSize: 49408, hiddenSize: 512, numLayers: 12, numHeads: 8, intermediateSize: 2048)
        func int(_ key: String, _ value: inout Int) throws {
            guard let v = text[key] else { return }
            guard let n = v as? Int else { throw HasteError.fileFormat(path: name, detail: "\(key) = \(v) is not an integer") }
            value = n
        }
        try int("vocab_size", &vocabSize)
        try int("hidden_size", &hiddenSize)
        try int("num_hidden_layers", &numLayers)
        try int("num_attention_heads", &numHeads)
        try int("intermediate_size", &intermediateSize)
        try int("max_position_embeddings", &maxPositions)
        if let eps = text["layer_norm_eps"] {
            guard let e = eps as? Double else { throw HasteError.fileFormat(path: name, detail: "layer_norm_eps = \(eps) is not a number") }
            layerNormEps = e
        }
        if let act = text["hidden_act"] {
            guard let s = act as? String, let a = Activation(rawValue: s) else {
                throw HasteError.fileFormat(path: name, detail: "hidden_act \(act): haste's CLIP text model supports quick_gelu and gelu")
            }
            activation = a
        }
        if let problem { throw HasteError.fileFormat(path: name, detail: "text config: \(problem)") }
    }

    /// The sizes a `text_model.` state dict implies (token and position tables, fc1, the layer count). Heads cannot
    /// be read from shapes: CLIP's text towers all use heads of 64, so `hidden / 64`; other models need a config.json.
    public static func inferred(from state: [String: [Int]], name: String) throws -> CLIPTextConfig {
        let p = "text_model."
        guard let tok = state[p + "embeddings.token_embedding.weight"], tok.count == 2 else {
            let some = state.keys.sorted().prefix(8).joined(separator: ", ")
            throw HasteError.fileFormat(path: name, detail: "not a CLIP text model: no text_model.embeddings.token_embedding.weight [V, D] (keys: \(some)\(state.count > 8 ? ", …" : ""))")
        }
        let pos = state[p + "embeddings.position_embedding.weight"]
        let fc1 = state[p + "encoder.layers.0.mlp.fc1.weight"]
        let layers = Set(state.keys.compactMap { key -> Int? in
            guard key.hasPrefix(p + "encoder.layers.") else { return nil }
            return Int(key.dropFirst((p + "encoder.layers.").count).prefix { $0 != "." })
        })
        guard let pos, pos.count == 2, let fc1, fc1.count == 2, let last = layers.max() else {
            throw HasteError.fileFormat(path: name, detail: "not a CLIP text model: position_embedding, encoder.layers.0.mlp.fc1 or the layers are missing")
        }
        let d = tok[1]
        guard d % 64 == 0 else {
            throw HasteError.fileFormat(path: name, detail: "width \(d) is not a multiple of CLIP's 64-wide heads: put the model's config.json (num_attention_heads) beside the weights")
        }
        return CLIPTextConfig(vocabSize: tok[0], hiddenSize: d, numLayers: last + 1, numHeads: d / 64,
                              intermediateSize: fc1[0], maxPositions: pos[0])
    }
}

/// What the text model returns: HF `BaseModelOutputWithPooling`'s first two fields.
public struct CLIPTextOutput {
    /// After the final LayerNorm, [N, L, D] (the reference's text feature, mmdit.md §6).
    public let lastHiddenState: Tensor
    /// `last_hidden_state` at each row's first largest id (HF `pooler_output`: the end-of-text token for
    /// tokenizer output, whose 49407 is the largest id), [N, D].
    public let pooled: Tensor
}
