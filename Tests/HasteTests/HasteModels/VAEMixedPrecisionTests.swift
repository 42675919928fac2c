import Testing
@testable import HasteModels
import HasteTensor

/// The SD-VAE under bf16 autocast (generate's decode, preprocess's encode with `--mixed-precision bf16`).
struct VAEMixedPrecisionTests {
    /// Every residual add of the VAE sums two bf16 tensors in torch (a conv or linear output and a block input
    /// that is one), so its result is bf16: diffusers' `input_tensor + hidden_states` and the attention's
    /// `hidden_states + residual`. Under bf16 autocast the resnets' and the mid-block attention's outputs are
    /// therefore bf16-representable; in float32 mode they are not.
    @Test func residualSumsAreRoundedAsTorchsBF16Adds() throws {
        let vae = try AutoencoderKL(tinyVAEConfig(), seed: 5)
        let x = Tensor.randn([1, 16, 4, 4], seed: 6)
        let mid = vae.decoder.midBlock
        for precision in [ComputePrecision.bfloat16, .float32] {
            let (r, a) = Autocast.run(precision) { noGrad { (mid.resnets.0(x), mid.attention(x)) } }
            let bf16 = precision == .bfloat16
            #expect(isBF16Representable(r) == bf16 && isBF16Representable(a) == bf16, "\(precision)")
        }
    }

    /// Against torch's autocast with CUDA's rounding points (Scripts/fixtures/make_bf16_fixture.py, `vae`: group_norm
    /// in float32, the attention through SDPA as diffusers), in units of e = ‖torch bf16 − torch fp32‖/‖torch bf16‖.
    /// This tiny VAE sits at a floor of summation order: haste's own bf16 decode on the CPU and on the emulated CUDA
    /// device (the same rounding points, other GEMM and conv sums) are 0.81·e apart, as a bf16 rounding that lands
    /// the other way changes the next GroupNorm's statistics. Measured: moments 0.63·e, image 0.84·e (before the
    /// residual sums were rounded: 0.88·e, 0.90·e); float32 mode 1.0·e. Bound 1.25·e: the bf16 mode is wired (a
    /// model that rounded nothing, or to the wrong type, sits at ≥ 1·e or far off), not a measure of the floor.
    @Test func bf16MomentsAndDecodeTrackTorchAutocast() throws {
        let f = try Fixture("bf16_vae.safetensors")
        let vae = try AutoencoderKL(tinyVAEConfig())
        try vae.store.load(f.tensors(under: "model."), strict: true)
        func pass(_ p: ComputePrecision) -> [String: Tensor] {
            Autocast.run(p) { noGrad { ["moments": vae.moments(f["x"]), "image": vae.decode(f["z"])] } }
        }
        let bf = pass(.bfloat16), fp = pass(.float32)
        func ratio(_ ours: Tensor, _ key: String) -> Double {
            relativeDistance(ours, f[key]) / relativeDistance(f["fp32." + key], f[key])
        }
        for key in ["moments", "image"] {
            #expect(ratio(bf[key]!, key) <= 1.25, "\(key): bf16 mode is \(ratio(bf[key]!, key))·e from torch bf16")
            #expect(isBF16Representable(bf[key]!) && !isBF16Representable(fp[key]!), "\(key)")
            expectClose(fp[key]!, f["fp32." + key], atol: 2e-5, rtol: 1e-5, "\(key) in float32 mode")
        }
    }
}
