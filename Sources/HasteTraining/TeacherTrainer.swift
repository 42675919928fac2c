import Foundation
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

/// Trains a small DINOv2-architecture ViT as the demo's teacher (`haste train-teacher`). No DINOv2 weights can
/// be had offline, so the demo distils from a ViT supervised through its class token (cross-entropy of a linear
/// head), saved under DINOv2 hub key names (the head is dropped, as the hub's is), so `loadTeacher` takes it
/// like a real checkpoint. Same preprocessing as the HASTE teacher pass.
public struct TeacherTrainingConfig: Sendable {
    public var teacher: DINOv2Config
    public var steps = 600
    public var batchSize = 64
    public var learningRate = 1e-3
    public var seed: UInt64 = 0
    /// Where the ViT, its head and each batch live (the saved file does not depend on it).
    public var device: Device = .cpu
    public init(teacher: DINOv2Config) { self.teacher = teacher }

    /// Every numeric field against its range (issue #14), named as `haste train-teacher`'s flags; `seed` takes any value.
    public func validate() throws {
        let checks: [(String, ConfigRange, Any)] = [("steps", .atLeast(1), steps), ("batch-size", .atLeast(1), batchSize),
                                                    ("learning-rate", .above(0, "the cosine schedule's peak"), learningRate)]
        for (key, range, value) in checks { try range.check(key, value) }
    }
}

public enum TeacherTrainer {
    /// Trains on `dataset`, writes the backbone to `output` (safetensors), returns the final training accuracy
    /// over the last 50 batches.
    @discardableResult
    public static func train(_ cfg: TeacherTrainingConfig, dataset: TrainingDataset, output: String,
                             progress: (String) -> Void) throws -> Double {
        try cfg.validate()
        guard dataset.hasImages else { throw HasteError.config(key: "dataset", detail: "the teacher trains on raw images; this dataset has none") }
        guard cfg.batchSize <= dataset.count else {
            throw HasteError.config(key: "batch-size", detail: "\(cfg.batchSize) is more than the \(dataset.count) training images; lower --batch-size")
        }
        let model = DINOv2(cfg.teacher, seed: cfg.seed)
        let headStore = ParameterStore(seed: cfg.seed &+ 1)
        let head = Linear(headStore.root["head"], cfg.teacher.embedDim, dataset.numClasses)
        headStore.finalize()
        model.store.move(to: cfg.device)                                               // before the optimizers allocate
        headStore.move(to: cfg.device)
        let optimizers = [AdamW(store: model.store, lr: cfg.learningRate, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0.05),
                          AdamW(store: headStore, lr: cfg.learningRate, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0.05)]
        let order = EpochOrder(count: dataset.count, batchSize: cfg.batchSize, seed: cfg.seed)
        var correct: [Double] = []
        for step in 0..<cfg.steps {
            let batch = try dataset.batch(order.indices(epoch: step / order.batchesPerEpoch, batch: step % order.batchesPerEpoch)).to(cfg.device)
            model.store.zeroGrad(); headStore.zeroGrad()
            let x = DINOv2.preprocess(batch.images!, size: cfg.teacher.imageSize)
            let logits = head(model(x).classToken)                                     // (B, classes)
            let loss = logits.crossEntropy(targets: batch.labels)
            loss.backward()
            _ = clipGradNorm(model.store, maxNorm: 1.0)
            // Cosine learning-rate decay after a short warm-up.
            let lr = cfg.learningRate * min(1, Double(step + 1) / 50) * 0.5 * (1 + cos(Double.pi * Double(step) / Double(cfg.steps)))
            for o in optimizers { o.lr = lr; o.step() }
            let predicted = noGrad { logits.detached().scalars(as: Float.self) }
            let labels = batch.labels.scalars(as: Int64.self), k = dataset.numClasses
            let hits = labels.enumerated().filter { i, l in
                let row = predicted[(i * k)..<((i + 1) * k)]
                return row.firstIndex(of: row.max()!)! - i * k == Int(l)
            }.count
            correct.append(Double(hits) / Double(labels.count))
            if correct.count > 50 { correct.removeFirst() }
            if step % 20 == 0 || step == cfg.steps - 1 {
                progress(String(format: "teacher step %d/%d | loss %.4f | accuracy %.3f", step + 1, cfg.steps, loss.item(), correct.reduce(0, +) / Double(correct.count)))
            }
        }
        try SafetensorsWriter.write(model.store.stateDict(), metadata: ["format": "dinov2-state-dict", "source": "haste train-teacher"], to: output)
        return correct.reduce(0, +) / Double(correct.count)
    }
}
