import HasteIO
import HasteModels
import HasteTensor

/// Reference statistics saved by `haste fid --save-stats` as safetensors: `mu` [2048], `sigma` [2048, 2048],
/// and for sFID `mu_s` [2023], `sigma_s` [2023, 2023] (ADM's npz keys), all float64; metadata `format`
/// (= `haste-fid-stats`), `mode` (adm | pytorch-fid), `count`, `weights`.
public struct StatsFile {
    public static let format = "haste-fid-stats"
    public var pool: FeatureStatistics
    public var spatial: FeatureStatistics?
    public var mode: InceptionInput?
    public var weights: String

    public init(pool: FeatureStatistics, spatial: FeatureStatistics?, mode: InceptionInput?, weights: String) {
        (self.pool, self.spatial, self.mode, self.weights) = (pool, spatial, mode, weights)
    }

    /// mu, sigma (and mu_s, sigma_s) as float64 tensors, in file order.
    public var tensors: [(String, Tensor)] {
        var tensors = [("mu", Tensor(pool.mean, shape: [pool.dimension])),
                       ("sigma", Tensor(pool.covariance, shape: [pool.dimension, pool.dimension]))]
        if let s = spatial {
            tensors += [("mu_s", Tensor(s.mean, shape: [s.dimension])), ("sigma_s", Tensor(s.covariance, shape: [s.dimension, s.dimension]))]
        }
        return tensors
    }

    /// `extraTensors`/`extraMetadata`: what a cache entry adds (pool rows, key, checksums).
    /// `tensors`: this file's `tensors` when the caller has them already (a cache entry checksums them first).
    public func write(to path: String, tensors: [(String, Tensor)]? = nil, extraTensors: [(String, Tensor)] = [],
                      extraMetadata: [String: String] = [:]) throws {
        let metadata = ["format": StatsFile.format, "mode": mode?.rawValue ?? "unknown", "count": "\(pool.count)", "weights": weights]
        try SafetensorsWriter.write((tensors ?? self.tensors) + extraTensors, metadata: metadata.merging(extraMetadata) { a, _ in a }, to: path)
    }

    public static func read(_ path: String) throws -> StatsFile { try read(SafetensorsFile(path: path), path: path) }

    /// `loaded`: tensors of `file` already read (a cache lookup's checksummed ones), not read a second time.
    static func read(_ file: SafetensorsFile, path: String, loaded: [String: Tensor] = [:]) throws -> StatsFile {
        guard file.entry("mu") != nil, file.entry("sigma") != nil else {
            throw HasteError.fileFormat(path: path, detail: "no 'mu'/'sigma' tensors: not a statistics file from `haste fid --save-stats`")
        }
        let count = Int(file.metadata["count"] ?? "") ?? 0
        func stats(_ mu: String, _ sigma: String) throws -> FeatureStatistics? {
            guard file.entry(mu) != nil else { return nil }
            return try statistics(mean: loaded[mu] ?? file.tensor(mu), covariance: loaded[sigma] ?? file.tensor(sigma), count: count, path: path)
        }
        return StatsFile(pool: try stats("mu", "sigma")!, spatial: try stats("mu_s", "sigma_s"),
                         mode: file.metadata["mode"].flatMap(InceptionInput.init(rawValue:)), weights: file.metadata["weights"] ?? "")
    }

    /// Checks shapes ([D], [D, D]) and converts to float64 statistics.
    static func statistics(mean: Tensor, covariance: Tensor, count: Int, path: String) throws -> FeatureStatistics {
        let d = mean.shape.first ?? 0
        guard mean.rank == 1, covariance.shape == [d, d], mean.dtype.isFloatingPoint, covariance.dtype.isFloatingPoint else {
            throw HasteError.fileFormat(path: path, detail: "statistics shaped \(mean.shape) and \(covariance.shape); expected [D] and [D, D] floats")
        }
        return FeatureStatistics(mean: mean.to(.float64).scalars(as: Double.self),
                                 covariance: covariance.to(.float64).scalars(as: Double.self), count: count)
    }
}
