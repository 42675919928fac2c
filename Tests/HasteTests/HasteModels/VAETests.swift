import Foundation
import Testing
@testable import HasteModels
@testable import HasteTensor

/// The fixture's tiny config (Scripts/fixtures/vae.py): two levels (8, 16), one resnet per down block, 4 groups.
func tinyVAEConfig() -> AutoencoderKLConfig {
    var c = AutoencoderKLConfig()
    (c.blockOutChannels, c.layersPerBlock, c.normGroups) = ([8, 16], 1, 4)
    return c
}

/// float32 against PyTorch's float32 (Scripts/reference/vae.py, itself checked against diffusers 0.31.0):
/// about 20 layers of 3×3 convs (sums of ≤ 144 terms) with group norms in between; 2e-5 absolute on outputs of
/// size O(1) leaves room for float32 summation-order differences only.
@Test func vaeMatchesPyTorch() throws {
    let f = try Fixture("vae_tiny.safetensors")
    let vae = try AutoencoderKL(tinyVAEConfig())
    try vae.store.load(f.tensors(under: "model."), strict: true)
    noGrad {
        expectClose(vae.moments(f["x"]), f["moments"], atol: 2e-5, rtol: 1e-5, "moments")
        let (mean, std) = vae.encode(f["x"])
        expectClose(mean, f["mean"], atol: 2e-5, rtol: 1e-5, "mean")
        expectClose(std, f["std"], atol: 2e-5, rtol: 1e-5, "std")
        expectClose(vae.decode(f["z"]), f["image"], atol: 2e-5, rtol: 1e-5, "decode")
        // decodeLatents divides by the scaling factor and splits the batch without changing the result.
        let z2 = Tensor.cat([f["z"], f["z"] * 0.5, f["z"]], axis: 0)
        let whole = vae.decode(z2), split = vae.decodeLatents(z2 * 0.18215, batch: 2)
        expectClose(split, whole, atol: 1e-5, rtol: 1e-5, "decodeLatents")
    }
}

@Test func vaeStateDictKeysAreDiffusers() throws {
    let expected = try fixtureText("sd-vae-kl-f8.keys.txt")
    let shapes = try AutoencoderKL.stateDictShapes(.sdKLF8)
    #expect(shapes.map { "\($0.0) \($0.1.map(String.init).joined(separator: "x"))" } == expected)
    #expect(shapes.reduce(0) { $0 + $1.1.reduce(1, *) } == 83_653_863)          // spec/vae.md §1
}

/// Older diffusers attention names and the LDM/CompVis layout both load into the same model.
@Test func vaeAdaptsOldKeyStyles() throws {
    let f = try Fixture("vae_tiny.safetensors")
    let state = f.tensors(under: "model.")
    let old = Dictionary(uniqueKeysWithValues: state.map { k, v in
        (k.replacingOccurrences(of: ".to_q.", with: ".query.").replacingOccurrences(of: ".to_k.", with: ".key.")
          .replacingOccurrences(of: ".to_v.", with: ".value.").replacingOccurrences(of: ".to_out.0.", with: ".proj_attn."), v)
    })
    #expect(old.keys.contains("encoder.mid_block.attentions.0.query.weight"))
    expectSameState(AutoencoderKL.adapt(old), state)
    let ldm = Dictionary(uniqueKeysWithValues: state.map { k, v in ("first_stage_model." + ldmName(k), ldmValue(k, v)) })
    #expect(ldm["first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"] != nil)
    expectSameState(AutoencoderKL.adapt(ldm), state)
    let vae = try AutoencoderKL(tinyVAEConfig())
    try vae.store.load(AutoencoderKL.adapt(ldm), strict: true)
}

private func expectSameState(_ a: [String: Tensor], _ b: [String: Tensor], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(Set(a.keys) == Set(b.keys), "\(Set(a.keys).symmetricDifference(b.keys).sorted().prefix(5))", sourceLocation: sourceLocation)
    for (k, v) in b { if let w = a[k] { expectClose(w, v, atol: 0, rtol: 0, k, sourceLocation: sourceLocation) } }
}

/// diffusers → LDM names for the two-level tiny model, written out case by case (independently of the adapter).
private func ldmName(_ key: String) -> String {
    var k = key
    let table: [(String, String)] = [
        ("encoder.down_blocks.0.resnets.0.", "encoder.down.0.block.0."), ("encoder.down_blocks.1.resnets.0.", "encoder.down.1.block.0."),
        ("encoder.down_blocks.0.downsamplers.0.conv.", "encoder.down.0.downsample.conv."),
        ("decoder.up_blocks.0.resnets.", "decoder.up.1.block."), ("decoder.up_blocks.1.resnets.", "decoder.up.0.block."),
        ("decoder.up_blocks.0.upsamplers.0.conv.", "decoder.up.1.upsample.conv."),
        ("mid_block.resnets.0.", "mid.block_1."), ("mid_block.resnets.1.", "mid.block_2."),
        ("mid_block.attentions.0.group_norm.", "mid.attn_1.norm."), ("mid_block.attentions.0.to_q.", "mid.attn_1.q."),
        ("mid_block.attentions.0.to_k.", "mid.attn_1.k."), ("mid_block.attentions.0.to_v.", "mid.attn_1.v."),
        ("mid_block.attentions.0.to_out.0.", "mid.attn_1.proj_out."), ("conv_shortcut.", "nin_shortcut."),
        ("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out."),
    ]
    for (from, to) in table { k = k.replacingOccurrences(of: from, with: to) }
    return k
}

/// LDM's attention projections are 1×1 convolutions.
private func ldmValue(_ key: String, _ v: Tensor) -> Tensor {
    key.contains(".attentions.") && key.hasSuffix(".weight") && v.rank == 2 ? v.reshaped(v.shape + [1, 1]) : v
}
