import Foundation
import Testing
@testable import HasteEval
import HasteTensor

// Metrics of Sources/HasteEval against ADM's evaluator re-typed in numpy/scipy (Scripts/fixtures/fid.py,
// fixture fid_metrics). Oracles are float64; tolerances say what separates the two computations.

/// Mean and unbiased covariance: numpy's float64 np.mean/np.cov of the same float32 features. Both are
/// float64 sums of 41 terms (ours shifted, one-pass; numpy two-pass), so they agree to ~1e-14 of the scale.
@Test func featureStatisticsMatchNumpy() throws {
    let f = try Fixture("fid_metrics.safetensors")
    let s = FeatureStatistics(features: f["stats.x"])
    expectClose(Tensor(s.mean, shape: [33]), f["stats.mu"], atol: 1e-12, rtol: 1e-12, "mu")
    expectClose(Tensor(s.covariance, shape: [33, 33]), f["stats.sigma"], atol: 1e-12, rtol: 1e-12, "sigma")
    #expect(s.count == 41)
}

/// Batches of 7, 1 and 33 rows give the statistics of all 41 at once (the shift comes from the first batch).
@Test func statisticsAccumulatorIsBatchInvariant() throws {
    let x = try Fixture("fid_metrics.safetensors")["stats.x"]
    var acc = StatisticsAccumulator(dimension: 33)
    for (start, length) in [(0, 7), (7, 1), (8, 33)] { acc.add(x.narrowed(0, start: start, length: length)) }
    let a = acc.finish(), b = FeatureStatistics(features: x)
    expectClose(Tensor(a.mean, shape: [33]), Tensor(b.mean, shape: [33]), atol: 1e-12, rtol: 1e-12)
    expectClose(Tensor(a.covariance, shape: [33, 33]), Tensor(b.covariance, shape: [33, 33]), atol: 1e-12, rtol: 1e-12)
}

/// Full-rank 128-d statistics: ADM's scipy-sqrtm formula to 1e-6 relative (the bar; measured ~1e-14),
/// and numpy's eigenvalue form (the same algorithm) to 1e-10.
@Test func frechetDistanceMatchesScipy() throws {
    let f = try Fixture("fid_metrics.safetensors")
    func stats(_ i: Int) -> FeatureStatistics {
        FeatureStatistics(mean: f["frechet.mu\(i)"].scalars(as: Double.self), covariance: f["frechet.sigma\(i)"].scalars(as: Double.self))
    }
    let d = try FrechetDistance.compute(stats(1), stats(2))
    let scipy = f.scalar("frechet_scipy"), eig = f.scalar("frechet_eig")
    #expect(Swift.abs(d - scipy) <= 1e-6 * scipy, "\(d) vs scipy \(scipy)")
    #expect(Swift.abs(d - eig) <= 1e-10 * eig, "\(d) vs eig \(eig)")
    #expect(Swift.abs(try FrechetDistance.compute(stats(1), stats(1))) <= 1e-9 * stats(1).trace, "d(S, S) ≈ 0")
}

/// Hand-derived: 1-d Gaussians N(m1, s1²), N(m2, s2²) are (m1 − m2)² + (s1 − s2)² apart; diagonal
/// covariances separate per axis.
@Test func frechetDistanceOfDiagonalGaussians() throws {
    let a = FeatureStatistics(mean: [1, 0], covariance: [4, 0, 0, 9]), b = FeatureStatistics(mean: [0, 2], covariance: [1, 0, 0, 1])
    let d = try FrechetDistance.compute(a, b)
    #expect(Swift.abs(d - (1 + 4 + 1 + 4)) <= 1e-12, "\(d)")
    #expect(throws: HasteError.self) { try FrechetDistance.compute(a, FeatureStatistics(mean: [0], covariance: [1])) }
    #expect(throws: HasteError.self) { try FrechetDistance.compute(a, FeatureStatistics(mean: [.nan, 0], covariance: [1, 0, 0, 1])) }
}

/// ADM's compute_inception_score in float64: chunks of 5 (5, 5, 2) and one chunk of 12.
@Test func inceptionScoreMatchesNumpy() throws {
    let f = try Fixture("fid_metrics.safetensors")
    for (split, key) in [(5, "is_split5"), (12, "is_split12")] {
        let s = InceptionScore.compute(logits: f["is.logits"], splitSize: split), expected = f.scalar(key)
        #expect(Swift.abs(s - expected) <= 1e-10 * expected, "split \(split): \(s) vs \(expected)")
    }
    // Identical rows: every KL is 0, the score is exactly 1.
    #expect(Swift.abs(InceptionScore.compute(logits: Tensor.zeros([4, 10])) - 1) <= 1e-15)
}

/// ManifoldEstimator (k = 3) in numpy float64: the same decisions (no distance lies within float32 rounding
/// of a radius in this data).
@Test func precisionRecallMatchesNumpy() throws {
    let f = try Fixture("fid_metrics.safetensors")
    let pr = PrecisionRecall.compute(reference: f["pr.ref"], samples: f["pr.samples"])
    #expect(pr.precision == f.scalar("precision") && pr.recall == f.scalar("recall"), "\(pr)")
    // A set against itself: every point lies within its own radius.
    let same = PrecisionRecall.compute(reference: f["pr.ref"], samples: f["pr.ref"])
    #expect(same.precision == 1 && same.recall == 1)
}

/// Radii are the 4th-smallest distances (k = 3, self included) whatever the block size; P&R too.
@Test func precisionRecallIsBlockInvariant() throws {
    let x = Tensor.randn([37, 5], seed: 91)
    let v = x.scalars(as: Float.self)
    for block in [5, 16, 2048] {
        let r = PrecisionRecall.radii(PrecisionRecall.Points(x), k: 3, block: block)
        for i in [0, 17, 36] {
            let d = (0..<37).map { j in (0..<5).reduce(Float(0)) { $0 + (v[i * 5 + $1] - v[j * 5 + $1]) * (v[i * 5 + $1] - v[j * 5 + $1]) } }.sorted()
            #expect(Swift.abs(r[i] - d[3]) <= 1e-4 * Swift.max(d[3], 1), "block \(block), point \(i): \(r[i]) vs \(d[3])")
        }
    }
    let f = try Fixture("fid_metrics.safetensors")
    let pr = PrecisionRecall.compute(reference: f["pr.ref"], samples: f["pr.samples"], k: 3, block: 7)
    #expect(pr.precision == f.scalar("precision") && pr.recall == f.scalar("recall"), "\(pr)")
}
