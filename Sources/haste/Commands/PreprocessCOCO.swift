import ArgumentParser
import Foundation
import HasteIO
import HasteModels
import HasteText
import HasteTraining

/// `haste preprocess --coco … | --coco-import …` (spec/data.md §2): MS-COCO feature extraction, or validation and
/// packing of a feature folder made by the reference scripts.
extension Preprocess {
    func runCOCO() throws {
        guard let fm = PreprocessOptions.Format(rawValue: format) else { throw ValidationError("--format must be folder, hdf5 or both") }
        if stage != "all" { throw ValidationError("--stage is for class folders; MS-COCO extraction runs in one pass") }
        if resolution != 256 { FlagCheck.note("--resolution \(resolution): the reference's COCO features are 256 px") }
        if let root = cocoImport {
            for (flag, given) in [("--source", source != nil), ("--text-encoder", textEncoder != nil), ("--vae-weights", vaeWeights != nil), ("--coco-legacy-png", cocoLegacyPng)] where given {
                FlagCheck.note("\(flag) has no effect with --coco-import (nothing is encoded)")
            }
            // --coco beside --coco-import: the annotations the folder was made from, for the COCO image ids (and its split).
            let splits = (split ?? coco.flatMap(COCOAnnotations.splitName)).map { [$0] } ?? ["train", "val"].filter { FileManager.default.fileExists(atPath: "\(root)/\($0)") }
            guard !splits.isEmpty else {
                throw ValidationError("\(root) has neither train/ nor val/: give the root of the feature folder (the reference's coco256_features) or name the subfolder with --split")
            }
            if fm != .folder && dest == nil { throw ValidationError("--format \(format) writes <dest>/coco-<split>.h5: give --dest") }
            for s in splits {
                print(try COCOPreprocessor.importFolder(root: root, split: s, dest: dest ?? root, format: fm, annotations: coco, progress: !quiet))
            }
            return
        }
        guard let annotations = coco else { return }
        guard let source else { throw ValidationError("--coco needs --source IMAGES_DIR (the folder of the split's images, e.g. train2014)") }
        guard let dest else { throw ValidationError("--coco needs --dest DIR (the feature root, e.g. coco256_features)") }
        guard let textEncoder else {
            throw ValidationError("--coco needs --text-encoder WEIGHTS (openai/clip-vit-large-patch14's model.safetensors or pytorch_model.bin, "
                + "https://huggingface.co/openai/clip-vit-large-patch14) to make the caption features. Without one, extract with the reference "
                + "scripts and import their folder: --coco-import FEATURES_DIR [--format hdf5 --dest DIR].")
        }
        guard let split = split ?? COCOAnnotations.splitName(annotations) else {
            throw ValidationError("cannot tell the split from the name \(annotations): give --split train (or val, or any subfolder name)")
        }
        guard !split.isEmpty, !split.contains("/"), split != ".", split != ".." else { throw ValidationError("--split must be a folder name (got '\(split)')") }
        var o = COCOPreprocessOptions()
        (o.annotations, o.source, o.root, o.split, o.resolution, o.format) = (annotations, source, dest, split, resolution, fm)
        (o.maxImages, o.batchSize, o.pngLevel, o.legacyPNG, o.progress) = (maxImages, batchSize, pngLevel, cocoLegacyPng, !quiet)
        if let w = workers { o.workers = w }
        let device = try runtime.openDevice()
        let tokenizer = try CLIPTokenizer(vocabularyFile: try CLIPVocabulary.resolve(tokenizerVocab))
        let text = try CLIPTextEncoder(weights: textEncoder, tokenizer: tokenizer, device: device)
        let vae = try VAELoader.load("mse", weights: vaeWeights, device: device)
        print(try COCOPreprocessor(options: o, vae: vae, text: text).run().description)
    }
}
