import Foundation
import Testing
import HasteIO
import HasteModels
import HasteNN
import HasteTensor
import HasteTraining

/// Loading PyTorch files into models: reference HASTE/REPA checkpoints into SiT (size inferred from the keys),
/// DINOv2 hub files into the teacher, and resuming training from a reference checkpoint.
/// Fixtures: Scripts/fixtures/pth.py (a hidden-8, 2-block SiT after 3 torch AdamW steps, and the 4th step).

/// The SiT of train_ckpt.pt, built from the inferred config.
func referenceStudent() throws -> SiT {
    try ReferenceCheckpoint.loadSiT(path: try fixturePath("pth/train_ckpt.pt"), select: .model, numHeads: 2)
}

@Test func sitConfigIsInferredFromTheKeys() throws {
    let path = try fixturePath("pth/train_ckpt.pt")
    let ema = try ReferenceCheckpoint.loadSiT(path: path, select: .ema, numHeads: 2)
    let c = ema.config
    #expect((c.hiddenSize, c.depth, c.numHeads, c.patchSize, c.inChannels, c.inputSize) == (8, 2, 2, 2, 3, 8))
    #expect(c.numClasses == 3 && c.projectorDims == [12] && c.projectorHidden == 8 && c.encoderDepth == 1 && !c.qkNorm)
    let f = try Fixture("pth_expected.safetensors")
    for (selection, prefix) in [(ema, "ckpt.ema."), (try referenceStudent(), "ckpt.model.")] {
        for (key, t) in selection.store.stateDict() {
            #expect(rawBytes(t) == rawBytes(f[prefix + key]), "\(prefix)\(key)")
        }
    }
    let flat = try ReferenceCheckpoint.loadSiT(path: try fixturePath("pth/sit_state.pth"), numHeads: 2)
    #expect(rawBytes(flat.store.stateDict()[5].1) == rawBytes(f["ckpt.ema." + flat.store.stateDict()[5].0]))
    expectFileError(path, "heads", "8-wide") { _ = try ReferenceCheckpoint.loadSiT(path: path) }
    // Full sizes, from shapes alone (no weights): heads from the named-size table.
    for name in ["SiT-XL/2", "SiT-B/4", "SiT-L/2", "SiT-S/2"] {
        var expected = try SiTConfig.named(name)
        expected.projectorDims = [768]
        let shapes = Dictionary(uniqueKeysWithValues: try SiT.stateDictShapes(expected))
        #expect(try ReferenceCheckpoint.inferSiTConfig(shapes) == expected, "\(name)")
    }
}

@Test func wrongShapesForAModelAreAllListed() throws {
    let path = try fixturePath("pth/train_ckpt.pt")
    var c = try referenceStudent().config
    (c.depth, c.projectorDims) = (3, [16])
    let model = try SiT(c)
    let ema = EMA(from: model.store), opt = AdamW(store: model.store, lr: 1e-3)
    expectFileError(path, "10 missing", "blocks.2.attn.qkv.weight", "mis-shaped", "projectors.0.4.weight: model [16, 8] vs file [12, 8]") {
        _ = try Checkpoint.load(from: path, model: model.store, ema: ema, optimizer: opt)
    }
}

@Test func teacherLoadsADINOv2HubFile() throws {
    let f = try Fixture("dinov2_tiny.safetensors")
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 24, 3, 3, 4)
    let teacher = try loadTeacher(c, weights: try fixturePath("pth/dinov2_tiny_hub.pth"))
    let hub = f.tensors(under: "hub.")
    for (key, t) in teacher.store.stateDict() where key != "pos_embed" {
        #expect(rawBytes(t) == rawBytes(hub[key]!), "\(key)")
    }
    expectClose(teacher.store["pos_embed"]!, f["resampled_pos_embed"], atol: 1e-6, rtol: 1e-5, "pos-embed resampled 5×5 → 4×4")
    c.depth = 4
    expectFileError(try fixturePath("pth/dinov2_tiny_hub.pth"), "does not fit", "blocks.3.attn.qkv.weight") {
        _ = try loadTeacher(c, weights: try fixturePath("pth/dinov2_tiny_hub.pth"))
    }
}

/// Model, EMA and AdamW moments restored from the reference checkpoint; one more step from the fixture's
/// gradients equals torch's 4th AdamW step. Tolerance: 3e-7 relative, as OptimizerTests (torch's `sqrt` may be
/// 1 ulp off), plus 2.5e-10 absolute = 2 ulps of an update of size lr = 1e-3, for weights the step brings
/// near zero (cancellation).
@Test func resumedOptimizerTakesTorchsNextStep() throws {
    let f = try Fixture("pth_expected.safetensors")
    let model = try referenceStudent()
    let ema = EMA(from: model.store), opt = AdamW(store: model.store, lr: 1e-3)
    let state = try Checkpoint.load(from: try fixturePath("pth/train_ckpt.pt"), model: model.store, ema: ema, optimizer: opt)
    #expect(state.step == 3 && opt.stepCount == 3)
    for (key, t) in ema.stateDict() { #expect(rawBytes(t) == rawBytes(f["ckpt.ema." + key]), "ema \(key)") }
    model.store.zeroGrad()
    for (key, p) in model.store.parameters { p.grad!.copyValues(from: f["grad." + key]) }
    opt.step()
    for (key, t) in model.store.stateDict() { expectClose(t, f["next." + key], atol: 2.5e-10, rtol: 3e-7, "\(key) after step 4") }
}

/// `haste train --resume-step 3` with the reference's `checkpoints/0000003.pt` in the run directory.
@Test func trainingResumesFromAReferenceCheckpoint() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.hiddenSize, c.depth, c.numHeads, c.encoderDepth, c.projectorDim) = (8, 2, 2, 1, 8)
    (c.attnStudentLayers, c.attnTeacherLayers, c.resumeStep, c.maxTrainSteps) = ([0], [1], 3, 5)
    c.encWeights = try writeTinyTeacher(dir, c)
    try FileManager.default.createDirectory(atPath: "\(dir)/run/checkpoints", withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: try fixturePath("pth/train_ckpt.pt"), toPath: "\(dir)/run/checkpoints/0000003.pt")
    let trainer = try Trainer(config: c, dataset: SyntheticDataset())
    #expect(trainer.state.step == 3)
    let f = try Fixture("pth_expected.safetensors")
    for (key, t) in trainer.student.store.stateDict() { #expect(rawBytes(t) == rawBytes(f["ckpt.model." + key]), "\(key)") }
    #expect(try trainer.train().step == 5)
    let steps = try metrics("\(dir)/run").map { $0["step"] as! Int }
    #expect(steps == [4, 5])
    #expect(Checkpoint.latest(in: "\(dir)/run")?.path.hasSuffix("0000005.safetensors") == true)
}
