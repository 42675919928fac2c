import Testing
import HasteModels
import HasteTensor

/// The tiny DINOv2 teacher under bf16 autocast against torch's (Scripts/fixtures/make_bf16_fixture.py, `dinov2`:
/// forward without a gradient, every block's logits), measured as the SiT's in units of e = ‖torch bf16 − torch
/// fp32‖/‖torch bf16‖. LayerScale multiplies the bf16 branch output by its float32 gamma in float32 in torch (type
/// promotion): haste must not round that product as it rounds adaLN's gate·branch (two bf16 tensors in SiT).
/// Measured: patch tokens 3.1e-5·e, class token 1.9e-5·e, every block's logits bit-equal; with that product rounded
/// (before the fix) 0.83·e, 0.98·e and 0.80·e, 1.02·e for the later logits: as far as float32 mode (1·e). Bounds:
/// each output ≤ 0.1·e (room for another CPU's float32 last bits flipping a bf16 rounding), the first block's logits
/// bit-equal; float32 mode ≥ 0.9·e away.
@Test func dinov2BF16ForwardTracksTorchAutocast() throws {
    let f = try Fixture("bf16_dinov2.safetensors")
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 24, 3, 3, 4)
    let model = DINOv2(c, frozen: true)
    try model.store.load(f.tensors(under: "model."), strict: true)
    func pass(_ p: ComputePrecision) -> [String: Tensor] {
        let out = Autocast.run(p) { noGrad { model(f["x"], logitLayers: [0, 1, 2]) } }
        var r = ["patch_tokens": out.patchTokens, "cls_token": out.classToken]
        for i in 0..<3 { r["logits\(i)"] = out.attentionLogits[i]! }
        return r
    }
    let bf = pass(.bfloat16), fp = pass(.float32)
    func ratio(_ ours: Tensor, _ key: String) -> Double {
        relativeDistance(ours, f[key]) / relativeDistance(f["fp32." + key], f[key])
    }
    for key in ["patch_tokens", "cls_token", "logits0", "logits1", "logits2"] {
        #expect(ratio(bf[key]!, key) <= 0.1, "\(key): bf16 mode is \(ratio(bf[key]!, key))·e from torch bf16")
        #expect(ratio(fp[key]!, key) >= 0.9, "\(key): float32 mode is only \(ratio(fp[key]!, key))·e from torch bf16")
    }
    #expect(relativeDistance(bf["logits0"]!, f["logits0"]) == 0)   // the first block's logits: bit-equal
}
