import Foundation
import HasteModels
import HasteTensor

/// `haste bench train --sweep` (issue #15 item 4): how a training step's cost grows with model and batch size.
/// The models and batches, the small model tests use, and the rule that skips a row that would not fit in
/// memory before it is attempted. Scripts/bench_torch_train.py has the same rows and the same rule.
public enum CostSweep {
    public static let models = ["SiT-S/2", "SiT-B/2", "SiT-L/2", "SiT-XL/2"], batches = [1, 4, 16, 64]
    /// For tests and quick checks of the machinery: the demo's student (configs/demo.yaml), SiT-S/4 at width 128,
    /// depth 6, 4 heads, encoder depth 4.
    public static let tinyModel = "SiT-tiny/4"
    /// The share of MemAvailable a row's predicted peak may take.
    public static let memoryShare = 0.8

    /// Sets `model` on `config`: the tiny model's sizes, or the named SiT as it is.
    public static func apply(model: String, to config: inout TrainConfig) {
        guard model == tinyModel else { config.model = model; return }
        config.model = "SiT-S/4"
        (config.hiddenSize, config.depth, config.numHeads, config.encoderDepth) = (128, 6, 4, 4)
    }

    /// MiB of weights, gradients and AdamW's two moments: 4 float32 per parameter (buffers included), the
    /// part of a step's memory that does not grow with the batch.
    public static func fixedMiB(_ config: SiTConfig) throws -> Double {
        let parameters = try SiT.stateDictShapes(config).reduce(0) { $0 + $1.1.reduce(1, *) }
        return Double(parameters) * 16 / (1024 * 1024)
    }

    /// A row's measured peak memory.
    public struct Point: Sendable, Equatable {
        public let batch: Int, peakMiB: Double
        public init(batch: Int, peakMiB: Double) { (self.batch, self.peakMiB) = (batch, peakMiB) }
    }

    /// Peak memory as a fixed part plus a part per image.
    public struct PeakModel: Sendable, Equatable {
        public let fixedMiB: Double, perImageMiB: Double
        public func at(batch: Int) -> Double { fixedMiB + perImageMiB * Double(batch) }
    }

    /// The peak model of a model's next batch from its smaller batches' measured peaks (`measured`, any order):
    /// - none measured: `fixedMiB` (weights and optimizer state, `fixedMiB(_:)`) and nothing per image yet;
    /// - one: that fixed part (at most the measured peak), the rest of the measured peak spread over its images;
    /// - two or more: the line through the two largest batches (per-image part at least 0).
    public static func peakModel(measured: [Point], fixedMiB: Double) -> PeakModel {
        let points = measured.sorted { $0.batch < $1.batch }
        guard let last = points.last else { return PeakModel(fixedMiB: fixedMiB, perImageMiB: 0) }
        guard let previous = points.last(where: { $0.batch < last.batch }) else {
            let fixed = min(fixedMiB, last.peakMiB)
            return PeakModel(fixedMiB: fixed, perImageMiB: (last.peakMiB - fixed) / Double(last.batch))
        }
        let per = max(0, (last.peakMiB - previous.peakMiB) / Double(last.batch - previous.batch))
        return PeakModel(fixedMiB: last.peakMiB - per * Double(last.batch), perImageMiB: per)
    }

    /// Why the row at `batch` is skipped: its predicted peak exceeds `memoryShare` of `memAvailableMiB`; nil: run it.
    public static func skipReason(batch: Int, model: PeakModel, memAvailableMiB: Double) -> String? {
        let predicted = model.at(batch: batch), limit = memoryShare * memAvailableMiB
        guard predicted > limit else { return nil }
        return String(format: "predicted peak %.0f MiB (%.0f fixed + %.1f per image) > %.0f%% of MemAvailable %.0f MiB",
                      predicted, model.fixedMiB, model.perImageMiB, 100 * memoryShare, memAvailableMiB)
    }

    /// MemAvailable of a /proc/meminfo text, in MiB; nil when the line is missing.
    public static func memAvailableMiB(meminfo: String) -> Double? {
        for line in meminfo.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kb = Double(fields[1]) else { return nil }
            return kb / 1024
        }
        return nil
    }

    /// This machine's MemAvailable in MiB; nil where /proc/meminfo does not exist (then nothing is skipped).
    public static func memAvailableMiB() -> Double? {
        (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)).flatMap { memAvailableMiB(meminfo: $0) }
    }
}
