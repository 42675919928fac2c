import ArgumentParser
import Foundation
import HasteTensor
import HasteText
import HasteTraining

/// `haste generate`'s text-to-image flags (spec/sampling.md §7): where the captions come from, the CLIP text encoder
/// and its tokenizer vocabulary, and generate_t2i.py's folder prefix.
struct TextPromptOptions: ParsableArguments {
    @Option(name: .customLong("prompt"), help: ArgumentHelp("A prompt for a text-to-image (MMDiT) checkpoint; repeat for several.", valueName: "TEXT"))
    var prompts: [String] = []
    @Option(help: ArgumentHelp("Prompts, one per line (no empty lines).", valueName: "FILE")) var promptsFile: String?
    @Option(help: ArgumentHelp("COCO caption annotations (annotations/captions_val2014.json): the COCO-30K FID protocol, one caption per sample, recorded in <folder>.captions.jsonl.", valueName: "ANNOTATIONS.json"))
    var cocoCaptions: String?
    @Option(help: ArgumentHelp("CLIP text encoder weights: openai/clip-vit-large-patch14's model.safetensors or pytorch_model.bin, or its folder. Default: <run>/text_encoder.safetensors for a checkpoint in <run>/checkpoints/.", valueName: "WEIGHTS"))
    var textEncoder: String?
    @Option(help: "CLIP's bpe_simple_vocab_16e6.txt.gz (default: clip/ under $HASTE_CACHE, the checkout's .cache or ./.cache, as Scripts/fetch_clip_vocab.sh leaves it).")
    var tokenizerVocab: String?
    @Option(help: "With --coco-captions: the folder is <prefix>-coco-size-… (generate_t2i.py --prefix).") var prefix: String?

    private var sources: [String] {
        [prompts.isEmpty ? nil : "--prompt", promptsFile.map { _ in "--prompts-file" }, cocoCaptions.map { _ in "--coco-captions" }].compactMap { $0 }
    }

    func validate() throws {
        if sources.count > 1 { throw ValidationError("give one of --prompt, --prompts-file and --coco-captions, not \(sources.joined(separator: " and "))") }
        if prefix != nil && cocoCaptions == nil { throw ValidationError("--prefix names COCO sample folders: it needs --coco-captions") }
    }

    /// The captions of the run, or nil for class-conditional generation.
    func captionPlan(seed: UInt64) throws -> CaptionPlan? {
        if let cocoCaptions { return try CaptionPlan(cocoAnnotations: cocoCaptions, seed: seed) }
        if let promptsFile { return try CaptionPlan(prompts: try CaptionPlan.promptsFile(promptsFile)) }
        return prompts.isEmpty ? nil : try CaptionPlan(prompts: prompts)
    }

    /// The text conditioning for `model`: errors for a SiT given prompts or an MMDiT given none; loads the
    /// tokenizer and the encoder (checking its width against the model) and encodes the prompts.
    func conditioning(_ plan: CaptionPlan?, model: GenerationModel, checkpoint: String, count: Int, device: Device,
                      verbose: Bool) throws -> TextConditioning? {
        switch (model.mmdit, plan) {
        case (nil, nil):
            if let flag = [textEncoder.map { _ in "--text-encoder" }, tokenizerVocab.map { _ in "--tokenizer-vocab" }].compactMap({ $0 }).first {
                throw ValidationError("\(flag) applies to text-to-image checkpoints, but \(checkpoint) holds a class-conditional \(model.name): drop \(flag)")
            }
            return nil
        case (nil, .some):
            throw ValidationError("\(checkpoint) holds a class-conditional \(model.name), which takes no text: drop \(sources[0]), or pass a text-to-image (MMDiT) checkpoint")
        case (.some, nil):
            throw ValidationError("\(checkpoint) holds a text-to-image \(model.name): give --prompt TEXT (repeatable), --prompts-file FILE or --coco-captions ANNOTATIONS.json")
        case (.some(let mmdit), .some(let plan)):
            let weights = try encoderWeights(checkpoint)
            if verbose { FileHandle.standardError.write(Data("text encoder: \(weights)\n".utf8)) }
            let tokenizer = try CLIPTokenizer(vocabularyFile: try CLIPVocabulary.resolve(tokenizerVocab))
            let encoder = try CLIPTextEncoder(weights: weights, tokenizer: tokenizer, device: device)
            if verbose && plan.isCOCO && count > plan.period {
                FileHandle.standardError.write(Data("note: \(count) samples cycle through the \(plan.period) captioned images (sample i uses image i mod \(plan.period), its caption chosen anew)\n".utf8))
            }
            return try TextConditioning(captions: plan, encoder: encoder, model: mmdit, encoderPath: weights)
        }
    }

    /// --text-encoder, else `<run>/text_encoder.safetensors` beside `<run>/checkpoints/<ckpt>`.
    func encoderWeights(_ checkpoint: String) throws -> String {
        if let textEncoder { return textEncoder }
        let folder = (checkpoint as NSString).deletingLastPathComponent
        let own = ((folder as NSString).deletingLastPathComponent as NSString).appendingPathComponent("text_encoder.safetensors")
        if (folder as NSString).lastPathComponent == "checkpoints", FileManager.default.fileExists(atPath: own) { return own }
        throw ValidationError("no text encoder for \(checkpoint): pass --text-encoder WEIGHTS, the CLIP text model the checkpoint was trained with "
            + "(the reference: openai/clip-vit-large-patch14's model.safetensors, https://huggingface.co/openai/clip-vit-large-patch14; "
            + "a haste run's own is <run>/text_encoder.safetensors, looked for at \(own))")
    }
}

extension Generate {
    /// --num-fid-samples, else 30 000 for COCO (the COCO-30K protocol), 4 per prompt, or generate.py's 50 000.
    func sampleCount(_ plan: CaptionPlan?) -> Int {
        if let numFidSamples { return numFidSamples }
        guard let plan else { return 50_000 }
        return plan.isCOCO ? 30_000 : 4 * plan.period
    }
}
