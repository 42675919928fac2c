import Foundation
import HasteIO
import HasteNN
import HasteTensor

/// A training checkpoint (STYLE §2.7): one safetensors file `checkpoints/<7-digit step>.safetensors` with key
/// prefixes `model.`, `ema.`, `opt.m.`, `opt.v.` (strip one and you have a PyTorch state dict) and metadata
/// holding the step, data position, RNG state, optimizer step count, fp16's loss scale and the resolved config.
/// Written to a temporary file and renamed, so a crash never leaves a half checkpoint.
public struct TrainingState: Equatable {
    public var step = 0                 // completed optimizer updates (global_step)
    public var epoch = 0
    public var batchInEpoch = 0         // next batch to read within `epoch`
    public var rngOffset: UInt64 = 0    // the step generator's counter
    public var badSteps = 0
    /// fp16 training's dynamic loss scale and clean-step count (metadata `loss_scale`, `loss_scale_growth_tracker`);
    /// nil in the other precisions and in checkpoints that have none (the reference's, which never save it).
    public var scaler: LossScaler?
    public init() {}
}

public enum Checkpoint {
    public static let format = "haste-train-1"

    public static func path(_ dir: String, step: Int) -> String {
        "\(dir)/checkpoints/\(String(format: "%07d", step)).safetensors"
    }

    public static func save(to path: String, model: ParameterStore, ema: EMA, optimizer: AdamW, state: TrainingState,
                            config: TrainConfig) throws {
        var tensors: [(String, Tensor)] = model.stateDict().map { ("model." + $0.0, $0.1) }
        tensors += ema.stateDict().map { ("ema." + $0.0, $0.1) }
        tensors += optimizer.stateTensors().map { ("opt." + $0.0, $0.1) }
        var meta: [String: String] = [
            "format": format, "step": "\(state.step)", "epoch": "\(state.epoch)", "batch_in_epoch": "\(state.batchInEpoch)",
            "rng_offset": "\(state.rngOffset)", "bad_steps": "\(state.badSteps)", "opt_step": "\(optimizer.stepCount)",
            "config": try config.yaml(),
        ]
        if let scaler = state.scaler {           // Float's description reads back bit for bit
            meta["loss_scale"] = "\(scaler.scale)"
            meta["loss_scale_growth_tracker"] = "\(scaler.growthTracker)"
        }
        try SafetensorsWriter.write(tensors, metadata: meta, to: path)
    }

    /// Restores model, EMA and optimizer in place and returns the loop state. A `.pt`/`.pth` file is a
    /// reference HASTE/REPA checkpoint (`ReferenceCheckpoint.loadTrainingState`).
    public static func load(from path: String, model: ParameterStore, ema: EMA, optimizer: AdamW) throws -> TrainingState {
        if TorchCheckpoint.isTorchFile(path) {
            return try ReferenceCheckpoint.loadTrainingState(from: path, model: model, ema: ema, optimizer: optimizer)
        }
        let file = try SafetensorsFile(path: path)
        guard file.metadata["format"] == format else {
            throw HasteError.fileFormat(path: path, detail: "not a haste training checkpoint (format '\(file.metadata["format"] ?? "none")', expected \(format))")
        }
        var groups: [String: [String: Tensor]] = ["model.": [:], "ema.": [:], "opt.": [:]]
        for name in file.names {
            guard let prefix = groups.keys.first(where: { name.hasPrefix($0) }) else {
                throw HasteError.fileFormat(path: path, detail: "unexpected entry '\(name)'")
            }
            groups[prefix]![String(name.dropFirst(prefix.count))] = try file.tensor(name)
        }
        func int(_ key: String) throws -> Int {
            guard let v = file.metadata[key].flatMap({ Int($0) }) else {
                throw HasteError.fileFormat(path: path, detail: "metadata '\(key)' is missing or not an integer")
            }
            return v
        }
        try model.load(groups["model."]!, strict: true)
        try ema.load(groups["ema."]!)
        try optimizer.loadState(groups["opt."]!, stepCount: try int("opt_step"))
        var s = TrainingState()
        s.step = try int("step"); s.epoch = try int("epoch"); s.batchInEpoch = try int("batch_in_epoch")
        s.rngOffset = UInt64(try int("rng_offset")); s.badSteps = try int("bad_steps")
        if let text = file.metadata["loss_scale"] {
            guard let scale = Float(text), scale.isFinite, scale > 0 else {
                throw HasteError.fileFormat(path: path, detail: "metadata 'loss_scale' is '\(text)', not a positive finite number")
            }
            let tracker = try int("loss_scale_growth_tracker")
            guard tracker >= 0 else { throw HasteError.fileFormat(path: path, detail: "metadata 'loss_scale_growth_tracker' is negative (\(tracker))") }
            s.scaler = LossScaler(scale: scale, growthTracker: tracker)
        }
        return s
    }

    /// The newest checkpoint in a run directory, if any: ours (`NNNNNNN.safetensors`) or the reference's
    /// (`NNNNNNN.pt`, as HASTE/REPA train.py names them; ours wins a tie).
    public static func latest(in dir: String) -> (step: Int, path: String)? {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: "\(dir)/checkpoints")) ?? []
        return files.compactMap { f -> (Int, Int, String)? in
            let ext = f.hasSuffix(".safetensors") ? 12 : f.hasSuffix(".pt") ? 3 : 0
            guard ext > 0, let s = Int(f.dropLast(ext)) else { return nil }
            return (s, ext == 12 ? 1 : 0, "\(dir)/checkpoints/\(f)")
        }.max { ($0.0, $0.1) < ($1.0, $1.1) }.map { ($0.0, $0.2) }
    }

    /// The checkpoint of `step` in a run directory: ours, else the reference's `NNNNNNN.pt`.
    public static func find(in dir: String, step: Int) -> String? {
        let ours = path(dir, step: step), reference = "\(dir)/checkpoints/\(String(format: "%07d", step)).pt"
        return [ours, reference].first { FileManager.default.fileExists(atPath: $0) }
    }
}
