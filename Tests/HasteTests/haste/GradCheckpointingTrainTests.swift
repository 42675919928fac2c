import Foundation
import Testing
import HasteIO
import HasteTensor
import HasteTraining

/// `haste train --grad-checkpointing` end to end through the CLI: a tiny HASTE run (teacher, projection and
/// attention alignment) with checkpointing logs the same losses, bit for bit, as the same run without it (the
/// gradients are identical: HasteModels/GradCheckpointingTests), writes the key into its config.yaml, and resumes
/// from its step-2 checkpoint to the same losses again. A bad value in a YAML file is an error naming the key.
@Test func gradCheckpointingTrainsResumesAndMatchesTheRunWithout() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.dataset, c.dataDir, c.numClasses, c.checkpointingSteps, c.earlyStopPoint) = ("images", try writeTinyImages(dir, seed: 43), 3, 2, 1000)
    c.encWeights = try writeTinyTeacher(dir, c)
    try c.yaml().write(toFile: "\(dir)/run.yaml", atomically: true, encoding: .utf8)

    let plain = try runHaste(["train", "\(dir)/run.yaml", "--exp-name", "plain"])
    #expect(plain.status == 0, "\(plain.stderr)")
    let ckpt = try runHaste(["train", "\(dir)/run.yaml", "--exp-name", "ckpt", "--grad-checkpointing"])
    #expect(ckpt.status == 0, "\(ckpt.stderr)")
    let straight = try metrics("\(dir)/plain").map { $0["loss"] as! Double }
    let checkpointed = try metrics("\(dir)/ckpt").map { $0["loss"] as! Double }
    #expect(straight.count == 4 && checkpointed == straight, "losses \(checkpointed) with checkpointing vs \(straight) without")
    #expect(try metrics("\(dir)/ckpt").allSatisfy { ($0["attn_loss"] as! Double) > 0 }, "alignment ran on every step")
    #expect(try String(contentsOfFile: "\(dir)/ckpt/config.yaml", encoding: .utf8).contains("grad-checkpointing: true"))
    #expect(try String(contentsOfFile: "\(dir)/plain/config.yaml", encoding: .utf8).contains("grad-checkpointing: false"))

    // Resume the checkpointed run from step 2 (the `--set` spelling this time): steps 3 and 4 again.
    try FileManager.default.copyItem(atPath: "\(dir)/ckpt", toPath: "\(dir)/resumed")
    try FileManager.default.removeItem(atPath: Checkpoint.path("\(dir)/resumed", step: 4))
    let resumed = try runHaste(["train", "\(dir)/run.yaml", "--exp-name", "resumed", "--set", "grad-checkpointing=true",
                                "--resume-step", "2"])
    #expect(resumed.status == 0, "\(resumed.stderr)")
    let again = try metrics("\(dir)/resumed").filter { ($0["step"] as! Int) > 2 }.map { $0["loss"] as! Double }
    #expect(again == Array(straight.suffix(2)), "resumed losses \(again) vs \(straight.suffix(2))")

    try "grad-checkpointing: maybe\n".write(toFile: "\(dir)/bad.yaml", atomically: true, encoding: .utf8)
    let bad = try runHaste(["train", "\(dir)/bad.yaml", "--print-config"])
    #expect(bad.status != 0 && bad.stderr.contains("config key 'grad-checkpointing': 'maybe' is not a boolean (true/false)"), "\(bad.stderr)")
    try "grad-checkpointing: 2\n".write(toFile: "\(dir)/bad2.yaml", atomically: true, encoding: .utf8)
    let bad2 = try runHaste(["train", "\(dir)/bad2.yaml", "--print-config"])
    #expect(bad2.status != 0 && bad2.stderr.contains("config key 'grad-checkpointing'"), "\(bad2.stderr)")
    let listed = try runHasteOutput(["train", "--print-config", "--grad-checkpointing"])
    #expect(listed.status == 0 && listed.stdout.contains("grad-checkpointing: true"), "\(listed.stderr)")
    let help = try runHasteOutput(["train", "--help"])
    #expect(help.stdout.contains("--grad-checkpointing"), "train --help lists the flag")
}

/// 24 random 8×8 RGB images in 3 classes as an `images` dataset (PNG folder + dataset.json) under `dir`/data;
/// returns that folder.
func writeTinyImages(_ dir: String, seed: UInt64) throws -> String {
    try FileManager.default.createDirectory(atPath: "\(dir)/data/00000", withIntermediateDirectories: true)
    var labels: [String] = []
    let u = Tensor.rand([24 * 192], seed: seed).scalars(as: Float.self).map { UInt8($0 * 255) }
    for i in 0..<24 {
        let name = String(format: "00000/img%08d.png", i)
        try PNGImage.write(Array(u[(i * 192)..<((i + 1) * 192)]), height: 8, width: 8, channels: 3, to: "\(dir)/data/\(name)")
        labels.append("[\"\(name)\", \(i % 3)]")
    }
    try "{\"labels\": [\(labels.joined(separator: ", "))]}".write(toFile: "\(dir)/data/dataset.json", atomically: true, encoding: .utf8)
    return "\(dir)/data"
}

/// `haste bench train --grad-checkpointing` names its rows "… +ckpt" (so a table can hold both) and refuses a row
/// name without the suffix; the timing itself is the lead's to measure.
@Test func benchTrainListsCheckpointedRows() throws {
    let rows = try runHasteOutput(["bench", "train", "--list", "--grad-checkpointing", "--models", "SiT-S/2", "--batches", "4"])
    #expect(rows.status == 0 && rows.stdout.split(separator: "\n").map(String.init) == ["SiT-S/2 bs4 +ckpt", "SiT-S/2 bs4 +align +ckpt", "SiT-S/2 bs4 +stopped +ckpt", "DINOv2-B fwd bs16"],
            "\(rows.stdout)")
    let plain = try runHasteOutput(["bench", "train", "--list", "--models", "SiT-S/2", "--batches", "4"])
    #expect(plain.stdout.split(separator: "\n").map(String.init) == ["SiT-S/2 bs4", "SiT-S/2 bs4 +align", "SiT-S/2 bs4 +stopped", "DINOv2-B fwd bs16"])
    let wrong = try runHasteOutput(["bench", "train", "--grad-checkpointing", "--only", "SiT-S/2 bs4"])
    #expect(wrong.status != 0 && wrong.stderr.contains("SiT-S/2 bs4 +ckpt"), "\(wrong.stderr)")
}
