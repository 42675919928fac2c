import Foundation
import HasteDiffusion
import HasteEval
import HasteIO
import HasteModels
import HasteNN
import HasteTensor

/// Fashion-MNIST as an evaluation image set: the 28 → 32 padded grey images replicated to RGB, uint8
/// [n, 3, 32, 32] (Inception's resize takes them to 299). `haste fid fashion-mnist:t10k --save-stats FILE`
/// makes the demo's reference statistics from the test split; `fashion-mnist:t10k[5000:5500]` is images
/// 5000..<5500 only (disjoint parts of one split measure the FID noise floor: Scripts/replicate.sh).
public struct FashionMNISTImages: ImageSource {
    public let data: FashionMNIST
    /// The images of the split this set shows (all of them unless a range was given).
    public let range: Range<Int>
    public var count: Int { range.count }

    public init(split: String, directory: String = FashionMNIST.defaultDirectory, range: Range<Int>? = nil) throws {
        data = try FashionMNIST(directory: directory, split: split)
        if let range, range.lowerBound < 0 || range.upperBound > data.count || range.isEmpty {
            throw HasteError.unsupported("fashion-mnist:\(split)[\(range.lowerBound):\(range.upperBound)]: the \(split) split has images 0..<\(data.count); give [first:end] with first < end ≤ \(data.count)")
        }
        self.range = range ?? 0..<data.count
    }

    public func images(_ range: Range<Int>) throws -> Tensor {
        let first = self.range.lowerBound + range.lowerBound
        let grey = Tensor(Array(data.pixels[(first * 1024)..<((first + range.count) * 1024)]), shape: [range.count, 1, 32, 32])
        return Tensor.cat([grey, grey, grey], axis: 1)                                  // (n, 3, 32, 32) uint8
    }

    /// `fashion-mnist:t10k` / `fashion-mnist:train`, optionally `[first:end]` (images first..<end), as a `haste fid`
    /// input; any other spelling goes to `EvalSet.open`.
    public static func openEvalSet(_ spec: String) throws -> EvalSet {
        guard spec.hasPrefix("fashion-mnist:") else { return try EvalSet.open(spec) }
        var split = String(spec.dropFirst("fashion-mnist:".count)), range: Range<Int>?
        if let open = split.firstIndex(of: "[") {
            let inner = split[split.index(after: open)...].dropLast(split.hasSuffix("]") ? 1 : 0).split(separator: ":", omittingEmptySubsequences: false)
            guard split.hasSuffix("]"), inner.count == 2, let a = Int(inner[0]), let b = Int(inner[1]), a < b else {
                throw HasteError.unsupported("\(spec): a range is written [first:end] with whole numbers first < end, e.g. fashion-mnist:t10k[5000:5500]")
            }
            (split, range) = (String(split[..<open]), a..<b)
        }
        guard ["t10k", "train"].contains(split) else {
            throw HasteError.unsupported("\(spec): the Fashion-MNIST splits are fashion-mnist:t10k and fashion-mnist:train (optionally with [first:end])")
        }
        return EvalSet(path: spec, images: try FashionMNISTImages(split: split, range: range), stored: nil)
    }
}

/// FID during training (`fid-every` steps, 0 = off): `fid-samples` images from the EMA model with the
/// previews' Euler sampler (`sample-num-steps`, `sample-cfg`), fixed noise and labels (their own stream,
/// so the curve compares like with like across steps and resumes), against the `fid-ref` statistics
/// (ADM mode, `fid-weights`). Pixels as ADM's sample.py stores them: ((x + 1)·127.5) clamped, truncated to uint8.
final class TrainingFID {
    let config: TrainConfig
    let model: SiT
    let extractor: InceptionFeatureExtractor
    let reference: FeatureStatistics
    let noise: Tensor, labels: Tensor
    private var curve: [(Double, Double)] = []
    static let samplingBatch = 250

    /// nil when `fid-every` is 0. Loads the network and the reference statistics once.
    init?(config: TrainConfig, models: ResolvedModels, sampleShape: [Int], pixelSpace: Bool, run: RunDirectory,
          device: Device = .cpu) throws {
        guard config.fidEvery > 0 else { return nil }
        guard pixelSpace else {
            throw HasteError.config(key: "fid-every", detail: "FID during training needs pixel-space samples (latent models need the SD-VAE decoder; use haste fid on generated images)")
        }
        guard config.fidSamples >= 2, !config.fidRef.isEmpty else {
            throw HasteError.config(key: "fid-ref", detail: "fid-every needs fid-ref (statistics, e.g. from `haste fid fashion-mnist:t10k --save-stats FILE`) and fid-samples ≥ 2")
        }
        let sit = try models.student.sitConfig(for: "FID during training (fid-every)")
        self.config = config
        model = try SiT(sit)
        model.store.setRequiresGrad(false)                     // sampled under noGrad only
        model.store.move(to: device)                           // the EMA's device; noise and labels stay on the host
        let weights = try InceptionWeightsFile.resolve(config.fidWeights)
        extractor = InceptionFeatureExtractor(model: try InceptionWeightsFile.load(resolvedPath: weights, device: device), input: .adm,
                                              device: device)
        let ref = try FashionMNISTImages.openEvalSet(config.fidRef)
        let evaluator = FIDEvaluator(extractor: extractor, weightsName: (weights as NSString).lastPathComponent,
                                     referenceCache: ReferenceStatsCache(weightsPath: weights))
        evaluator.log = { run.log($0) }
        reference = try evaluator.referenceFeatures(of: ref).pool
        if config.fidSamples < FIDEvaluator.minimumComparableCount {
            run.log("warning: fid-samples \(config.fidSamples) < \(FIDEvaluator.minimumComparableCount): the FID curve is biased upwards; "
                    + "compare it only with itself, and use haste fid on ≥ 2048 (papers: 50 000) samples for a number to report")
        }
        let g = RandomGenerator(seed: UInt64(config.seed) &+ 3)
        noise = g.normal([config.fidSamples] + sampleShape)
        labels = Tensor((0..<config.fidSamples).map { Int64($0 % sit.numClasses) }, shape: [config.fidSamples])
        curve = TrainingFID.previousCurve(run)
    }

    /// At steps divisible by `fid-every` (and the last): the FID of fresh EMA samples; nil at other steps.
    func measure(step: Int, ema: EMA, run: RunDirectory) throws -> Double? {
        guard step % config.fidEvery == 0 || step == config.maxTrainSteps else { return nil }
        ema.copy(into: model.store)
        let guidance = Guidance(scale: config.sampleCfg, low: 0, high: 1, nullClass: model.config.numClasses)
        let m = model
        var batches: [Tensor] = []
        for first in stride(from: 0, to: config.fidSamples, by: TrainingFID.samplingBatch) {
            let n = min(TrainingFID.samplingBatch, config.fidSamples - first)
            let x = Samplers.euler(Samplers.onDevice(m.store.device) { x, t, y in m(x, t: t, y: y).velocity }, noise: noise.narrowed(0, start: first, length: n),
                                   labels: labels.narrowed(0, start: first, length: n), steps: config.sampleNumSteps, guidance: guidance)
            batches.append(((x + 1) * 127.5).clamp(min: 0, max: 255).to(.uint8))      // (n, C, H, W) uint8
        }
        var images = Tensor.cat(batches, axis: 0)
        if images.shape[1] == 1 { images = Tensor.cat([images, images, images], axis: 1) }   // grey → RGB
        let samples = try extractor.extract(TensorImages(images))
        let fid = try FrechetDistance.compute(samples.pool, reference)
        curve.removeAll { $0.0 >= Double(step) }
        curve.append((Double(step), fid))
        try RunPlots.fid(curve, samples: config.fidSamples, run.plotContext).write(to: "\(run.root)/fid.png")
        return fid
    }

    /// FID values already in metrics.jsonl (a resumed run continues its curve).
    static func previousCurve(_ run: RunDirectory) -> [(Double, Double)] {
        guard let text = try? String(contentsOfFile: "\(run.root)/metrics.jsonl", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let s = obj["step"] as? Int, let f = obj["fid"] as? Double else { return nil }
            return (Double(s), f)
        }
    }
}
