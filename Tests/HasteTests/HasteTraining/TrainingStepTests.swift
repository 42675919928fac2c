import Foundation
import Testing
import HasteIO
import HasteNN
import HasteTensor
import HasteTraining

/// `TrainingStep` (what `haste bench train` times) is the Trainer's step: with alignment off and no teacher, one
/// step from the Trainer's step-2 checkpoint on its step-3 batch and draws gives the Trainer's step-3 loss and
/// parameters bit for bit (early-stop-point 2: the "+stopped" row), projectors untouched; float32 and bf16 autocast.
@Test(arguments: ["no", "bf16"])
func stoppedTrainingStepIsTheTrainersPostStopStep(precision: String) throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)                                   // early-stop-point 2, checkpoints every 2 steps
    c.encWeights = try writeTinyTeacher(dir, c)
    (c.maxTrainSteps, c.mixedPrecision) = (3, precision)          // step 3 is the first after the stop; saved at the end
    let dataset = SyntheticDataset()
    try Trainer(config: c, dataset: dataset).train()
    let logged = try #require(try metrics("\(dir)/run").first { ($0["step"] as! Int) == 3 })
    // total_loss as written (Foundation's JSON parser may round the last bit differently from the text).
    let line = try #require(try String(contentsOfFile: "\(dir)/run/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        .first { $0.contains("\"step\":3,") || $0.contains("\"step\": 3,") || $0.hasSuffix("\"step\":3}") || $0.hasSuffix("\"step\": 3}") })
    let after = try #require(line.components(separatedBy: "\"total_loss\":").dropFirst().first, "\(line)")
    let written = try #require(Double(after.prefix { !",}".contains($0) }.trimmingCharacters(in: .whitespaces)), "\(line)")

    let models = try c.resolveModels(sampleShape: dataset.sampleShape, numClasses: dataset.numClasses)
    let student = try models.student.make(seed: UInt64(c.seed))
    let optimizer = AdamW(store: student.store, lr: c.learningRate, betas: (c.adamBeta1, c.adamBeta2), eps: c.adamEpsilon,
                          weightDecay: c.adamWeightDecay)
    let state = try Checkpoint.load(from: Checkpoint.path("\(dir)/run", step: 2), model: student.store, ema: EMA(from: student.store),
                                    optimizer: optimizer)
    let before = Dictionary(uniqueKeysWithValues: student.store.stateDict().map { ($0.0, $0.1.scalars(as: Float.self)) })
    let batch = try dataset.batch(EpochOrder(count: dataset.count, batchSize: c.batchSize, seed: UInt64(c.seed)).indices(epoch: 0, batch: 2))
    let step = TrainingStep(config: c, models: models, student: student, teacher: nil, optimizer: optimizer,
                            precision: ComputePrecision(flag: precision, device: .cpu)!, align: false)
    let (loss, _) = step(batch, generator: RandomGenerator(seed: UInt64(c.seed) &+ 1, offset: state.rngOffset))

    #expect(loss == written, "loss \(loss) vs the Trainer's \(written) (\(line))")
    #expect(logged["attn_loss"] as! Double == 0 && logged["proj_loss"] as! Double == 0, "the Trainer's step 3 is past the stop")
    let trained = try SafetensorsFile(path: Checkpoint.path("\(dir)/run", step: 3))
    var projectors = 0, moved = 0
    for (name, value) in student.store.stateDict() {
        let mine = value.scalars(as: Float.self)
        #expect(mine == (try trained.tensor("model.\(name)")).scalars(as: Float.self), "\(name) differs from the Trainer's step 3")
        if name.hasPrefix("projectors.") {
            projectors += 1
            #expect(mine == before[name], "\(name) was updated after the stop")
        } else if mine != before[name] { moved += 1 }
    }
    #expect(projectors > 0 && moved > 0, "the student has projectors (\(projectors)) and the step trained the rest (\(moved))")
}
