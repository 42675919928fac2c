import Foundation
import Testing
import HasteIO
import HasteTensor
import HasteTraining

/// `haste train --mixed-precision bf16` on the CPU, end to end through the CLI: a tiny HASTE run (teacher, both
/// alignment losses) beside the same run in float32. adaLN-Zero starts the velocity at exactly 0, so step 1's
/// denoising loss is ‖target‖² in both; 3 AdamW steps at lr 1e-3 move each weight by ≤ ~3e-3, so the prediction
/// stays ≲ 1e-2 of the target and bf16's relative error on it (a few 2^-9 from ~10 roundings in a row) changes the
/// loss 2⟨pred, target⟩-wise by ≲ 1e-2 · 2^-6 ≈ 1.5e-4 relative: bound 3e-4 per step (measured ≤ 3.7e-6). The runs
/// must differ (bf16 really ran) and the checkpoint must hold float32 master weights that bf16 could not represent
/// (AdamW updated them in float32).
@Test func bf16TrainingTracksFloat32AndCheckpointsFloat32() throws {
    let dir = temporaryDirectory()
    var c = try tinyImageRun(dir)
    c.checkpointingSteps = 4
    try c.yaml().write(toFile: "\(dir)/run.yaml", atomically: true, encoding: .utf8)

    var losses: [String: [Double]] = [:]
    for precision in ["no", "bf16"] {
        let r = try runHaste(["train", "\(dir)/run.yaml", "--exp-name", precision, "--mixed-precision", precision])
        #expect(r.status == 0, "\(r.stderr)")
        losses[precision] = try metrics("\(dir)/\(precision)").map { $0["loss"] as! Double }
    }
    let fp = losses["no"]!, bf = losses["bf16"]!
    #expect(fp.count == 4 && bf.count == 4)
    for (a, b) in zip(bf, fp) { #expect(Swift.abs(a - b) <= 3e-4 * Swift.abs(b), "bf16 loss \(a) vs float32 \(b)") }
    #expect(bf != fp, "bf16 run is bit-identical to float32: autocast did not run")
    #expect(try String(contentsOfFile: "\(dir)/bf16/config.yaml", encoding: .utf8).contains("mixed-precision: bf16"))

    let ckpt = try SafetensorsFile(path: Checkpoint.path("\(dir)/bf16", step: 4))
    let weights = try ckpt.names.filter { $0.hasPrefix("model.") || $0.hasPrefix("opt.") }.map { try ckpt.tensor($0) }
    #expect(!weights.isEmpty && weights.allSatisfy { $0.dtype == .float32 })
    #expect(weights.contains { !isBF16Representable($0) })
    #expect(try metrics("\(dir)/bf16").allSatisfy { $0["loss_scale"] == nil }, "only fp16 logs a loss scale")
}

/// The tiny HASTE run of `tinyRunConfig` on 24 random 8×8 PNGs in 3 classes (an `images` dataset the CLI opens),
/// with its random teacher; `dir/data` holds the data.
func tinyImageRun(_ dir: String) throws -> TrainConfig {
    var c = tinyRunConfig(dir)
    (c.dataset, c.dataDir, c.numClasses) = ("images", try writeTinyImages(dir, seed: 42), 3)
    c.encWeights = try writeTinyTeacher(dir, c)
    return c
}
