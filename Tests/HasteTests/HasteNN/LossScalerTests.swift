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

/// ‖a − b‖ over the indices where `keep` holds (all by default).
private func distance(_ a: [Double], _ b: [Double], where keep: (Int) -> Bool = { _ in true }) -> Double {
    var sum = 0.0
    for i in a.indices where keep(i) { sum += (a[i] - b[i]) * (a[i] - b[i]) }
    return sum.squareRoot()
}

/// `distance` in units of `e`, the size of the fp16 effect itself. e = 0 leaves no effect to size a tolerance by,
/// so it demands equality: 0 when `distance` is 0 too, +inf otherwise (never NaN, never a pass by a division by 0).
func inUnits(of e: Double, _ distance: Double) -> Double {
    e == 0 ? (distance == 0 ? 0 : .infinity) : distance / e
}

/// e = 0 demands equality: any distance is infinitely many units, none is 0 (never NaN).
@Test func distancesInUnitsOfAZeroEffectDemandEquality() {
    #expect(inUnits(of: 0, 0) == 0 && inUnits(of: 0, 1e-30) == .infinity && inUnits(of: 2, 1) == 0.5)
}

/// The values of `tensors`, flattened one after the other.
private func flat(_ tensors: [Tensor]) -> [Double] { tensors.flatMap { $0.scalars(as: Double.self) } }

/// Teacher forcing: torch fp16's parameters and AdamW moments after its applied step `s` (`taken` applied steps
/// so far, torch's per-parameter step count) into `params` and `optimizer`.
private func loadTorchState(_ f: Fixture, after s: Int, taken: Int, _ params: [String: Tensor], _ optimizer: AdamW) throws {
    noGrad { for (key, p) in params { p.copyValues(from: f["step\(s).param." + key]) } }
    var moments: [String: Tensor] = [:]
    for key in params.keys {
        (moments["m." + key], moments["v." + key]) = (f["step\(s).exp_avg." + key], f["step\(s).exp_avg_sq." + key])
    }
    try optimizer.loadState(moments, stepCount: taken)
}

/// torch fp16's gradients of step `p` after `unscale_` (before clipping), per key: its fp16 gradients × float32(1 /
/// scale), exactly as `unscale_` multiplies them.
private func torchUnscaledGradients(_ f: Fixture, _ p: String, _ keys: [String]) -> [[Double]] {
    let inverse = Double(Float(1 / f[p + "scale"].item()))
    return keys.map { f[p + "scaled_grad." + $0].scalars(as: Double.self).map { $0 * inverse } }
}

/// Five steps of fp16 training against torch.autocast(float16) + GradScaler + clip_grad_norm_ + AdamW
/// (Scripts/fixtures/make_fp16_fixture.py): scale 2^12, growth interval 2; step 2's target is 2^12 times larger,
/// so its scaled velocity gradient overflows half and the step is skipped. Each step starts from torch fp16's
/// parameters and AdamW moments (teacher forcing), so it is compared with torch's same step, not with the drift
/// of earlier ones; the unit e is torch's float32 step from the same state (the size of the fp16 effect itself).
///
/// Exact: the overflow pattern (clean, clean, overflow, clean, clean: float32 or bf16 would not overflow, so the test
/// fails if fp16 did not run), every scale, and the skipped step leaving every parameter bit for bit as it was.
/// Within ≤ 0.5·e (haste rounds where torch does, so it sits much closer to torch fp16 than float32 does): each
/// step's loss, pre-clip gradient norm and whole gradient vector (measured ≤ 0.09, ≤ 0.45, ≤ 0.25), the mean over
/// parameter tensors of each tensor's gradient distance (measured ≤ 0.25; the worst tensor, a projector bias, up to
/// 1.18: the projectors' own fp16 effect is about two fp16 roundings, e ≈ 1e-3·‖g‖, and the ~2 % of their float32
/// input, block 1's output, that float32 summation order puts on the other side of an fp16 rounding boundary moves
/// them as much), and the parameters after the AdamW step (measured ≤ 0.21) over the elements whose gradient is
/// signal, |g32| > |g16 − g32|. The others (≤ 1 %, measured 90–120 of 15 846: chiefly block 0's key bias, whose true
/// gradient is 0 — a constant added to a row of logits leaves the softmax unchanged, and block 0's logits are in no
/// loss — so its fp16 gradient is rounding noise, ~1e-6 against float32's ~1e-10) are moved ±lr by AdamW in the
/// noise's direction (its first steps are ≈ lr·sign(g)): they carry > 99.9 % of the parameter distance of any two
/// fp16 implementations, which is why the whole parameter vector sits 0.7–1.9·e from torch fp16 however closely
/// the gradients match. The update itself is tested exactly below.
@Test func fp16StepsWithLossScalingMatchTorchGradScaler() throws {
    let f = try Fixture("fp16_train.safetensors")
    let model = try SiT(fp16FixtureConfig())
    try model.store.load(f.tensors(under: "model."), strict: true)
    let params = Dictionary(uniqueKeysWithValues: model.store.parameters.map { ($0.name, $0.tensor) })
    let keys = params.keys.sorted().filter { f.has("step0.param." + $0) }
    #expect(keys.count == params.count && keys.count > 20)           // every trainable parameter (not pos_embed)
    let optimizer = AdamW(store: model.store, lr: 1e-3)
    var scaler = LossScaler(scale: 4096, growthInterval: 2)
    var found: [Bool] = [], applied: [Int] = []
    for s in 0..<5 {
        let p = "step\(s)."
        if let last = applied.last { try loadTorchState(f, after: last, taken: applied.count, params, optimizer) }
        #expect(Double(scaler.scale) == f[p + "scale"].item(), "step \(s): the loss scale")
        let before = flat(keys.map { params[$0]! })
        model.store.zeroGrad()
        let out = Autocast.run(.float16) {
            model(f[p + "x"], t: f[p + "t"], y: f[p + "y"].to(.int64), logitLayers: [0, 1], projections: true)
        }
        let loss = (out.velocity - f[p + "target"]).square().mean() + (out.attentionLogits[1]! * f[p + "wl"]).mean() * 0.1
            + (out.projections[0] * f[p + "wp"]).mean() * 0.1
        (loss * Double(scaler.scale)).backward()
        scaler.unscale(model.store)
        let grads = keys.map { params[$0]!.grad!.scalars(as: Double.self) }
        let norm = clipGradNorm(model.store, maxNorm: 1)
        let foundInf = !norm.isFinite
        if !foundInf { optimizer.step() }
        scaler.update(foundInf: foundInf)
        found.append(foundInf)
        #expect(foundInf == (f[p + "found_inf"].item() == 1), "step \(s): overflow")
        #expect(Double(scaler.scale) == f[p + "next_scale"].item(), "step \(s): the scale after the update")

        func ratio(_ ours: Double, _ key: String) -> Double {
            let torch16 = f[p + key].item()
            return inUnits(of: Swift.abs(f["fp32." + p + key].item() - torch16), Swift.abs(ours - torch16))
        }
        if foundInf {
            // The loss is ~1.5e7: fp16 moves it by less than float32 resolves there (e ≤ 1 ulp), so the order of the
            // float32 mean's sum decides; bound: 2^-20 relative (16 ulps).
            let torch16 = f[p + "loss"].item()
            #expect(Swift.abs(loss.item() - torch16) <= 0x1p-20 * torch16, "step \(s): loss \(loss.item()) vs torch fp16 \(torch16)")
            #expect(!f[p + "grad_norm"].item().isFinite)
            #expect(flat(keys.map { params[$0]! }) == before, "step \(s): the skipped step changed parameters")
            continue
        }
        applied.append(s)
        #expect(ratio(loss.item(), "loss") <= 0.5, "step \(s): loss \(loss.item()) is \(ratio(loss.item(), "loss"))·e from torch fp16")
        #expect(ratio(norm, "grad_norm") <= 0.5, "step \(s): gradient norm \(norm) is \(ratio(norm, "grad_norm"))·e from torch fp16")
        let g16 = torchUnscaledGradients(f, p, keys), g32 = keys.map { f["fp32." + p + "grad." + $0].scalars(as: Double.self) }
        let perTensor = keys.indices.map { inUnits(of: distance(g32[$0], g16[$0]), distance(grads[$0], g16[$0])) }
        let mean = perTensor.reduce(0, +) / Double(perTensor.count)
        #expect(mean <= 0.5, "step \(s): the parameter tensors' gradients are \(mean)·e from torch fp16 on average")
        let gh = grads.flatMap { $0 }, t16 = g16.flatMap { $0 }, t32 = g32.flatMap { $0 }
        let gradRatio = inUnits(of: distance(t32, t16), distance(gh, t16))
        #expect(gradRatio <= 0.5, "step \(s): the gradients are \(gradRatio)·e from torch fp16")

        let signal = { (i: Int) in Swift.abs(t32[i]) > Swift.abs(t16[i] - t32[i]) }
        let noise = t32.indices.filter { !signal($0) }.count
        #expect(noise * 100 <= t32.count, "step \(s): \(noise) of \(t32.count) gradient elements are fp16 rounding noise")
        let ph = flat(keys.map { params[$0]! }), p16 = flat(keys.map { f[p + "param." + $0] })
        let p32 = flat(keys.map { f["fp32." + p + "param." + $0] })
        let paramRatio = inUnits(of: distance(p32, p16, where: signal), distance(ph, p16, where: signal))
        #expect(paramRatio <= 0.5, "step \(s): the parameters are \(paramRatio)·e from torch fp16 where the gradient is signal")
    }
    #expect(found == [false, false, true, false, false])
}

/// The update alone, from the same gradients: torch fp16's gradients before `unscale_` and its AdamW moments go
/// through haste's `unscale`, `clipGradNorm` and `AdamW.step` and must give torch's parameters after each applied
/// step to float32 rounding: |Δ| ≤ 2^-23·|p| + 2^-20·lr per element (one ulp of p, plus a float32 rounding of the
/// step: haste sums the norm in double, torch in float32); measured ≤ 6e-8, ≥ 98 % bit-equal.
@Test func fp16StepFromTorchGradientsMatchesTorch() throws {
    let f = try Fixture("fp16_train.safetensors")
    let model = try SiT(fp16FixtureConfig())
    try model.store.load(f.tensors(under: "model."), strict: true)
    let params = Dictionary(uniqueKeysWithValues: model.store.parameters.map { ($0.name, $0.tensor) })
    let keys = params.keys.sorted()
    let optimizer = AdamW(store: model.store, lr: 1e-3)
    var applied: [Int] = []
    for s in [0, 1, 3, 4] {
        let p = "step\(s)."
        if let last = applied.last { try loadTorchState(f, after: last, taken: applied.count, params, optimizer) }
        noGrad { for key in keys { params[key]!.grad!.copyValues(from: f[p + "scaled_grad." + key]) } }
        LossScaler(scale: Float(f[p + "scale"].item())).unscale(model.store)
        let unscaled = flat(keys.map { params[$0]!.grad! })
        #expect(unscaled == torchUnscaledGradients(f, p, keys).flatMap { $0 }, "step \(s): unscale")
        let norm = clipGradNorm(model.store, maxNorm: 1)
        #expect(Swift.abs(norm - f[p + "grad_norm"].item()) <= 1e-6 * norm, "step \(s): norm \(norm) vs \(f[p + "grad_norm"].item())")
        optimizer.step()
        applied.append(s)
        let ours = flat(keys.map { params[$0]! }), torch = flat(keys.map { f[p + "param." + $0] })
        let worst = ours.indices.map { Swift.abs(ours[$0] - torch[$0]) - 0x1p-23 * Swift.abs(torch[$0]) }.max()!
        #expect(worst <= 0x1p-20 * 1e-3, "step \(s): a parameter is \(worst) beyond one ulp from torch's")
        let equal = ours.indices.filter { ours[$0] == torch[$0] }.count
        #expect(equal * 10 >= ours.count * 9, "step \(s): only \(equal) of \(ours.count) parameters bit-equal to torch's")
    }
}
