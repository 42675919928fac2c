import Foundation
import Testing
import HasteIO
import HasteModels
import HasteTensor
@testable import HasteTraining

/// The tiny SiT of `tinyGenerationSiT` (width 16, depth 2, 2 heads, patch 2, 1×8×8, 3 classes) as a haste
/// checkpoint: `ema.`/`model.` weights, with its training config in the metadata unless `config` is false.
/// `edit` may change the EMA state dict before it is written.
func writeTinyCheckpoint(_ path: String, config: Bool = true, edit: (inout [String: Tensor]) -> Void = { _ in }) throws {
    let sit = try tinyGenerationSiT(seed: 5)
    var ema = Dictionary(uniqueKeysWithValues: sit.store.stateDict())
    edit(&ema)
    var c = TrainConfig()
    (c.dataset, c.model, c.hiddenSize, c.depth, c.numHeads, c.numClasses, c.encoderDepth) = ("fashion-mnist", "SiT-S/2", 16, 2, 2, 3, 1)
    let tensors = ema.map { ("ema." + $0.key, $0.value) } + sit.store.stateDict().map { ("model." + $0.0, $0.1) }
    try SafetensorsWriter.write(tensors, metadata: config ? ["format": Checkpoint.format, "config": try c.yaml()] : [:], to: path)
}

/// The message of the error `body` throws, failing the test if it does not throw.
func thrownText(_ sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> String {
    do { try body() } catch { return "\(error)" }
    Issue.record("expected an error", sourceLocation: sourceLocation)
    return ""
}

/// A checkpoint without a stored config is identified from its tensor shapes before any model is built: the
/// tiny one loads with --num-heads, names the flag it needs without it, and `--model SiT-XL/2` (which used to
/// build the 675 M-parameter model first) is an error naming both sizes. SiT-XL/2's key shapes (no tensors)
/// are recognised as SiT-XL/2, heads included.
@Test func checkpointWithoutConfigIsIdentifiedFromItsShapes() throws {
    let dir = temporaryDirectory(), path = dir + "/plain.safetensors"
    try writeTinyCheckpoint(path, config: false)
    var flags = GenerationModel.Flags()
    flags.numHeads = 2
    let loaded = try GenerationModel.load(path, flags: flags)
    let c = loaded.sit!.config
    let sizes: [Int] = [c.depth, c.hiddenSize, c.numHeads, c.patchSize, c.inChannels, c.inputSize, c.numClasses]
    #expect(sizes == [2, 16, 2, 2, 1, 8, 3])
    #expect(loaded.name == "SiT" && !loaded.pixelSpace)
    let noHeads = thrownText { _ = try GenerationModel.load(path) }
    #expect(noHeads.contains("16-wide") && noHeads.contains("--num-heads"), "\(noHeads)")
    flags.model = "SiT-XL/2"
    let wrong = thrownText { _ = try GenerationModel.load(path, flags: flags) }
    #expect(wrong.contains("weights have depth 2, width 16, patch 2, but --model SiT-XL/2 has depth 28, width 1152, patch 2"), "\(wrong)")

    var shapes: [String: [Int]] = ["pos_embed": [1, 256, 1152], "x_embedder.proj.weight": [1152, 4, 2, 2],
                                   "y_embedder.embedding_table.weight": [1001, 1152]]
    for i in 0..<28 { shapes["blocks.\(i).mlp.fc1.weight"] = [4608, 1152] }
    for j in 0..<1 { (shapes["projectors.\(j).0.weight"], shapes["projectors.\(j).4.weight"]) = ([2048, 1152], [768, 2048]) }
    let xl = try ReferenceCheckpoint.inferSiTConfig(shapes)
    var expected = try SiTConfig.named("SiT-XL/2")
    expected.projectorDims = [768]
    #expect(xl == expected && GenerationCheckpoint.namedSize(xl) == "SiT-XL/2")
}

/// Flags that disagree with what the checkpoint records are errors naming both, not silently ignored:
/// `--model` against a haste checkpoint's stored config and against a reference .pt's `args.model`;
/// `--num-classes`, `--resolution` and `--encoder-depth` against the stored config and the weights.
@Test func flagsMustAgreeWithTheCheckpoint() throws {
    let dir = temporaryDirectory(), path = dir + "/0000010.safetensors"
    try writeTinyCheckpoint(path)
    var flags = GenerationModel.Flags()
    flags.model = "SiT-S/2"
    #expect(try GenerationModel.load(path, flags: flags).name == "SiT-S/2")
    flags.model = "SiT-B/2"
    let model = thrownText { _ = try GenerationModel.load(path, flags: flags) }
    #expect(model.contains("\(path): is a SiT-S/2 checkpoint (the config stored in it), but --model says SiT-B/2"), "\(model)")
    let disagreements: [((inout GenerationModel.Flags) -> Void, String)] = [
        ({ $0.numClasses = 1000 }, "3 classes + 1 null row, but --num-classes says 1000"), ({ $0.resolution = 256 }, "makes 8-px images (in pixel space), but --resolution says 256"),
        ({ $0.encoderDepth = 2 }, "trained with encoder depth 1, but --encoder-depth says 2"),
    ]
    for (edit, phrase) in disagreements {
        var f = GenerationModel.Flags()
        edit(&f)
        let text = thrownText { _ = try GenerationModel.load(path, flags: f) }
        #expect(text.contains(phrase), "\(text)")
    }
    guard let url = Bundle.module.url(forResource: "Fixtures/pth/train_ckpt.pt", withExtension: nil) else {
        Issue.record("fixture pth/train_ckpt.pt missing"); return
    }
    (flags.model, flags.numHeads) = ("SiT-B/2", 2)
    let pt = thrownText { _ = try GenerationModel.load(url.path, flags: flags) }
    #expect(pt.contains("is a SiT-S/2 checkpoint (its args.model), but --model says SiT-B/2"), "\(pt)")
}

/// One NaN or Inf anywhere in the selected weights is refused (it made all-black samples with exit 0), naming
/// the file and the first bad key; the raw weights of the same file, which are finite, still load.
@Test func nonFiniteWeightsAreRefused() throws {
    let dir = temporaryDirectory()
    for (name, value) in [("nan", Float.nan), ("inf", -Float.infinity)] {
        let path = "\(dir)/\(name).safetensors"
        try writeTinyCheckpoint(path) { state in
            var v = state["blocks.1.mlp.fc2.weight"]!.scalars(as: Float.self)
            v[37] = value
            state["blocks.1.mlp.fc2.weight"] = Tensor(v, shape: state["blocks.1.mlp.fc2.weight"]!.shape)
        }
        let text = thrownText { _ = try GenerationModel.load(path) }
        #expect(text.hasPrefix(path) && text.contains("weight 'ema.blocks.1.mlp.fc2.weight' holds 1 non-finite value(s) (first: element 37 = \(value))")
                && text.contains("--ckpt-select model"), "\(text)")
        #expect(try GenerationModel.load(path, select: "model").name == "SiT-S/2")
    }
}
