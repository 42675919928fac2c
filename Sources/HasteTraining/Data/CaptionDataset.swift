import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// Text-conditioned training data: batches carry caption features (`Batch.context`), already replaced by the empty
/// caption's for the classifier-free-guidance drop (spec/method.md §10: the reference drops in the dataset).
public protocol CaptionedDataset: TrainingDataset {
    /// Features of the empty caption, [L, D]: the unconditional input of CFG.
    var emptyContext: Tensor { get }
    /// `n` fixed preview prompts (the first distinct captions, or captions of the first items): a label for each (its
    /// text when the data has it) and their features [n, L, D]. Fewer when the data has fewer.
    func previewPrompts(_ n: Int) throws -> (texts: [String], context: Tensor)
    /// A text encoder made for this run (the demo's random one) to save beside the run; nil when the features were
    /// made elsewhere.
    var textEncoderToSave: CLIPTextModel? { get }
}

/// The per-epoch caption choice and CFG drop of caption data, each a pure function of (seed, epoch, item), so a
/// resumed run sees exactly the batches of the uninterrupted one (the reference draws them from Python's `random`).
public struct CaptionChoice: Sendable {
    public let seed: UInt64
    /// Probability of replacing the caption by the empty caption (cfg-prob, reference 0.1).
    public let dropProbability: Double

    public init(seed: UInt64, dropProbability: Double) { (self.seed, self.dropProbability) = (seed, dropProbability) }

    /// Caption index in 0..<count of `item` in `epoch`, uniform.
    public func caption(item: Int, epoch: Int, count: Int) -> Int {
        min(count - 1, Int(uniform(item: item, epoch: epoch, stream: 1) * Double(count)))
    }

    /// Whether `item`'s caption is dropped to the empty one in `epoch`.
    public func dropped(item: Int, epoch: Int) -> Bool { uniform(item: item, epoch: epoch, stream: 2) < dropProbability }

    /// A uniform double in [0, 1) from SplitMix64 over (seed, epoch, item, stream).
    func uniform(item: Int, epoch: Int, stream: UInt64) -> Double {
        var h = CaptionChoice.mix(seed ^ 0x5143_4150_5449_4F4E)
        h = CaptionChoice.mix(h ^ UInt64(truncatingIfNeeded: epoch))
        h = CaptionChoice.mix(h ^ UInt64(truncatingIfNeeded: item))
        h = CaptionChoice.mix(h ^ stream)
        return Double(h >> 11) * 0x1p-53
    }

    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Latent text-to-image training over any `CaptionFeatureSource` (the reference COCO folder, or the packed file):
/// the stored PNG for the teacher, the VAE moments turned into mean | std (spec/data.md §2.2: the stored channels
/// are mean | log-variance; std = exp(½·clamp(logvar, −30, 20))) and one caption per image per epoch.
public final class CaptionDataset: CaptionedDataset {
    public let source: CaptionFeatureSource
    public let choice: CaptionChoice
    public let sampleShape: [Int]
    public let numClasses = 1
    public let hasImages = true
    public let hasLatents = true
    public var count: Int { source.count }
    public var contextShape: [Int]? { source.contextShape }
    public var emptyContext: Tensor { source.emptyContext }
    public var textEncoderToSave: CLIPTextModel? { nil }

    public init(source: CaptionFeatureSource, choice: CaptionChoice) throws {
        guard source.count > 0 else { throw HasteError.fileFormat(path: source.path, detail: "the dataset is empty") }
        let m = try source.moments(0).shape
        guard m.count == 3, m[0] >= 2, m[0] % 2 == 0, m[1] == m[2] else {
            throw HasteError.fileFormat(path: source.path, detail: "item 0 has moments of shape \(m), expected [2C, r, r] (mean and log-variance of the VAE posterior)")
        }
        (self.source, self.choice) = (source, choice)
        sampleShape = [m[0] / 2, m[1], m[2]]
    }

    public func batch(_ indices: [Int]) throws -> Batch { try batch(indices, epoch: 0) }

    public func batch(_ indices: [Int], epoch: Int) throws -> Batch {
        var images: [Tensor] = [], moments: [Tensor] = [], contexts: [Tensor] = []
        let mShape = [2 * sampleShape[0], sampleShape[1], sampleShape[2]]
        for i in indices {
            let image = try source.image(i)
            guard image.rank == 3, image.shape[0] == 3, images.first.map({ $0.shape == image.shape }) ?? true else {
                throw HasteError.fileFormat(path: source.path, detail: "image \(i) is \(image.shape), expected [3, R, R] like the others")
            }
            let m = try source.moments(i)
            guard m.shape == mShape else { throw HasteError.fileFormat(path: source.path, detail: "moments of item \(i) are \(m.shape), expected \(mShape)") }
            images.append(image)
            moments.append(CaptionDataset.meanStd(m))
            let n = source.captionCount(i)
            contexts.append(choice.dropped(item: i, epoch: epoch) ? emptyContext : try source.caption(i, choice.caption(item: i, epoch: epoch, count: n)))
        }
        let b = indices.count
        return Batch(images: Tensor.stack(images, axis: 0), x0: Tensor.stack(moments, axis: 0), moments: true,
                     labels: Tensor.zeros([b], dtype: .int64), context: Tensor.stack(contexts, axis: 0))
    }

    /// Stored [mean | log-variance] → [mean | std], the form `Objective.cleanSample` draws latents from.
    public static func meanStd(_ m: Tensor) -> Tensor {
        let h = m.to(.float32).chunk(2, axis: 0)
        return Tensor.cat([h[0], (h[1].clamp(min: -30, max: 20) * 0.5).exp()], axis: 0)
    }

    /// Caption 0 of the first `n` items.
    public func previewPrompts(_ n: Int) throws -> (texts: [String], context: Tensor) {
        let k = min(n, count)
        let rows = try (0..<k).map { try source.caption($0, 0) }
        return ((0..<k).map { "item \($0), caption 0" }, Tensor.stack(rows, axis: 0))
    }
}
