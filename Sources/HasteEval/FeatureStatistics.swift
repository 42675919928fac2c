import COpenBLAS
import HasteTensor

/// Mean and unbiased covariance of a set of feature vectors, in float64 (spec/evaluation.md §2.3; ADM:
/// `np.mean(acts, axis=0)`, `np.cov(acts, rowvar=False)`). `covariance` is row-major [dimension, dimension].
public struct FeatureStatistics: Sendable, Equatable {
    public let dimension: Int
    /// Samples the statistics summarise (0 when unknown, e.g. read from a reference npz).
    public let count: Int
    public let mean: [Double]
    public let covariance: [Double]

    public init(mean: [Double], covariance: [Double], count: Int = 0) {
        require(covariance.count == mean.count * mean.count,
                "FeatureStatistics: mean of \(mean.count) with a covariance of \(covariance.count) entries")
        dimension = mean.count
        self.count = count
        self.mean = mean
        self.covariance = covariance
    }

    /// Statistics of `features` [N, D] (any float dtype; N ≥ 2).
    public init(features: Tensor) {
        var acc = StatisticsAccumulator(dimension: features.shape.last ?? 0)
        acc.add(features)
        self = acc.finish()
    }

    public var trace: Double { (0..<dimension).reduce(0) { $0 + covariance[$1 * dimension + $1] } }
}

/// Streams feature batches into float64 sums, so 50 000 × 2048 features need no [N, D] float64 copy.
/// Shifted one-pass form: with c = the first batch's mean, S = Σ(x − c), G = Σ(x − c)(x − c)ᵀ (BLAS dsyrk),
/// mean = c + S/N and cov = (G − S·Sᵀ/N)/(N − 1); the shift keeps the subtraction well conditioned.
public struct StatisticsAccumulator {
    public let dimension: Int
    public private(set) var count = 0
    private var shift: [Double] = []
    private var sum: [Double]
    private var gram: [Double]      // upper triangle, row-major

    public init(dimension: Int) {
        self.dimension = dimension
        sum = [Double](repeating: 0, count: dimension)
        gram = [Double](repeating: 0, count: dimension * dimension)
    }

    /// Adds the rows of `features` [n, D].
    public mutating func add(_ features: Tensor) {
        require(features.rank == 2 && features.shape[1] == dimension,
                "StatisticsAccumulator.add: features \(features.shape), expected [n, \(dimension)]")
        let n = features.shape[0], d = dimension
        guard n > 0 else { return }
        var x = features.to(.cpu).to(.float64).scalars(as: Double.self)   // [n, D]
        if shift.isEmpty {
            shift = (0..<d).map { j in (0..<n).reduce(0.0) { $0 + x[$1 * d + j] } / Double(n) }
        }
        for i in 0..<n { for j in 0..<d { x[i * d + j] -= shift[j] } }
        for i in 0..<n { for j in 0..<d { sum[j] += x[i * d + j] } }
        // G += Xᵀ·X (upper triangle)
        CPUBackend.withGemmMutex {
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(n), 1, x, Int32(d), 1, &gram, Int32(d))
        }
        count += n
    }

    /// The statistics so far (needs at least two samples for the unbiased covariance).
    public func finish() -> FeatureStatistics {
        require(count >= 2, "StatisticsAccumulator: \(count) samples; the unbiased covariance needs at least 2")
        let d = dimension, n = Double(count)
        let mean = (0..<d).map { shift[$0] + sum[$0] / n }
        var cov = [Double](repeating: 0, count: d * d)
        for i in 0..<d {
            for j in i..<d {
                let v = (gram[i * d + j] - sum[i] * sum[j] / n) / (n - 1)
                cov[i * d + j] = v
                cov[j * d + i] = v
            }
        }
        return FeatureStatistics(mean: mean, covariance: cov, count: count)
    }
}
