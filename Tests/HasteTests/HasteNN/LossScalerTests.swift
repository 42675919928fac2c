import Testing
import HasteModels
import HasteTensor
@testable import HasteNN

/// torch GradScaler's defaults and update rule: growth ×2 after 2000 clean steps in a row, ×0.5 and a restart
/// on an overflow, a growth that would reach inf is dropped.
@Test func lossScalerUpdatesAsGradScaler() {
    var s = LossScaler()
    #expect(s.scale == 65536 && s.growthTracker == 0 && s.growthInterval == 2000 && s.growthFactor == 2 && s.backoffFactor == 0.5)
    for _ in 0..<1999 { s.update(foundInf: false) }
    #expect(s.scale == 65536 && s.growthTracker == 1999)
    s.update(foundInf: false)
    #expect(s.scale == 131_072 && s.growthTracker == 0)
    s.update(foundInf: false)
    s.update(foundInf: true)
    #expect(s.scale == 65536 && s.growthTracker == 0)
    var top = LossScaler(scale: .greatestFiniteMagnitude, growthInterval: 1)
    top.update(foundInf: false)
    #expect(top.scale == .greatestFiniteMagnitude && top.growthTracker == 0)
}

/// unscale_ multiplies by float32(1 / scale) and leaves inf and NaN non-finite.
@Test func unscaleMultipliesByTheReciprocal() {
    let store = ParameterStore()
    let w = store.root.parameter("w", [3], .zeros)
    store.finalize()
    noGrad { w.grad!.copyValues(from: Tensor([Float(3), .infinity, .nan])) }
    LossScaler(scale: 1024).unscale(store)
    let g = w.grad!.scalars(as: Float.self)
    #expect(g[0] == 3 / 1024 && g[1] == .infinity && g[2].isNaN)
    noGrad { w.grad!.copyValues(from: Tensor([Float(1), 0, 0])) }
    LossScaler(scale: 3).unscale(store)
    #expect(w.grad!.scalars(as: Float.self)[0] == Float(1.0 / 3.0))
}

/// The tiny SiT of Scripts/fixtures/make_fp16_fixture.py (hidden 16, 2 blocks, both aligned).
func fp16FixtureConfig() -> SiTConfig {
    var c = SiTConfig()
    (c.inputSize, c.patchSize, c.inChannels, c.hiddenSize, c.depth, c.numHeads) = (8, 2, 3, 16, 2, 2)
    (c.numClasses, c.encoderDepth, c.projectorDims, c.projectorHidden) = (5, 2, [10], 16)
    return c
}

/// ‖a − b‖ over lists of tensors taken together.
private func distance(_ a: [Tensor], _ b: [Tensor]) -> Double {
    var sum = 0.0
    for (x, y) in zip(a, b) {
        let u = x.scalars(as: Double.self), v = y.scalars(as: Double.self)
        for i in u.indices { sum += (u[i] - v[i]) * (u[i] - v[i]) }
    }
    return sum.squareRoot()
}

/// Five steps of fp16 training against torch.autocast(float16) + GradScaler + clip_grad_norm_ + AdamW
/// (Scripts/fixtures/make_fp16_fixture.py): scale 2^12, growth interval 2; step 2's target is 2^12 times larger,
/// so its scaled velocity gradient overflows half and the step is skipped.
///
/// Exact: the overflow pattern (clean, clean, overflow, clean, clean: float32 or bf16 would not overflow, so the test
/// fails if fp16 did not run), every scale, and the skipped step leaving every parameter bit for bit as it was.
/// Within a tolerance, in units of e = the distance between torch fp16 and torch float32 (the bf16 tests' unit:
/// the size of the reduced-precision effect itself): haste rounds where torch does, so it sits much closer to torch
/// fp16 than float32 does; what remains are the rounding points haste keeps float32 (MixedPrecisionTests). Bounds
/// as the bf16 SiT test's outputs: each step's loss, pre-clip gradient norm and whole parameter vector ≤ 0.5·e.
@Test func fp16StepsWithLossScalingMatchTorchGradScaler() throws {
    let f = try Fixture("fp16_train.safetensors")
    let model = try SiT(fp16FixtureConfig())
    try model.store.load(f.tensors(under: "model."), strict: true)
    let params = Dictionary(uniqueKeysWithValues: model.store.parameters.map { ($0.name, $0.tensor) })
    let keys = params.keys.sorted().filter { f.has("step0.param." + $0) }
    #expect(keys.count == params.count && keys.count > 20)           // every trainable parameter (not pos_embed)
    let optimizer = AdamW(store: model.store, lr: 1e-3)
    var scaler = LossScaler(scale: 4096, growthInterval: 2)
    var found: [Bool] = []
    for s in 0..<5 {
        let p = "step\(s)."
        #expect(Double(scaler.scale) == f[p + "scale"].item(), "step \(s): the loss scale")
        let before = keys.map { params[$0]!.clone() }
        model.store.zeroGrad()
        let out = Autocast.run(.float16) {
            model(f[p + "x"], t: f[p + "t"], y: f[p + "y"].to(.int64), logitLayers: [0, 1], projections: true)
        }
        let loss = (out.velocity - f[p + "target"]).square().mean() + (out.attentionLogits[1]! * f[p + "wl"]).mean() * 0.1
            + (out.projections[0] * f[p + "wp"]).mean() * 0.1
        (loss * Double(scaler.scale)).backward()
        scaler.unscale(model.store)
        let norm = clipGradNorm(model.store, maxNorm: 1)
        let foundInf = !norm.isFinite
        if !foundInf { optimizer.step() }
        scaler.update(foundInf: foundInf)
        found.append(foundInf)
        #expect(foundInf == (f[p + "found_inf"].item() == 1), "step \(s): overflow")
        #expect(Double(scaler.scale) == f[p + "next_scale"].item(), "step \(s): the scale after the update")

        func ratio(_ ours: Double, _ key: String) -> Double {
            let torch16 = f[p + key].item(), torch32 = f["fp32." + p + key].item()
            return Swift.abs(ours - torch16) / Swift.abs(torch32 - torch16)
        }
        let lossRatio = ratio(loss.item(), "loss")
        #expect(lossRatio <= 0.5, "step \(s): loss \(loss.item()) is \(lossRatio)·e from torch fp16 \(f[p + "loss"].item())")
        let after = keys.map { params[$0]! }
        if foundInf {
            #expect(!f[p + "grad_norm"].item().isFinite)
            #expect(distance(after, before) == 0, "step \(s): the skipped step changed parameters")
            continue
        }
        let normRatio = ratio(norm, "grad_norm")
        #expect(normRatio <= 0.5, "step \(s): gradient norm \(norm) is \(normRatio)·e from torch fp16")
        let torch16 = keys.map { f[p + "param." + $0] }, torch32 = keys.map { f["fp32." + p + "param." + $0] }
        let paramRatio = distance(after, torch16) / distance(torch32, torch16)
        #expect(paramRatio <= 0.5, "step \(s): parameters are \(paramRatio)·e from torch fp16")
    }
    #expect(found == [false, false, true, false, false])
}
