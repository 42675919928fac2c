import ArgumentParser
import Foundation
import HasteIO
import HasteModels
import HasteTensor
import HasteTraining

/// `haste preprocess`: ImageNet-style class folders → ADM-cropped PNGs + SD-VAE moments in the reference layout
/// and/or one packed HDF5 file (spec/data.md §1). Resumable: rerun the same command after an interruption.
struct Preprocess: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Crop and VAE-encode an image-folder tree into a training dataset.",
        discussion: """
        Writes <dest>/images/00000/img00000000.png (ADM center crop), <dest>/vae-sd/00000/img-mean-std-00000000.npy
        (posterior mean|std) with dataset.json labels (sorted class-folder names), and with --format hdf5|both
        <dest>/dataset.h5. Bad inputs (undecodable, over Pillow's pixel cap, or more than 64:1) are skipped and
        listed with the reason in <dest>/preprocess-report.tsv. A class folder without images is an error (it would
        renumber the labels after it): fill or delete it, or give the labels in <source>/dataset.json.
        Examples:
          haste preprocess --source ILSVRC/Data/CLS-LOC/train --dest data/imagenet256 --vae-weights sd-vae-ft-mse/diffusion_pytorch_model.safetensors
          haste train configs/sit-b-2-haste.yaml --data-dir data/imagenet256
        MS-COCO (spec/data.md §2): --coco captions_train2014.json --source train2014 --dest coco256_features writes the
        reference feature folder <dest>/<split>/{idx}.png|.npy|_{k}.npy and <dest>/empty_context.npy (and with
        --format hdf5|both <dest>/coco-<split>.h5); --coco-import ROOT validates (and packs) a folder made by the
        reference scripts, without any model:
          haste preprocess --coco annotations/captions_train2014.json --source train2014 --dest coco256_features \
            --text-encoder clip-vit-large-patch14 --vae-weights sd-vae-ft-mse/diffusion_pytorch_model.safetensors
          haste preprocess --coco-import coco256_features --split train --format hdf5 --dest coco256_features
        """)

    @OptionGroup var runtime: RuntimeOptions
    @Option(help: "Folder of class folders of JPEG/PNG images.") var source: String?
    @Option(help: "Output folder (created; a rerun resumes). With --coco: the feature root (the reference's coco256_features).") var dest: String?
    @Option(parsing: .unconditional, help: "Crop side: 256 or 512.") var resolution = 256
    @Option(help: "SD-VAE weights (diffusion_pytorch_model.safetensors; a config.json beside it is honoured).") var vaeWeights: String?
    @Option(help: "convert | encode | all") var stage = "all"
    @Option(help: "folder | hdf5 | both") var format = "folder"
    @Option(parsing: .unconditional, help: "Only the first N images (sorted order).") var maxImages: Int?
    @Option(parsing: .unconditional, help: "Decode/crop threads (default: all cores).") var workers: Int?
    @Option(parsing: .unconditional, help: "Images per VAE call.") var batchSize = 8
    @Option(parsing: .unconditional, help: "zlib level of images/*.png, 0–9 (0 = stored, as the reference writes them: fastest to write and to read; 6 ≈ half the disk).")
    var pngLevel = 0
    @Flag(help: "No progress bar.") var quiet = false
    @Option(help: "MS-COCO captions file (annotations/captions_train2014.json): extract that split's features (--source = its image folder).")
    var coco: String?
    @Option(help: "Validate a COCO feature folder made by the reference scripts (its root: empty_context.npy and <split>/), and with --format hdf5|both pack it into <dest>/coco-<split>.h5; a --coco file given too supplies the COCO image ids.")
    var cocoImport: String?
    @Option(help: "COCO split subfolder under --dest (default: train or val from the --coco file name; with --coco-import every one of train/ and val/ present).")
    var split: String?
    @Option(help: "CLIP text encoder weights for --coco (openai/clip-vit-large-patch14's model.safetensors or pytorch_model.bin, or its folder).")
    var textEncoder: String?
    @Option(help: "CLIP's bpe_simple_vocab_16e6.txt.gz (default: clip/ under $HASTE_CACHE, the checkout's .cache or ./.cache, as Scripts/fetch_clip_vocab.sh leaves it).")
    var tokenizerVocab: String?
    @Flag(help: "Store {idx}.png as the reference does (its [-1,1] tensor saved as if [0,1]: max(0, 2p-255)) instead of the true crop.")
    var cocoLegacyPng = false

    func validate() throws {
        guard [256, 512].contains(resolution) else { throw ValidationError("--resolution must be 256 or 512 (got \(resolution))") }
        try FlagCheck.range("batch-size", batchSize, .atLeast(1))
        if let w = workers { try FlagCheck.range("workers", w, .atLeast(1)) }
        if let m = maxImages { try FlagCheck.range("max-images", m, .atLeast(1)) }
        guard (0...9).contains(pngLevel) else { throw ValidationError("--png-level must be 0–9 (got \(pngLevel))") }
    }

    func run() throws {
        if coco != nil || cocoImport != nil { return try runCOCO() }
        for (flag, given) in [("--split", split != nil), ("--text-encoder", textEncoder != nil), ("--tokenizer-vocab", tokenizerVocab != nil), ("--coco-legacy-png", cocoLegacyPng)] where given {
            throw ValidationError("\(flag) is for MS-COCO: give --coco ANNOTATIONS.json (or --coco-import FEATURES_DIR)")
        }
        guard let dest else { throw ValidationError("--dest is required (the output folder)") }
        var o = PreprocessOptions()
        guard let st = PreprocessOptions.Stage(rawValue: stage) else { throw ValidationError("--stage must be convert, encode or all") }
        guard let fm = PreprocessOptions.Format(rawValue: format) else { throw ValidationError("--format must be folder, hdf5 or both") }
        if st != .encode && source == nil { throw ValidationError("--source is needed for the convert stage") }
        if st == .convert && vaeWeights != nil { FlagCheck.note("--vae-weights has no effect with --stage convert (no VAE encoding)") }
        if st == .encode && source != nil { FlagCheck.note("--source has no effect with --stage encode (it reads <dest>/images)") }
        (o.source, o.dest, o.resolution, o.stage, o.format) = (source ?? "", dest, resolution, st, fm)
        (o.maxImages, o.batchSize, o.progress) = (maxImages, batchSize, !quiet)
        if let w = workers { o.workers = w }
        o.pngLevel = pngLevel
        let device = try runtime.openDevice()   // the VAE encoder's device and threads (decode/crop threads: --workers)
        let vae = st == .convert ? nil : try VAELoader.load("mse", weights: vaeWeights, device: device)
        let summary = try Preprocessor(options: o, vae: vae).run()
        print(summary.description)
    }
}
