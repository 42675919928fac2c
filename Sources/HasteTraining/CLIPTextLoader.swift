import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// Reading CLIP text weights as researchers have them (spec/mmdit.md §6): openai/clip-vit-large-patch14's
/// `model.safetensors` or `pytorch_model.bin` (a whole CLIPModel: only its text part is read), a CLIPTextModel's own
/// file, or a bare text transformer's state dict (`CLIPTextModel.keyMap`); float32, float16 or bfloat16 (widened to
/// float32 on load).
extension CLIPTextModel {
    /// The weights file for `path`: the file itself, or in a folder (a hub snapshot) `model.safetensors`, then
    /// `pytorch_model.bin`.
    public static func weightsFile(_ path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw HasteError.fileMissing(path: path, hint: "Pass the CLIP text encoder's weights: openai/clip-vit-large-patch14's model.safetensors or pytorch_model.bin (or its folder), https://huggingface.co/openai/clip-vit-large-patch14.")
        }
        guard isDir.boolValue else { return path }
        let names = ["model.safetensors", "pytorch_model.bin"]
        for n in names where FileManager.default.fileExists(atPath: path + "/" + n) { return path + "/" + n }
        throw HasteError.fileMissing(path: path + "/" + names[0], hint: "The folder \(path) holds neither \(names.joined(separator: " nor ")) (a Hugging Face CLIP snapshot has one).")
    }

    /// The text part of a weights file, with this model's keys: only those tensors are read (a ViT-L/14 CLIPModel file
    /// is 1.7 GB, its text part 0.5 GB). Values keep the file's dtype.
    public static func readStateDict(_ path: String) throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        if TorchCheckpoint.isTorchFile(path) {
            let file = try TorchCheckpoint(path: path)
            let key = file.defaultStateDictKey
            let tensors = file.flatten(key.isEmpty ? nil : try file.value(at: key)).tensors
            let byName = Dictionary(tensors, uniquingKeysWith: { first, _ in first })
            for (f, m) in keyMap(tensors.map(\.0)) {
                do { out[m] = try byName[f]!.load() } catch let e as HasteError {
                    throw HasteError.fileFormat(path: path, detail: "tensor '\(f)': \(e)")
                }
            }
        } else {
            let file = try SafetensorsFile(path: path)
            for (f, m) in keyMap(file.names) { out[m] = try file.tensor(f) }
        }
        return out
    }

    /// Loads a CLIP text model from `path` (a file, or a folder as `weightsFile` resolves it), frozen, onto `device`.
    /// The configuration is `config` when given, else the `config.json` beside the weights (a CLIPConfig's text_config or
    /// a CLIPTextConfig, as hub snapshots have), else what the weights' shapes imply (heads of 64). Every key and shape
    /// is checked (STYLE R6): missing, unexpected and mis-shaped keys are named.
    public static func load(_ path: String, config: CLIPTextConfig? = nil, device: Device = .cpu) throws -> CLIPTextModel {
        let file = try weightsFile(path)
        let state = try readStateDict(file)
        var source = "given"
        let cfg: CLIPTextConfig
        let json = ((file as NSString).deletingLastPathComponent as NSString).appendingPathComponent("config.json")
        if let config {
            cfg = config
        } else if let data = FileManager.default.contents(atPath: json) {
            cfg = try CLIPTextConfig(huggingFaceJSON: data, name: json)
            source = json
        } else {
            cfg = try CLIPTextConfig.inferred(from: state.mapValues(\.shape), name: file)
            source = "inferred from the weights' shapes"
        }
        if let problem = cfg.problem { throw HasteError.config(key: "text-encoder", detail: problem) }
        let model = CLIPTextModel(cfg, trainable: false)
        do { try model.store.load(state, strict: true) } catch let e as HasteError {
            throw HasteError.fileFormat(path: file, detail: "is not the CLIP text model of this configuration (\(source): \(cfg.numLayers) layers, "
                + "width \(cfg.hiddenSize), \(cfg.numHeads) heads, MLP \(cfg.intermediateSize), vocabulary \(cfg.vocabSize), \(cfg.maxPositions) positions):\n\(e)")
        }
        model.store.move(to: device)
        return model
    }
}
