import Testing
import HasteDiffusion
import HasteModels
import HasteTensor

/// The tiny MMDiT (mmdit_tiny.safetensors' weights and inputs) under bf16 autocast against torch's
/// (Scripts/fixtures/make_bf16_fixture.py, `mmdit`: the joint attention through SDPA as spec/mmdit.md §3 states it,
/// layer_norm in float32 as CUDA's autocast runs it), in units of e = ‖torch bf16 − torch fp32‖/‖torch bf16‖ as the
/// SiT's: output, the aligned blocks' logits, the projection. torch rounds 1 + scale (a bf16 Linear output plus 1),
/// gate·branch (two bf16 tensors), the logits tap's q·kᵀ and its scaling (two bf16 ops), and every residual sum
/// of the context stream (bf16 from the context embedder on); haste's MMDiT now runs the fused adaLN ops that round
/// the first two (as SiT's), the tap's two roundings and the context stream's. Measured: output 0.42·e, logits of
/// block 0 bit-equal, block 1 0.33·e, projection 0.44·e (before: 0.98·e, 1.09·e, 0.99·e, 0.84·e — as far as float32
/// mode); the rest is the attention's probabilities, which torch's CPU kernel rounds elsewhere (as for SiT, 0.37·e).
@Test func mmditBF16ForwardTracksTorchAutocast() throws {
    let w = try Fixture("mmdit_tiny.safetensors"), f = try Fixture("bf16_mmdit.safetensors")
    let model = try MMDiT(tinyMMDiTConfig())
    try model.store.load(w.tensors(under: "model."), strict: true)
    let c = PathType.linear.coefficients(w["t"].reshaped([2, 1, 1, 1]))
    let x = c.alpha * w["x0"] + c.sigma * w["noise"]
    func pass(_ p: ComputePrecision) -> [String: Tensor] {
        let out = Autocast.run(p) { noGrad { model(x, t: w["t"], context: w["context"], logitLayers: [0, 1], projections: true) } }
        return ["output": out.velocity, "logits0": out.attentionLogits[0]!, "logits1": out.attentionLogits[1]!, "proj0": out.projections[0]]
    }
    let bf = pass(.bfloat16), fp = pass(.float32)
    func ratio(_ ours: Tensor, _ key: String) -> Double {
        relativeDistance(ours, f[key]) / relativeDistance(f["fp32." + key], f[key])
    }
    for key in ["output", "logits0", "logits1", "proj0"] {
        #expect(ratio(bf[key]!, key) <= 0.5, "\(key): bf16 mode is \(ratio(bf[key]!, key))·e from torch bf16")
        #expect(ratio(fp[key]!, key) >= 0.9, "\(key): float32 mode is only \(ratio(fp[key]!, key))·e from torch bf16")
    }
    #expect(relativeDistance(bf["logits0"]!, f["logits0"]) == 0)   // the first block's logits: bit-equal
}
