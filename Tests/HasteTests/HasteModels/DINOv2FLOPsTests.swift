import Testing
import HasteModels

/// `DINOv2Config.forwardMACs` (the teacher's share of `haste bench train`'s "+align" FLOPs), counted by hand.
@Test func dinov2FlopCountIsTheHandCountOfEveryMatmul() throws {
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.mlpRatio, c.grid, c.inChannels) = (2, 8, 2, 2, 4, 2, 3)
    // N = 2² = 4 patches, T = 5 tokens with the class token, D = 8, MLP hidden 32, patch inputs P = 3·2·2 = 12.
    let patch = 4 * 12 * 8                                           // conv: one 12 → 8 product per patch (not the class token)
    let qkv = 5 * 8 * 24, logits = 5 * 5 * 8, weighted = 5 * 5 * 8, proj = 5 * 8 * 8, mlp = 5 * 8 * 32 * 2
    #expect(patch + 2 * (qkv + logits + weighted + proj + mlp) == 8864)
    #expect(c.forwardMACs(batch: 1) == 8864 && c.forwardMACs(batch: 3) == 3 * 8864)
    #expect(c.forwardFLOPs(batch: 3) == 2 * 3 * 8864)
    // SwiGLU (g/14): w12 D → 2H and w3 H → D instead of the MLP.
    (c.swiGLU, c.swiGLUHidden) = (true, 6)
    #expect(c.forwardMACs(batch: 1) == patch + 2 * (qkv + logits + weighted + proj + 5 * 8 * 12 + 5 * 6 * 8))
    // DINOv2-B/14 at 224 px, HASTE's teacher: 23.2 G multiply-accumulates per image.
    let b = try DINOv2Config.named("dinov2-vit-b", resolution: 256)
    #expect(b.imageSize == 224 && (Double(b.forwardMACs(batch: 1)) / 1e8).rounded() == 232)
}
