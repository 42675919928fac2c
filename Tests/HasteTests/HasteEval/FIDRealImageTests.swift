import Foundation
import Testing
@testable import HasteEval
import HasteModels
import HasteTensor

// FID and sFID between two real image sets with the real weights against Scripts/fixtures/fid.py: PyTorch's
// TorchScript features → numpy float64 statistics → the eigenvalue form and ADM's scipy sqrtm. Set A = images
// 0–2 (Fashion-MNIST), set B = images 3–5 (one Fashion-MNIST, two synthetic). Our features come from
// RealInceptionRun (InceptionTests.swift): HasteEval's extractor, run once for all tests.

/// 1e-4 relative (the bar). Features agree to ~1e-6; three images per set make the covariances rank 2,
/// where scipy's sqrtm is itself only good to ~2e-7 (the fixture holds both references). Through the evaluator
/// over stored statistics (no second network pass), which also reports what the inputs cannot give.
@Test(.enabled(if: inceptionCached, Comment(rawValue: inceptionSkip)))
func fidOfRealImageSetsMatchesPython() throws {
    let f = try Fixture("fid_inception.safetensors")
    let run = try RealInceptionRun.shared.get()
    func stats(_ rows: Tensor, _ start: Int) -> FeatureStatistics { FeatureStatistics(features: rows.narrowed(0, start: start, length: 3)) }
    let a = EvalSet(path: "A", images: nil, stored: (stats(run.pool, 0), stats(run.spatial, 0)), storedMode: .adm)
    let b = EvalSet(path: "B", images: nil, stored: (stats(run.pool, 3), stats(run.spatial, 3)))
    let evaluator = FIDEvaluator(extractor: InceptionFeatureExtractor(model: run.model, input: .adm), weightsName: "default_1.pt")
    let report = try evaluator.evaluate(samples: a, reference: b)
    for (name, value) in [("fid", report.fid), ("sfid", report.sfid ?? .nan)] {
        let eig = f.scalar("\(name)_eig"), scipy = f.scalar("\(name)_scipy")
        #expect(Swift.abs(value - eig) <= 1e-4 * eig, "\(name) \(value) vs eigen form \(eig)")
        #expect(Swift.abs(value - scipy) <= 1e-4 * scipy, "\(name) \(value) vs scipy sqrtm \(scipy)")
    }
    #expect(report.inceptionScore == nil && report.precision == nil && report.samples.extracted == nil)
    #expect(report.notes.contains { $0.hasPrefix("Precision/Recall: unavailable") })
    let json = try JSONSerialization.data(withJSONObject: report.json)
    #expect(String(decoding: json, as: UTF8.self).contains("\"inception_score\":null"))
    // Statistics made in another mode are refused before any computation.
    let other = FIDEvaluator(extractor: InceptionFeatureExtractor(model: run.model, input: .pytorchFID), weightsName: "x")
    #expect(throws: HasteError.self) { try other.evaluate(samples: a, reference: b) }
}
