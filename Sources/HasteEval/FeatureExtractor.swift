import Foundation
import HasteDistributed
import HasteModels
import HasteTensor

/// Images to evaluate, read a batch at a time (an ADM npz's arr_0, a folder of PNGs, generated samples).
public protocol ImageSource {
    var count: Int { get }
    /// Images first..<first+n as uint8 (or float 0…255) [n, 3, H, W]; every batch has one size.
    func images(_ range: Range<Int>) throws -> Tensor
}

/// Images already in memory: uint8 or float 0…255, [N, 3, H, W].
public struct TensorImages: ImageSource {
    public let tensor: Tensor
    public init(_ tensor: Tensor) {
        require(tensor.rank == 4 && tensor.shape[1] == 3, "TensorImages: \(tensor.shape), expected [N, 3, H, W]")
        self.tensor = tensor
    }
    public var count: Int { tensor.shape[0] }
    public func images(_ range: Range<Int>) throws -> Tensor { tensor.narrowed(0, start: range.lowerBound, length: range.count) }
}

/// What one pass of the network over a set of images yields (spec/evaluation.md §2.2–2.3).
public struct ExtractedFeatures {
    public let count: Int
    /// pool_3 statistics (FID) and spatial statistics (sFID).
    public let pool: FeatureStatistics, spatial: FeatureStatistics
    /// [N, 2048] pool features, kept when asked for (precision/recall).
    public let poolFeatures: Tensor?
    /// [N, 2023] spatial features, kept when asked for (tests, analysis).
    public let spatialFeatures: Tensor?
    /// [N, 1008] logits (Inception Score), when the weights have the classifier.
    public let logits: Tensor?
    /// Wall time of reading, preprocessing and the network.
    public let seconds: Double
    public var imagesPerSecond: Double { Double(count) / max(seconds, 1e-9) }
}

/// Runs the FID Inception over an `ImageSource` in batches (ADM: 64), accumulating float64 statistics; the
/// batches are shared among the ranks of `comm` (FeatureExtractor+Ranks.swift).
public final class InceptionFeatureExtractor {
    public let model: FIDInceptionV3
    public let input: InceptionInput
    public let batchSize: Int
    public let device: Device
    public var comm: Communicator = SingleProcess()

    public init(model: FIDInceptionV3, input: InceptionInput, batchSize: Int = 64, device: Device = .cpu) {
        require(batchSize >= 1, "InceptionFeatureExtractor: batch size \(batchSize) must be at least 1")
        self.model = model
        self.input = input
        self.batchSize = batchSize
        self.device = device
    }

    /// Features of every image of `source`. `keepPool`/`keepSpatial`/`keepLogits` keep the per-image rows;
    /// `progress(done, total)` is called after each batch (the CLI draws its bar from it).
    public func extract(_ source: any ImageSource, keepPool: Bool = false, keepSpatial: Bool = false, keepLogits: Bool = false,
                        progress: ((Int, Int) -> Void)? = nil) throws -> ExtractedFeatures {
        let n = source.count
        guard n >= 2 else { throw HasteError.unsupported("FID statistics need at least 2 images, got \(n)") }
        let start = Date()
        var pool = StatisticsAccumulator(dimension: FIDInceptionV3.poolFeatures)
        var spatial = StatisticsAccumulator(dimension: FIDInceptionV3.spatialFeatures)
        var pools: [Tensor] = [], spatials: [Tensor] = [], logits: [Tensor] = []
        progress?(0, n)
        let ranges = stride(from: 0, to: n, by: batchSize).map { $0..<min($0 + batchSize, n) }
        let batchOutput = try outputs(of: source, ranges: ranges, comm: comm) { done in
            progress?(min(n, done * comm.size * batchSize), n)          // this rank's batches, scaled to the set
        }
        for (k, range) in ranges.enumerated() {
            let out = try batchOutput(k)
            pool.add(out.pool)
            spatial.add(out.spatial)
            if keepPool { pools.append(out.pool.to(.cpu)) }
            if keepSpatial { spatials.append(out.spatial.to(.cpu)) }
            if keepLogits, let l = out.logits { logits.append(l.to(.cpu)) }
            if comm.size == 1 { progress?(range.upperBound, n) }
        }
        return ExtractedFeatures(count: n, pool: pool.finish(), spatial: spatial.finish(),
                                 poolFeatures: keepPool ? Tensor.cat(pools, axis: 0) : nil,
                                 spatialFeatures: keepSpatial ? Tensor.cat(spatials, axis: 0) : nil,
                                 logits: keepLogits && !logits.isEmpty ? Tensor.cat(logits, axis: 0) : nil,
                                 seconds: Date().timeIntervalSince(start))
    }
}

/// The first `count` images of another source (`haste fid --limit`).
public struct ImagePrefix: ImageSource {
    public let base: any ImageSource
    public let count: Int
    public init(_ base: any ImageSource, count: Int) {
        self.base = base
        self.count = min(count, base.count)
    }
    public func images(_ range: Range<Int>) throws -> Tensor { try base.images(range) }
}
