import Testing
import HasteDiffusion
import HasteModels
import HasteTensor

/// The tiny MMDiT (mmdit_tiny.safetensors' weights and inputs) under bf16 autocast against torch's
/// (Scripts/fixtures/make_bf16_fixture.py, `mmdit`: the joint attention through SDPA as spec/mmdit.md §3 states it,
/// layer_norm in float32 as CUDA's autocast runs it), in units of e = ‖torch bf16 − torch fp32‖/‖torch bf16‖ as the
/// SiT's: output, the aligned blocks' logits, the projection, on the CPU and on the emulated CUDA device (the fused
/// kernels, other summation orders). torch rounds 1 + scale (a bf16 Linear output plus 1), gate·branch (two bf16
/// tensors), the logits tap's q·kᵀ and its scaling (two bf16 ops), and every residual sum of the context stream
/// (bf16 from the context embedder on); haste's MMDiT runs the fused adaLN ops that round the first two (as SiT's),
/// the tap's two roundings and the context stream's. Measured (CPU / emulated device): output 0.42 / 0.37·e, logits
/// of block 0 bit-equal on both, block 1 0.33 / 0.41·e, projection 0.44 / 0.45·e; before: 0.98, 1.09, 0.99, 0.84·e —
/// as far as float32 mode (1·e). What remains is the attention probabilities, which torch's CPU kernel rounds
/// elsewhere (SiT's test: 0.37·e). Bound 0.6·e: the two summation orders already move a ratio by up to 0.08·e,
/// and 0.6 still tells the rounding points apart from their absence (≥ 0.84·e).
@Test func mmditBF16ForwardTracksTorchAutocast() throws {
    let w = try Fixture("mmdit_tiny.safetensors"), f = try Fixture("bf16_mmdit.safetensors")
    for device in [Device.cpu, EmulatedCUDA.device] {
        let model = try MMDiT(tinyMMDiTConfig())
        try model.store.load(w.tensors(under: "model."), strict: true)
        model.store.move(to: device)
        let c = PathType.linear.coefficients(w["t"].reshaped([2, 1, 1, 1]))
        let x = (c.alpha * w["x0"] + c.sigma * w["noise"]).to(device)
        func pass(_ p: ComputePrecision) -> [String: Tensor] {
            let out = Autocast.run(p) {
                noGrad { model(x, t: w["t"].to(device), context: w["context"].to(device), logitLayers: [0, 1], projections: true) }
            }
            return ["output": out.velocity, "logits0": out.attentionLogits[0]!, "logits1": out.attentionLogits[1]!,
                    "proj0": out.projections[0]].mapValues { $0.to(.cpu) }
        }
        let bf = pass(.bfloat16), fp = pass(.float32)
        func ratio(_ ours: Tensor, _ key: String) -> Double {
            relativeDistance(ours, f[key]) / relativeDistance(f["fp32." + key], f[key])
        }
        for key in ["output", "logits0", "logits1", "proj0"] {
            #expect(ratio(bf[key]!, key) <= 0.6, "\(key) on \(device): bf16 mode is \(ratio(bf[key]!, key))·e from torch bf16")
            #expect(ratio(fp[key]!, key) >= 0.9, "\(key) on \(device): float32 mode is only \(ratio(fp[key]!, key))·e from torch bf16")
        }
        #expect(relativeDistance(bf["logits0"]!, f["logits0"]) == 0, "\(device)")   // the first block's logits: bit-equal
    }
}
