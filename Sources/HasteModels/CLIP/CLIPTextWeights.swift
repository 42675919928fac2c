import HasteTensor

/// The one conversion between CLIP text weights as researchers have them and this model (STYLE §2.6): openai's
/// hub files are a whole `CLIPModel` (text_model.*, vision_model.*, the two projections, logit_scale, position_ids
/// buffers), a `CLIPTextModel`'s own file has `text_model.` keys, a bare text transformer's state dict has none.
/// Reading the files: `CLIPTextModel.load` (HasteTraining/CLIPTextLoader.swift).
extension CLIPTextModel {
    public static let keyPrefix = "text_model."

    /// Whether a file key is not part of the text model: a CLIPModel's vision tower, projections and temperature, and
    /// HF's `position_ids` buffers (int64 0..<77, not a parameter here).
    public static func isIgnored(_ key: String) -> Bool {
        key.hasPrefix("vision_model.") || key == "visual_projection.weight" || key == "text_projection.weight"
            || key == "logit_scale" || key == "embeddings.position_ids" || key == keyPrefix + "embeddings.position_ids"
    }

    /// File key → model key for every key the model takes or should be told about: when any key starts with
    /// `text_model.` the file is read as HF's (other keys kept as they are, so a strict load names them unexpected);
    /// otherwise every key gets the prefix (a bare text transformer). Ignored keys (`isIgnored`) are left out.
    public static func keyMap(_ fileKeys: [String]) -> [(file: String, model: String)] {
        let prefixed = fileKeys.contains { $0.hasPrefix(keyPrefix) }
        return fileKeys.filter { !isIgnored($0) }.map { ($0, prefixed ? $0 : keyPrefix + $0) }
    }

    /// A state dict with any of the accepted key styles → this model's keys (`keyMap`); values untouched (float16 and
    /// bfloat16 are widened by `ParameterStore.load`).
    public static func adapt(_ state: [String: Tensor]) -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: keyMap(Array(state.keys)).map { ($0.model, state[$0.file]!) })
    }
}
