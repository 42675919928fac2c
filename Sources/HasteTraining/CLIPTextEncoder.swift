import HasteModels
import HasteTensor
import HasteText

/// Captions → CLIP text features, as the reference's offline pipeline makes them (spec/mmdit.md §6): Hugging Face's
/// CLIPTokenizer (truncation and padding to 77 with 49407, no attention mask) then CLIPTextModel's
/// `last_hidden_state`, [N, 77, D] float32 per caption (D = 768 for openai/clip-vit-large-patch14). Used by COCO
/// preprocessing (`{i}_{k}.npy`, `empty_context.npy`) and prompt-conditioned generation.
public final class CLIPTextEncoder {
    public let model: CLIPTextModel
    public let tokenizer: CLIPTokenizer

    /// A loaded (or random, for the demo) model with the tokenizer; the model must take the tokenizer's 49 408 ids
    /// and 77 positions.
    public init(model: CLIPTextModel, tokenizer: CLIPTokenizer) throws {
        let c = model.config
        guard c.vocabSize >= CLIPVocabulary.size, c.maxPositions >= CLIPTokenizer.contextLength else {
            throw HasteError.config(key: "text-encoder", detail: "the text model takes \(c.vocabSize) token ids and \(c.maxPositions) positions; "
                + "CLIP's tokenizer needs \(CLIPVocabulary.size) ids and \(CLIPTokenizer.contextLength) positions")
        }
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Loads the weights (`CLIPTextModel.load`: a file or hub folder; safetensors or torch; a whole CLIPModel's text
    /// part) onto `device`.
    public convenience init(weights: String, tokenizer: CLIPTokenizer, config: CLIPTextConfig? = nil, device: Device = .cpu) throws {
        try self.init(model: try CLIPTextModel.load(weights, config: config, device: device), tokenizer: tokenizer)
    }

    public var device: Device { model.store.device }
    /// Width of a feature row (768 for ViT-L/14).
    public var width: Int { model.config.hiddenSize }

    /// The 77 token ids of each text (`CLIPTokenizer.encode`).
    public func tokenize(_ texts: [String]) -> [[Int32]] { tokenizer.encode(texts) }

    /// `last_hidden_state` of each text, [N, 77, D] on the model's device, computed `batchSize` texts at a time
    /// (each row depends only on its own text, so the batch size does not change the values beyond float rounding
    /// of the GEMMs).
    public func encode(_ texts: [String], batchSize: Int = 32) -> Tensor {
        require(batchSize > 0, "CLIPTextEncoder.encode: batchSize \(batchSize)")
        guard !texts.isEmpty else {
            return Tensor.zeros([0, CLIPTokenizer.contextLength, width], device: device)
        }
        let ids = tokenize(texts)
        return noGrad {
            let parts = stride(from: 0, to: ids.count, by: batchSize).map { start in
                model(Array(ids[start..<min(start + batchSize, ids.count)])).lastHiddenState
            }
            return parts.count == 1 ? parts[0] : Tensor.cat(parts, axis: 0)
        }
    }

    /// One text's feature, [77, D] (e.g. `empty_context.npy` = `encode("")`).
    public func encode(_ text: String) -> Tensor {
        encode([text]).select(axis: 0, index: 0)
    }
}
