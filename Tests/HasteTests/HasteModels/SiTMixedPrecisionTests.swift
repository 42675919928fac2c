import Testing
import HasteModels
import HasteSelftest
import HasteTensor

/// Relative L2 distance ‖a − b‖ / ‖b‖ (the selftest's torch-fixture check's measure).
func relativeDistance(_ a: Tensor, _ b: Tensor) -> Double { TorchFixtureCheck.distance(a, b) }

/// The tiny SiT under bf16 autocast against torch's (Scripts/fixtures/make_bf16_fixture.py). Distances are measured
/// in units of e = ‖torch bf16 − torch fp32‖/‖torch bf16‖, the size of the bf16 effect itself: haste rounds where
/// torch does for every GEMM, the attention logits and probabilities of the aligned blocks, adaLN's `1 + scale` and
/// `gate·branch`, so most of that effect is reproduced exactly (the aligned logits bit for bit); what remains are
/// rounding points haste keeps float32 (the probabilities inside the fused attention of the other blocks, bf16
/// gradients of elementwise ops), each one rounding as large as one of torch's own. Bounds: outputs ≤ 0.5·e
/// (measured ≤ 0.37·e), gradients ≤ 0.5·e on average and ≤ e each (measured 0.29·e and 0.89·e). float32 mode sits
/// ≈ 1·e away (it reproduces torch's float32): the test fails if bf16 mode silently ran float32.
@Test func sitBF16ForwardAndGradientsTrackTorchAutocast() throws {
    let f = try Fixture("bf16_sit.safetensors")
    let model = try SiT(tinySiTConfig())
    try model.store.load(f.tensors(under: "model."), strict: true)
    func pass(_ p: ComputePrecision) -> (outs: [String: Tensor], grads: [String: Tensor]) {
        model.store.zeroGrad()
        let out = Autocast.run(p) { model(f["x"], t: f["t"], y: f["y"].to(.int64), logitLayers: [0, 1], projections: true) }
        let loss = (out.velocity * f["w1"]).sum() + (out.attentionLogits[1]! * f["w2"]).sum() + (out.projections[0] * f["w3"]).sum()
        loss.backward()
        var grads: [String: Tensor] = [:]
        for (key, p) in model.store.parameters where f.has("grad." + key) { grads[key] = p.grad!.clone() }
        return (["velocity": out.velocity, "logits1": out.attentionLogits[1]!, "proj0": out.projections[0], "loss": loss.reshaped([1])], grads)
    }
    let bf = pass(.bfloat16), fp = pass(.float32)
    // e = ‖torch bf16 − torch fp32‖ / ‖torch bf16‖ sizes the bf16 effect itself; ratio = distance to torch bf16 / e.
    func ratio(_ ours: Tensor, _ key: String) -> Double {
        relativeDistance(ours, f[key]) / relativeDistance(f["fp32." + key], f[key])
    }
    for key in ["velocity", "logits1", "proj0", "loss"] {
        #expect(ratio(bf.outs[key]!, key) <= 0.5, "\(key): bf16 mode is \(ratio(bf.outs[key]!, key))·e from torch bf16")
        #expect(ratio(fp.outs[key]!, key) >= 0.9, "\(key): float32 mode is only \(ratio(fp.outs[key]!, key))·e from torch bf16")
    }
    #expect(relativeDistance(bf.outs["logits1"]!, f["logits1"]) == 0)   // the aligned block's logits: bit-equal
    let bfRatios = bf.grads.map { ratio($0.value, "grad." + $0.key) }, fpRatios = fp.grads.map { ratio($0.value, "grad." + $0.key) }
    #expect(bfRatios.count == model.store.parameters.count && bfRatios.count > 30)
    let mean = bfRatios.reduce(0, +) / Double(bfRatios.count), fpMean = fpRatios.reduce(0, +) / Double(fpRatios.count)
    #expect(mean <= 0.5 && bfRatios.max()! <= 1, "gradients: mean \(mean)·e, worst \(bfRatios.max()!)·e from torch bf16")
    #expect(fpMean >= 0.9, "gradients in float32 mode: mean \(fpMean)·e from torch bf16")
}
