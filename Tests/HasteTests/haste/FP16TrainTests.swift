import Foundation
import Testing
import HasteIO
import HasteNN
import HasteTensor
@testable import HasteTraining

/// `haste train --mixed-precision fp16` end to end through the CLI: the tiny HASTE run of the bf16 test, 12 steps
/// with the loss scale starting at 2^28 (`--set fp16-init-scale`), where the tiny model's scaled gradients overflow
/// half (the final layer's bias gradient alone sums 64 rows of |dy| ≈ 2^28·2·1.4/3072 ≈ 2.4e5), so the first steps
/// are skipped and the scale backs off until the steps come clean. Then the same run stopped at step 6 and resumed
/// from its checkpoint: every logged value (losses, loss scale, gradient norm) and the final checkpoint (model,
/// EMA, AdamW state, loss scale) equal the uninterrupted run's bit for bit, which needs the scale and its clean-step
/// count restored (a fresh 2^24 would overflow again).
@Test func fp16TrainingSkipsOverflowsBacksOffAndResumesExactly() throws {
    let dir = temporaryDirectory()
    var c = try tinyImageRun(dir)
    (c.mixedPrecision, c.maxTrainSteps, c.checkpointingSteps) = ("fp16", 12, 6)
    try c.yaml().write(toFile: "\(dir)/run.yaml", atomically: true, encoding: .utf8)
    let start = ["train", "\(dir)/run.yaml", "--set", "fp16-init-scale=268435456"]
    let straight = try runHaste(start + ["--exp-name", "straight"])
    #expect(straight.status == 0, "\(straight.stderr)")
    let first = try runHaste(start + ["--exp-name", "split", "--max-train-steps", "6"])
    #expect(first.status == 0, "\(first.stderr)")
    let second = try runHaste(start + ["--exp-name", "split", "--resume-step", "6"])
    #expect(second.status == 0, "\(second.stderr)")

    let a = try metrics("\(dir)/straight"), b = try metrics("\(dir)/split")
    #expect(a.count == 12 && b.count == 12)
    let scales = a.map { $0["loss_scale"] as? Double ?? 0 }
    #expect(scales.first == 0x1p28 && scales.contains { $0 < 0x1p28 }, "loss scales \(scales)")
    let skipped = a.filter { $0["grad_norm"] == nil }.count         // inf/NaN norms are left out of the JSON
    #expect(skipped >= 1 && skipped < 12, "\(skipped) of 12 steps overflowed")
    for (s, (x, y)) in zip(scales.indices, zip(scales, scales.dropFirst())) {
        #expect(y == (a[s]["grad_norm"] == nil ? x / 2 : x), "step \(s + 1): scale \(x) then \(y)")   // halves exactly on overflows
    }
    for key in ["loss", "proj_loss", "attn_loss", "total_loss", "grad_norm", "loss_scale"] {
        #expect(a.map { $0[key] as? Double } == b.map { $0[key] as? Double }, "resumed \(key) differs")
    }
    let log = try String(contentsOfFile: "\(dir)/straight/log.txt", encoding: .utf8)
    #expect(log.contains("fp16 gradients overflowed at loss scale 268435456.0: AdamW update skipped"), "\(log)")

    let x = try SafetensorsFile(path: Checkpoint.path("\(dir)/straight", step: 12))
    let y = try SafetensorsFile(path: Checkpoint.path("\(dir)/split", step: 12))
    #expect(x.metadata["loss_scale"] != nil && x.metadata["loss_scale"] == y.metadata["loss_scale"]
            && x.metadata["loss_scale_growth_tracker"] == y.metadata["loss_scale_growth_tracker"])
    let tx = try x.tensors(), ty = try y.tensors()
    #expect(tx.keys.sorted() == ty.keys.sorted())
    for (key, t) in tx { #expect(t.scalars(as: Float.self) == ty[key]!.scalars(as: Float.self), "\(key) after resuming") }
}

/// `auto` (the default) trains float32 on the CPU and logs no loss scale; fp16 starts a GradScaler at 2^16 and
/// logs the scale each step's loss was multiplied by. A checkpoint whose loss scale is not a number is refused,
/// naming the file and the key.
@Test func autoIsFloat32OnTheCPUAndOnlyFP16ScalesTheLoss() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.encType, c.projCoeff, c.attnCoeff, c.maxTrainSteps, c.checkpointingSteps) = ("none", 0, 0, 1, 1)
    c.mixedPrecision = TrainConfig().mixedPrecision
    #expect(c.mixedPrecision == "auto")
    let trainer = try Trainer(config: c, dataset: SyntheticDataset())
    #expect(trainer.precision == .float32 && trainer.state.scaler == nil)
    try trainer.train()
    #expect(try metrics("\(dir)/run").allSatisfy { $0["loss_scale"] == nil })

    (c.mixedPrecision, c.expName) = ("fp16", "fp16")
    let fp16 = try Trainer(config: c, dataset: SyntheticDataset())
    #expect(fp16.precision == .float16 && fp16.state.scaler == LossScaler())
    try fp16.train()
    #expect(try metrics("\(dir)/fp16").map { $0["loss_scale"] as? Double } == [65536])

    let saved = try SafetensorsFile(path: Checkpoint.path("\(dir)/fp16", step: 1))
    var meta = saved.metadata
    let savedScale = [meta["loss_scale"] ?? "", meta["loss_scale_growth_tracker"] ?? ""]
    #expect(savedScale == ["65536.0", "1"] || savedScale == ["32768.0", "0"], "after a clean or an overflowed step: \(savedScale)")
    meta["loss_scale"] = "lots"
    let path = Checkpoint.path("\(dir)/bad", step: 1)                   // another run: fp16's is still locked
    try FileManager.default.createDirectory(atPath: "\(dir)/bad/checkpoints", withIntermediateDirectories: true)
    try SafetensorsWriter.write(try saved.tensors().map { ($0.key, $0.value) }, metadata: meta, to: path)
    (c.expName, c.resumeStep, c.maxTrainSteps) = ("bad", 1, 2)
    var message = ""
    do { _ = try Trainer(config: c, dataset: SyntheticDataset()) } catch { message = "\(error)" }
    #expect(message.contains(path) && message.contains("loss_scale"), "\(message)")
}
