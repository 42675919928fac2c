import Foundation
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

/// Which weights of a training checkpoint to use (`--ckpt-select`): the EMA ones (what the reference
/// generate.py samples with) or the raw model's.
public enum CheckpointSelection: String, CaseIterable, Sendable {
    case ema, model
}

/// Checkpoints written by the reference HASTE/REPA train.py (`torch.save({"model", "ema", "opt", "args",
/// "steps"})`, spec/formats.md §1, spec/sit.md §10) and plain SiT state dicts, read without Python.
public enum ReferenceCheckpoint {
    /// Heads of the named sizes by hidden width (SiT-S/B/L/XL); the state dict does not record them.
    public static let headsByHidden = [384: 6, 768: 12, 1024: 16, 1152: 16]

    /// The SiT a state dict was saved from, from its keys and shapes: hidden width and tokens from `pos_embed`,
    /// channels and patch from `x_embedder.proj.weight`, depth from the `blocks.N` keys, classes from the label
    /// table (one row is the CFG null class), projectors from `projectors.{j}.{0,4}.weight`, qk-norm from
    /// `q_norm`. Heads: `numHeads`, else the named-size table, else `args.model`'s size. The encoder depth
    /// (where projectors read) is not in the weights: `args.encoder_depth`, else 8 (clamped to the depth).
    public static func inferSiTConfig(_ shapes: [String: [Int]], args: PickleValue? = nil, numHeads: Int? = nil) throws -> SiTConfig {
        var c = try inferSiTShapes(shapes, args: args)
        let named = args?["model"]?.stringValue.flatMap { try? SiTConfig.named($0) }
        guard let heads = numHeads ?? headsByHidden[c.hiddenSize] ?? (named?.hiddenSize == c.hiddenSize ? named?.numHeads : nil) else {
            throw HasteError.stateDict("cannot tell the number of heads of a \(c.hiddenSize)-wide SiT (named sizes: \(headsByHidden.keys.sorted())); pass the head count")
        }
        c.numHeads = heads
        try c.validate()
        return c
    }

    /// Everything `inferSiTConfig` reads off the weights (and `args.encoder_depth`); `numHeads` is left at its
    /// default, since no tensor shape records it.
    public static func inferSiTShapes(_ shapes: [String: [Int]], args: PickleValue? = nil) throws -> SiTConfig {
        func shape(_ key: String, rank: Int) throws -> [Int] {
            guard let s = shapes[key] else { throw HasteError.stateDict("not a SiT state dict: no '\(key)' (keys: \(shapes.keys.sorted().prefix(8).joined(separator: ", "))…)") }
            guard s.count == rank else { throw HasteError.stateDict("'\(key)' has shape \(s), expected \(rank) dimensions") }
            return s
        }
        let pos = try shape("pos_embed", rank: 3), patch = try shape("x_embedder.proj.weight", rank: 4)
        let table = try shape("y_embedder.embedding_table.weight", rank: 2)
        var c = SiTConfig()
        (c.hiddenSize, c.inChannels, c.patchSize, c.numClasses) = (patch[0], patch[1], patch[2], table[0] - 1)
        let grid = Int(Double(pos[1]).squareRoot().rounded())
        guard grid * grid == pos[1], patch[2] == patch[3], pos[2] == c.hiddenSize else {
            throw HasteError.stateDict("pos_embed \(pos) and x_embedder.proj.weight \(patch) do not describe a square SiT grid")
        }
        c.inputSize = grid * c.patchSize
        c.depth = count("blocks.", in: shapes)
        guard c.depth > 0, let fc1 = shapes["blocks.0.mlp.fc1.weight"] else { throw HasteError.stateDict("no blocks.0.mlp.fc1.weight: not a SiT state dict") }
        c.mlpRatio = Double(fc1[0]) / Double(c.hiddenSize)
        c.qkNorm = shapes["blocks.0.attn.q_norm.weight"] != nil
        let projectors = count("projectors.", in: shapes)
        c.projectorDims = try (0..<projectors).map { try shape("projectors.\($0).4.weight", rank: 2)[0] }
        if projectors > 0 { c.projectorHidden = try shape("projectors.0.0.weight", rank: 2)[0] }
        c.encoderDepth = min(args?["encoder_depth"]?.intValue ?? 8, c.depth)
        return c
    }

    /// Number of N in keys `prefix` + "N." (contiguous from 0).
    private static func count(_ prefix: String, in shapes: [String: [Int]]) -> Int {
        var n = 0
        while shapes.keys.contains(where: { $0.hasPrefix("\(prefix)\(n).") }) { n += 1 }
        return n
    }

    /// A SiT built from a checkpoint and loaded strictly: a reference training checkpoint (`select` picks
    /// `ema` or `model`), a plain SiT state dict (.pt/.pth or .safetensors), or one of our safetensors training
    /// checkpoints (`ema.`/`model.` prefixes). Size and projectors come from the keys (`inferSiTConfig`).
    public static func loadSiT(path: String, select: CheckpointSelection = .ema, numHeads: Int? = nil) throws -> SiT {
        let (state, args) = try weights(path: path, select: select)
        let shapes = state.mapValues(\.shape)
        do {
            let config = try inferSiTConfig(shapes, args: args, numHeads: numHeads)
            let model = try SiT(config)
            try model.store.load(state, strict: true)
            return model
        } catch let error as HasteError {
            throw HasteError.fileFormat(path: path, detail: "'\(select.rawValue)' weights: \(error)")
        }
    }

    /// The selected state dict of a checkpoint file, and its `args` when it has them.
    static func weights(path: String, select: CheckpointSelection) throws -> ([String: Tensor], PickleValue?) {
        if TorchCheckpoint.isTorchFile(path) {
            let file = try TorchCheckpoint(path: path)
            let flat = file.defaultStateDictKey == ""
            return (try file.stateDict(at: flat ? "" : select.rawValue), file.root["args"])
        }
        let file = try SafetensorsFile(path: path)
        let prefix = select.rawValue + "."
        guard file.names.contains(where: { $0.hasPrefix(prefix) }) else { return (try file.tensors(), nil) }
        var state: [String: Tensor] = [:]
        for name in file.names where name.hasPrefix(prefix) { state[String(name.dropFirst(prefix.count))] = try file.tensor(name) }
        return (state, nil)
    }

    /// Restores a run from a reference training checkpoint: `model` and `ema` strictly, the AdamW moments
    /// from `opt.state` — indexed by the model's global parameter order, `pos_embed` (frozen, no state) being
    /// index 0, in the order `opt.param_groups[*].params` lists them — and the step from `steps`.
    /// Parameters the optimizer never updated get zero moments, as torch starts them. Every parameter resumes
    /// at the largest `step` in the state (HASTE's projectors lag after the early stop, but are not updated then).
    /// The data order restarts at epoch 0, as the reference's loader does on resume.
    public static func loadTrainingState(from path: String, model: ParameterStore, ema: EMA, optimizer: AdamW) throws -> TrainingState {
        let file = try TorchCheckpoint(path: path)
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: detail) }
        let modelKeys = file.flatten(try file.value(at: "model")).tensors.map(\.0)
        let modelState = try file.stateDict(at: "model")
        do {
            try model.load(modelState, strict: true)
            try ema.load(try file.stateDict(at: "ema"))
        } catch let error as HasteError where !"\(error)".hasPrefix(path) {
            throw bad("\(error)")
        }
        let (moments, step) = try adamMoments(file, modelKeys: modelKeys, store: model, bad)
        try optimizer.loadState(moments, stepCount: step)
        guard let steps = file.root["steps"]?.intValue, steps >= 0 else { throw bad("no integer 'steps' entry (the global step)") }
        var s = TrainingState()
        s.step = steps
        return s
    }

    /// `m.<key>`/`v.<key>` for every trainable parameter, and the step count, from torch's AdamW state dict.
    private static func adamMoments(_ file: TorchCheckpoint, modelKeys: [String], store: ParameterStore,
                                    _ bad: (String) -> HasteError) throws -> ([String: Tensor], Int) {
        guard let groups = try file.value(at: "opt.param_groups").elements else { throw bad("opt.param_groups is not a list") }
        let indices = groups.flatMap { $0["params"]?.elements?.compactMap(\.intValue) ?? [] }
        guard indices.count == modelKeys.count else {
            throw bad("the optimizer holds \(indices.count) parameters but 'model' has \(modelKeys.count) tensors: opt.state cannot be matched to names")
        }
        let nameOf = Dictionary(zip(indices, modelKeys), uniquingKeysWith: { a, _ in a })
        let trainable = Set(store.parameters.map(\.name))
        var moments: [String: Tensor] = [:], step = 0
        for (key, _) in try file.value(at: "opt.state").entries ?? [] {
            guard let index = key.intValue, let name = nameOf[index] else { throw bad("opt.state has an entry for unknown parameter \(key)") }
            guard trainable.contains(name) else { throw bad("opt.state holds moments for '\(name)', which haste keeps frozen") }
            let tensors = try file.stateDict(at: "opt.state.\(index)")
            guard let m = tensors["exp_avg"], let v = tensors["exp_avg_sq"] else { throw bad("opt.state.\(index) (\(name)) lacks exp_avg or exp_avg_sq") }
            let s = try tensors["step"].map { Int($0.item()) } ?? file.value(at: "opt.state.\(index)")["step"]?.intValue ?? 0
            (moments["m." + name], moments["v." + name], step) = (m, v, max(step, s))   // torch ≥ 1.12: a tensor
        }
        for (name, p) in store.parameters where moments["m." + name] == nil {
            moments["m." + name] = Tensor.zeros(p.shape)
            moments["v." + name] = Tensor.zeros(p.shape)
        }
        return (moments, step)
    }
}
