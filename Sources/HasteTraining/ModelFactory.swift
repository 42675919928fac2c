import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// Turns a TrainConfig into model configs and checks, at start-up, that the alignment it asks for can
/// work (spec README #1, #2): messages name the key and the fix.
public struct ResolvedModels {
    public let student: StudentConfig
    public let teacher: DINOv2Config?
    public let pairs: [(student: Int, teacher: Int)]
    public let heads: Int
}

extension TrainConfig {
    public func studentConfig(sampleShape: [Int], numClasses: Int) throws -> SiTConfig {
        var c = try SiTConfig.named(model)
        if hiddenSize > 0 { c.hiddenSize = hiddenSize }
        if depth > 0 { c.depth = depth }
        if numHeads > 0 { c.numHeads = numHeads }
        c.inChannels = sampleShape[0]
        c.inputSize = sampleShape[1]
        c.numClasses = numClasses
        c.encoderDepth = encoderDepth
        c.projectorHidden = projectorDim
        c.qkNorm = qkNorm
        c.projectorDims = []
        return c
    }

    public func teacherConfig() throws -> DINOv2Config {
        var t = try DINOv2Config.named(encType, resolution: resolution)
        if teacherEmbedDim > 0 { t.embedDim = teacherEmbedDim }
        if teacherDepth > 0 { t.depth = teacherDepth }
        if teacherHeads > 0 { t.numHeads = teacherHeads }
        if teacherPatchSize > 0 { t.patchSize = teacherPatchSize }
        if teacherGrid > 0 { t.grid = teacherGrid }
        return t
    }

    /// Whether `model` names a text-conditioned MMDiT (else a class-conditional SiT).
    public var isMMDiT: Bool { model.hasPrefix("MMDiT") }

    /// The MMDiT of `model` with the size keys applied, for samples of `sampleShape` and caption features of
    /// `contextShape` ([tokens, width]: the context embedder's in-features are the data's width).
    public func mmditConfig(sampleShape: [Int], contextShape: [Int]) throws -> MMDiTConfig {
        var c = try MMDiTConfig.named(model)
        if hiddenSize > 0 { c.hiddenSize = hiddenSize }
        if depth > 0 { c.depth = depth }
        if numHeads > 0 { c.numHeads = numHeads }
        if qkNorm { throw HasteError.config(key: "qk-norm", detail: "the reference MMDiT has no qk-norm (spec/mmdit.md §1); set it false") }
        (c.inChannels, c.inputSize) = (sampleShape[0], sampleShape[1])
        (c.contextTokens, c.contextDim) = (contextShape[0], contextShape[1])
        (c.encoderDepth, c.projectorHidden, c.projectorDims) = (encoderDepth, projectorDim, [])
        return c
    }

    /// The student for data of `sampleShape` with `numClasses` labels, or caption features of `contextShape`.
    /// A class-conditional model on caption data (or the reverse) is refused naming both keys.
    func resolveStudent(sampleShape: [Int], numClasses: Int, contextShape: [Int]?) throws -> StudentConfig {
        switch (isMMDiT, contextShape) {
        case (true, let ctx?): return .mmdit(try mmditConfig(sampleShape: sampleShape, contextShape: ctx))
        case (false, nil): return .sit(try studentConfig(sampleShape: sampleShape, numClasses: numClasses))
        case (true, nil):
            throw HasteError.config(key: "model", detail: "\(model) is text-conditioned but dataset '\(dataset)' has class labels, not captions: use a SiT model, or dataset coco / fashion-mnist-captions")
        case (false, _?):
            throw HasteError.config(key: "model", detail: "\(model) is class-conditional but dataset '\(dataset)' gives caption features: use an MMDiT model (MMDiT-XL/2, or MMDiT-D<depth>/<patch> such as MMDiT-D4/2)")
        }
    }

    /// Student and teacher configs with every alignment constraint checked. `contextShape`: [tokens, width] of the
    /// data's caption features (nil: class labels).
    public func resolveModels(sampleShape: [Int], numClasses: Int, contextShape: [Int]? = nil) throws -> ResolvedModels {
        if sampleShape[1] != sampleShape[2] { throw HasteError.config(key: "data-dir", detail: "samples must be square, got \(sampleShape)") }
        var student = try resolveStudent(sampleShape: sampleShape, numClasses: numClasses, contextShape: contextShape)
        let teacher = usesTeacher ? try teacherConfig() : nil
        switch student {
        case .sit(var c):
            c.projectorDims = teacher.map { [$0.embedDim] } ?? []
            try c.validate()
            student = .sit(c)
        case .mmdit(var c):
            c.projectorDims = teacher.map { [$0.embedDim] } ?? []
            try c.validate()
            student = .mmdit(c)
        }
        guard let teacher else { return ResolvedModels(student: student, teacher: nil, pairs: [], heads: 0) }
        if student.tokens != teacher.tokens {
            let side = Int(Double(student.tokens).squareRoot())
            throw HasteError.config(key: "model", detail: "student has \(student.tokens) tokens (\(side)²) but the teacher has \(teacher.tokens) patches (grid \(teacher.grid)); alignment needs them equal: use patch 2 at 256 px, or set teacher-patch-size")
        }
        var pairs: [(Int, Int)] = []
        if attnCoeff != 0 {
            guard attnStudentLayers.count == attnTeacherLayers.count, !attnStudentLayers.isEmpty else {
                throw HasteError.config(key: "attn-student-layers", detail: "\(attnStudentLayers) and attn-teacher-layers \(attnTeacherLayers) must have the same, non-zero length")
            }
            for s in attnStudentLayers where s < 0 || s >= encoderDepth {
                throw HasteError.config(key: "attn-student-layers", detail: "block \(s) is not below encoder-depth \(encoderDepth) (0-based); lower it or raise encoder-depth")
            }
            for t in attnTeacherLayers where t < 0 || t >= teacher.depth {
                throw HasteError.config(key: "attn-teacher-layers", detail: "block \(t) does not exist in a \(teacher.depth)-block teacher (0-based)")
            }
            pairs = Array(zip(attnStudentLayers, attnTeacherLayers))
        }
        let maxHeads = min(student.numHeads, teacher.numHeads)
        let heads = attnHeads == 0 ? maxHeads : attnHeads
        if attnCoeff != 0 && (heads < 1 || heads > maxHeads) {
            throw HasteError.config(key: "attn-heads", detail: "\(heads) heads requested; student has \(student.numHeads), teacher \(teacher.numHeads): use at most \(maxHeads) (0 = that minimum)")
        }
        return ResolvedModels(student: student, teacher: teacher, pairs: pairs, heads: heads)
    }

    /// Opens the dataset named by `dataset`/`data-dir`.
    public func openDataset() throws -> TrainingDataset {
        switch dataset {
        case "fashion-mnist":
            let dir = dataDir.isEmpty || dataDir == TrainConfig().dataDir ? FashionMNIST.defaultDirectory : dataDir
            return try FashionMNIST(directory: dir)
        case "imagenet":
            // A packed file from `haste preprocess --format hdf5|both`, given directly or inside the folder.
            let packed = dataDir.hasSuffix(".h5") ? dataDir : "\(dataDir)/dataset.h5"
            if FileManager.default.fileExists(atPath: packed) { return try HDF5Dataset(path: packed, numClasses: numClasses) }
            return try ReferenceLayoutDataset(root: dataDir, numClasses: numClasses)
        case "images": return try ImageFolderDataset(root: dataDir, numClasses: numClasses)
        case "coco":
            // The packed file (`haste preprocess --coco --format hdf5|both`), given directly or inside the root, else the folder.
            let packed = dataDir.hasSuffix(".h5") ? dataDir : "\(dataDir)/coco-train.h5"
            let source: CaptionFeatureSource = dataDir.hasSuffix(".h5") || FileManager.default.fileExists(atPath: packed)
                ? try COCOFeatureFile(path: packed) : try COCOFeatureFolder(dataDir: dataDir)
            return try CaptionDataset(source: source, choice: captionChoice)
        case "fashion-mnist-captions":
            let dir = dataDir.isEmpty || dataDir == TrainConfig().dataDir ? FashionMNIST.defaultDirectory : dataDir
            let base = try FashionMNIST(directory: dir)
            let text = try TextEncoderSetup.make(self)
            return FashionMNISTCaptions(base: base, encoder: text.encoder, choice: captionChoice, save: text.save)
        default:
            throw HasteError.config(key: "dataset", detail: "'\(dataset)' is not one of imagenet (images/ + vae-sd/ latents), images (PNG folder + dataset.json, pixel space), fashion-mnist, coco (caption features), fashion-mnist-captions")
        }
    }

    /// Caption choice and CFG drop of caption datasets: their own stream of `seed`, drop probability `cfg-prob`.
    public var captionChoice: CaptionChoice { CaptionChoice(seed: UInt64(seed), dropProbability: cfgProb) }
}

/// Loads teacher weights: a DINOv2 hub checkpoint (`dinov2_vitb14_pretrain.pth`, read natively) or a
/// safetensors state dict with hub keys; the position embedding is resampled to the teacher's grid (`adapt`).
public func loadTeacher(_ config: DINOv2Config, weights path: String) throws -> DINOv2 {
    guard !path.isEmpty else {
        throw HasteError.config(key: "enc-weights", detail: "no teacher weights given: pass --enc-weights FILE (e.g. dinov2_vitb14_pretrain.pth from torch hub), or set enc-type none for vanilla SiT")
    }
    guard FileManager.default.fileExists(atPath: path) else {
        throw HasteError.fileMissing(path: path, hint: "enc-weights must name the teacher's weights: a DINOv2 hub .pth (dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth) or a safetensors state dict with hub keys (for the demo, `haste train-teacher CONFIG` makes one), or set enc-type none for vanilla SiT.")
    }
    let teacher = DINOv2(config, frozen: true)
    let state = TorchCheckpoint.isTorchFile(path) ? try TorchCheckpoint(path: path).stateDict() : try SafetensorsFile(path: path).tensors()
    do { try teacher.store.load(teacher.adapt(state), strict: true) } catch let e as HasteError {
        throw HasteError.fileFormat(path: path, detail: "does not fit the \(config.embedDim)-wide, \(config.depth)-block teacher:\n\(e)")
    }
    teacher.store.setRequiresGrad(false)
    return teacher
}
