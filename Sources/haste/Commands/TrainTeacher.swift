import ArgumentParser
import Foundation
import HasteModels
import HasteTraining

/// `haste train-teacher`: the demo's stand-in for DINOv2 weights (none can be downloaded offline): a small
/// DINOv2-architecture ViT trained supervised on the demo data, saved under hub key names.
struct TrainTeacher: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-teacher",
        abstract: "Train a small DINOv2-architecture teacher on the training data (the offline demo's teacher).")

    @OptionGroup var runtime: RuntimeOptions
    @Argument(help: "The training config whose data and teacher-* keys to use, e.g. configs/demo.yaml.") var config: String
    @Option(help: "Where to write the teacher (safetensors); default: the config's enc-weights.") var output: String?
    @Option(parsing: .unconditional, help: "Training steps.") var steps = 600
    @Option(parsing: .unconditional, help: "Images per step.") var batchSize = 64
    @Option(parsing: .unconditional, help: "Peak learning rate (cosine decay).") var learningRate = 1e-3
    @Flag(help: "Retrain even when the output file exists.") var force = false

    func run() throws {
        let device = try runtime.openDevice()
        let c = try TrainConfig.load(file: config)
        let out = output ?? c.encWeights
        guard !out.isEmpty else { throw ValidationError("no output path: pass --output or set enc-weights in \(config)") }
        var tc = TeacherTrainingConfig(teacher: try c.teacherConfig())
        (tc.steps, tc.batchSize, tc.learningRate, tc.seed) = (steps, batchSize, learningRate, runtime.seed)
        tc.device = device
        try tc.validate()                                       // before the dataset is opened, even when nothing is trained
        if FileManager.default.fileExists(atPath: out) && !force {
            print("teacher already at \(out) (use --force to retrain)")
            return
        }
        try FileManager.default.createDirectory(atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let accuracy = try TeacherTrainer.train(tc, dataset: try c.openDataset(), output: out) {
            FileHandle.standardError.write(Data("\($0)\n".utf8))
        }
        print(String(format: "teacher saved to %@ (training accuracy %.3f)", out, accuracy))
    }
}
