import Foundation
import Testing
import HasteDiffusion
import HasteTensor

@Test(arguments: ["linear", "cosine"])
func denoisingLossMatchesPyTorch(_ path: String) throws {
    let f = try Fixture("haste_loss.safetensors")
    let pred = f["\(path).pred"]
    pred.requiresGrad = true
    let loss = Losses.denoising(prediction: pred, x0: f["\(path).x0"], noise: f["\(path).noise"], t: f["\(path).t"],
                                path: PathType(rawValue: path)!)
    expectClose(loss.reshaped([1]), f["\(path).loss"], atol: 1e-6, rtol: 1e-6, "loss")
    loss.backward()
    expectClose(pred.grad!, f["\(path).grad"], atol: 1e-7, rtol: 1e-5, "grad")
}

@Test func projectionAndAttentionLossesMatchPyTorch() throws {
    let f = try Fixture("haste_loss.safetensors")
    let proj = f["proj"]
    proj.requiresGrad = true
    let pl = Losses.projection([proj], [f["feats"]])
    expectClose(pl.reshaped([1]), f["proj.loss"], atol: 1e-6, rtol: 1e-6, "projection loss")
    pl.backward()
    expectClose(proj.grad!, f["proj.grad"], atol: 1e-7, rtol: 1e-5, "projection grad")

    let s1 = f["student1"], s2 = f["student2"]
    s1.requiresGrad = true; s2.requiresGrad = true
    let al = Losses.attention(student: [1: s1, 2: s2], teacher: [2: f["teacher2"], 3: f["teacher3"]],
                              pairs: [(1, 2), (2, 3)], heads: 3)
    expectClose(al.reshaped([1]), f["attn.loss"], atol: 1e-6, rtol: 1e-6, "attention loss")
    al.backward()
    expectClose(s1.grad!, f["attn.grad1"], atol: 1e-8, rtol: 1e-5, "attention grad 1")
    expectClose(s2.grad!, f["attn.grad2"], atol: 1e-8, rtol: 1e-5, "attention grad 2")
}

@Test func attentionLossSanityValues() {
    // All-zero student logits give ln T per row whatever the teacher (spec/method.md §7).
    let t = Tensor.randn([2, 3, 7, 7], seed: 5)
    let zero = Losses.attention(student: [0: Tensor.zeros([2, 4, 7, 7])], teacher: [0: t], pairs: [(0, 0)], heads: 3)
    #expect(Swift.abs(zero.item() - Foundation.log(7.0)) < 1e-5)
    // Student = teacher gives the teacher's mean row entropy, the minimum.
    let p = t.softmax(axis: -1)
    let entropy = -(p * p.log()).sum(axis: -1).mean().item()
    let same = Losses.attention(student: [0: t], teacher: [0: t], pairs: [(0, 0)], heads: 3)
    #expect(Swift.abs(same.item() - entropy) < 1e-5)
}
