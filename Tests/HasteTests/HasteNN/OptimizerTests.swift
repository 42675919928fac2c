import Testing
import HasteTensor
@testable import HasteNN

/// Mirrors `Net` in Scripts/fixtures/nn.py: registration order = its state-dict order.
struct TinyNet {
    let fc1: Linear, fc2: Linear, pos: Tensor, head: Linear, proj: Linear

    init(_ p: ParameterScope) {
        fc1 = Linear(p["fc1"], 5, 7)
        fc2 = Linear(p["fc2"], 7, 3)
        pos = p.buffer("pos", [1, 3], Tensor.zeros([1, 3]))
        head = Linear(p["head"], 3, 4, bias: false)
        proj = Linear(p["proj"], 3, 2)
    }

    static let keys = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "pos", "head.weight", "proj.weight", "proj.bias"]

    /// scale·Σ(head(h) − t)² (+ scale·Σ proj(h)·r while the projector is used), h = fc2(silu(fc1(x))) + pos.
    func loss(x: Tensor, t: Tensor, r: Tensor, scale: Double, useProjector: Bool) -> Tensor {
        let h = fc2(fc1(x).silu()) + pos                    // (6, 3)
        var loss = (head(h) - t).square().sum() * scale
        if useProjector { loss = loss + (proj(h) * r).sum() * scale }
        return loss
    }
}

/// 3 steps of loss → backward → clip to 1.0 → AdamW (decay on weights only) against torch, parameters after
/// each step within 1e-6 relative (+1e-9 absolute), grad norms within 1e-6 relative. In the last step the
/// projector gets no gradient and is skipped, as torch skips params whose grad is None.
@Test func adamwWithClippingMatchesPyTorch() throws {
    let f = try Fixture("nn_adamw.safetensors")
    let store = ParameterStore(seed: 1)
    let net = TinyNet(store.root)
    try store.load(f.tensors(under: "init."), strict: true)
    store.finalize()
    let opt = AdamW(store: store, lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0.01)
    for s in 0..<3 {
        store.zeroGrad()
        let loss = net.loss(x: f["x.\(s)"], t: f["t.\(s)"], r: f["r.\(s)"], scale: f["scale.\(s)"].item(), useProjector: s < 2)
        loss.backward()
        let norm = clipGradNorm(store, maxNorm: 1.0), expected = f["norm.\(s)"].item()
        #expect(Swift.abs(norm - expected) <= 1e-6 * expected, "step \(s): grad norm \(norm) vs torch \(expected)")
        opt.step(skipping: s == 2 ? ["proj.weight", "proj.bias"] : [])
        for (key, value) in store.stateDict() {
            expectClose(value, f["step\(s).\(key)"], atol: 1e-9, rtol: 1e-6, "step \(s) \(key)")
        }
    }
    #expect(opt.stepCount == 3)
}

/// The bare kernel against torch's single-tensor AdamW with given grads (zero and 1e-9 entries included).
/// It repeats torch's float ops in order and is bitwise equal here; the bound, 3e-7 relative (float32) and
/// 1e-14 (float64), leaves room only for torch's MKL `sqrt`, which can be 1 ulp off the rounded one.
@Test(arguments: ["decay", "nodecay", "lowbeta", "f64"])
func adamwKernelMatchesPyTorch(_ name: String) throws {
    let f = try Fixture("nn_adamw_kernel.safetensors")
    let (betas, wd): ((Double, Double), Double) = switch name {
    case "nodecay": ((0.9, 0.999), 0)
    case "lowbeta": ((0.3, 0.95), 0.01)
    default: ((0.9, 0.999), 0.01)
    }
    let p = f["\(name).p0"].clone(), m = Tensor.zeros(like: p), v = Tensor.zeros(like: p)
    let tol = name == "f64" ? 1e-14 : 3e-7
    for s in 0..<3 {
        let g = f["\(name).g\(s)"]
        p.backend.adamw(param: p.buffer, grad: g.buffer, m: m.buffer, v: v.buffer, count: p.count, lr: 1e-3,
                        beta1: betas.0, beta2: betas.1, eps: 1e-8, weightDecay: wd, step: s + 1)
        expectClose(p, f["\(name).p\(s + 1)"], atol: 0, rtol: tol, "\(name) step \(s + 1)")
    }
    expectClose(m, f["\(name).m"], atol: 0, rtol: tol, "\(name) exp_avg")
    expectClose(v, f["\(name).v"], atol: 0, rtol: tol, "\(name) exp_avg_sq")
}

/// HASTE's update_ema (copy, then 3 updates) for decays 0.9999 and 0.5: within 1e-7 relative (the same float
/// ops; bitwise equal here).
@Test(arguments: [0.9999, 0.5])
func emaMatchesPyTorch(_ decay: Double) throws {
    let f = try Fixture("nn_ema.safetensors")
    let model = ParameterStore()
    model.root.parameter("w", [5, 7], .zeros)
    model.root.parameter("b", [7], .zeros)
    try model.load(f.tensors(under: "init."))
    model.finalize()
    let ema = EMA(from: model)
    for k in 0..<3 {
        try model.load(["w": f["\(decay).p\(k).w"], "b": f["\(decay).p\(k).b"]])
        ema.update(decay: decay)
        let state = Dictionary(uniqueKeysWithValues: ema.stateDict())
        expectClose(state["w"]!, f["\(decay).ema\(k).w"], atol: 0, rtol: 1e-7, "ema w after \(k + 1)")
        expectClose(state["b"]!, f["\(decay).ema\(k).b"], atol: 0, rtol: 1e-7, "ema b after \(k + 1)")
    }
    let target = ParameterStore()
    target.root.parameter("w", [5, 7], .ones)
    target.root.parameter("b", [7], .ones)
    target.finalize()
    ema.copy(into: target)
    expectClose(target["w"]!, f["\(decay).ema2.w"], atol: 0, rtol: 1e-7, "copied ema")
}
