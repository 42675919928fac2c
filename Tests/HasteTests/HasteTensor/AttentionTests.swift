import Testing
import HasteTensor

/// Tolerances: the fixtures hold PyTorch's float64 results for float32 inputs, so the bounds measure only
/// our float32 rounding: outputs and logits within 2e-6 + 1e-5·|ref|, gradients (sums over up to 33 keys of
/// products) within 1e-5 + 1e-5·|ref|. Gradchecks are float64 with the default bounds (1e-7 + 1e-5·|ref|).

@Test func scaledDotProductAttentionMatchesPyTorch() throws {
    let f = try Fixture("attention.safetensors")
    let q = f["sdpa.q"], k = f["sdpa.k"], v = f["sdpa.v"]
    for t in [q, k, v] { t.requiresGrad = true }
    let y = Tensor.scaledDotProductAttention(q, k, v)
    expectClose(y, f["sdpa.y"], atol: 2e-6, rtol: 1e-5, "output")
    y.backward(f["sdpa.do"])
    expectClose(q.grad!, f["sdpa.dq"], atol: 1e-5, rtol: 1e-5, "dq")
    expectClose(k.grad!, f["sdpa.dk"], atol: 1e-5, rtol: 1e-5, "dk")
    expectClose(v.grad!, f["sdpa.dv"], atol: 1e-5, rtol: 1e-5, "dv")
}

/// q, k, v are permuted views of one [N, T, 3, H, Dh] projection, as in SiT's attention.
@Test func attentionOnPermutedQKVMatchesPyTorch() throws {
    let f = try Fixture("attention.safetensors")
    let qkv = f["qkv.qkv"]
    qkv.requiresGrad = true
    let rows = qkv.reshaped([2, 9, 9, 4])                                       // [N, T, 3·H, Dh], a view
    let (q, k, v) = (rows.narrowed(2, start: 0, length: 3).permuted([0, 2, 1, 3]),   // [N, H, T, Dh] each
                     rows.narrowed(2, start: 3, length: 3).permuted([0, 2, 1, 3]),
                     rows.narrowed(2, start: 6, length: 3).permuted([0, 2, 1, 3]))
    #expect(!q.isContiguous)
    let y = Tensor.scaledDotProductAttention(q, k, v, scale: 0.3)
    expectClose(y, f["qkv.y"], atol: 2e-6, rtol: 1e-5, "output")
    y.backward(f["qkv.do"])
    expectClose(qkv.grad!, f["qkv.dqkv"], atol: 1e-5, rtol: 1e-5, "dqkv")
}

/// loss = Σ w1·output + Σ w2·logits: gradients from both outputs reach q and k.
@Test func attentionWithLogitsMatchesPyTorch() throws {
    let f = try Fixture("attention.safetensors")
    let q = f["logits.q"], k = f["logits.k"], v = f["logits.v"]
    for t in [q, k, v] { t.requiresGrad = true }
    let (y, logits) = Tensor.attentionWithLogits(q, k, v, scale: 0.41)
    expectClose(y, f["logits.y"], atol: 2e-6, rtol: 1e-5, "output")
    expectClose(logits, f["logits.logits"], atol: 2e-6, rtol: 1e-5, "logits")
    ((y * f["logits.w1"]).sum() + (logits * f["logits.w2"]).sum()).backward()
    expectClose(q.grad!, f["logits.dq"], atol: 1e-5, rtol: 1e-5, "dq")
    expectClose(k.grad!, f["logits.dk"], atol: 1e-5, rtol: 1e-5, "dk")
    expectClose(v.grad!, f["logits.dv"], atol: 1e-5, rtol: 1e-5, "dv")
}

/// Tk = 17 crosses one 16-lane block; Tq ≠ Tk and Dv ≠ Dh.
let attentionInputs = [Tensor.randn([2, 1, 3, 5], dtype: .float64, seed: 21), Tensor.randn([2, 1, 17, 5], dtype: .float64, seed: 22),
                       Tensor.randn([2, 1, 17, 3], dtype: .float64, seed: 23)]

@Test func scaledDotProductAttentionGradient() {
    gradcheck({ Tensor.scaledDotProductAttention($0[0], $0[1], $0[2]) }, at: attentionInputs)
    gradcheck({ Tensor.scaledDotProductAttention($0[0], $0[1], $0[2], scale: 0.7) }, at: attentionInputs)
}

@Test func attentionWithLogitsGradient() {
    let v = attentionInputs[2]
    gradcheck({ Tensor.attentionWithLogits($0[0], $0[1], $0[2], scale: 0.6).output }, at: attentionInputs)
    gradcheck({ Tensor.attentionWithLogits($0[0], $0[1], v, scale: 0.6).logits }, at: Array(attentionInputs.prefix(2)))
}

@Test func softmaxMatmulGradient() {
    gradcheck({ Tensor.softmaxMatmul($0[0], $0[1]) },
              at: [Tensor.randn([1, 2, 3, 17], dtype: .float64, seed: 31), Tensor.randn([1, 2, 17, 3], dtype: .float64, seed: 32)])
}

/// The fused op and the logits path compute the same attention.
@Test func fusedAttentionAgreesWithLogitsPath() {
    let (q, k, v) = (attentionInputs[0], attentionInputs[1], attentionInputs[2])
    expectClose(Tensor.scaledDotProductAttention(q, k, v, scale: 0.8),
                Tensor.attentionWithLogits(q, k, v, scale: 0.8).output, atol: 1e-14, rtol: 1e-12)
}

/// Only v tracked: dv alone, and equal to dv from the full backward.
@Test func attentionGradientForValuesOnly() {
    let (q, k) = (attentionInputs[0], attentionInputs[1])
    let v = attentionInputs[2].clone(), v2 = attentionInputs[2].clone()
    v.requiresGrad = true; v2.requiresGrad = true
    let q2 = q.clone(); q2.requiresGrad = true
    let dv = gradients(of: Tensor.scaledDotProductAttention(q, k, v).sum(), wrt: [v])[0]!
    let full = gradients(of: Tensor.scaledDotProductAttention(q2, k, v2).sum(), wrt: [q2, v2])
    expectClose(dv, full[1]!, atol: 0, rtol: 0)
}

/// Logits far beyond float32's exp range (±400) and rows of 300 (16-lane tails): the float32 fast path
/// stays within float32 rounding of the float64 path, so the max subtraction and the vector exp hold.
@Test func softmaxMatmulFloat32IsStableOnLargeLogits() {
    let logits = Tensor.randn([1, 2, 7, 300], dtype: .float64, seed: 41) * 100.0
    let v = Tensor.randn([1, 2, 300, 5], dtype: .float64, seed: 42)
    let reference = Tensor.softmaxMatmul(logits, v)
    let actual = Tensor.softmaxMatmul(logits.to(.float32), v.to(.float32))
    expectClose(actual.to(.float64), reference, atol: 2e-6, rtol: 1e-5)
    let mild = Tensor.softmaxMatmul((logits * 0.01).to(.float32), v.to(.float32))
    expectClose(mild.to(.float64), Tensor.softmaxMatmul(logits * 0.01, v), atol: 2e-6, rtol: 1e-5)
}

/// Without autograd the probabilities live in a per-pass workspace (6 heads = two passes here); same numbers.
@Test func attentionWithoutGradMatchesRecordedPath() throws {
    let f = try Fixture("attention.safetensors")
    let q = f["sdpa.q"], k = f["sdpa.k"], v = f["sdpa.v"]
    let inference = noGrad { Tensor.scaledDotProductAttention(q, k, v) }
    let q2 = q.clone(); q2.requiresGrad = true
    let training = Tensor.scaledDotProductAttention(q2, k, v)
    #expect(inference.gradFn == nil && training.gradFn != nil)
    expectClose(inference, training, atol: 0, rtol: 0)
}
