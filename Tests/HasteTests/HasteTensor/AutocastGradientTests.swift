import Testing
import HasteTensor

/// Where torch's autocast rounds gradients of elementwise work on bf16/fp16 tensors (Ops/Precision.swift): the
/// softmax of low logits reads the rounded probabilities in its backward and rounds its result, the logits' two uses
/// (softmax, the caller's loss) round their gradients before adding them, and `gate.unsqueeze(1) * y` of two low
/// tensors rounds each element of the gate's gradient before the sum over tokens.

/// The reference attention with logits (`q·scale`, logits, softmax, ·v) under bf16 autocast: every output and every
/// gradient bit-equal to `torch.autocast('cpu', dtype=torch.bfloat16)` (Scripts/fixtures/make_bf16_fixture.py).
/// Summing the logits' two gradients in float32 and rounding once, or a softmax backward that reads float32
/// probabilities, leaves only 54–57 % of q's and k's gradients bit-equal (up to 551 bf16 ulps apart).
@Test func attentionWithLogitsGradientsAreTorchAutocastBitForBit() throws {
    let f = try Fixture("bf16_ops.safetensors")
    let (name, inputs, op) = MixedPrecisionOpTests.cases.first { $0.0 == "logits" }!
    let bf = MixedPrecisionOpTests().run(f, name, inputs: inputs, .bfloat16, op)
    for (key, ours) in bf.outputs.enumerated().map({ ("\(name).out\($0.offset)", $0.element) })
        + bf.grads.enumerated().map({ ("\(name).grad\($0.offset)", $0.element) }) {
        let s = BF16Comparison(ours, f[key])
        #expect(s.equalShare == 1, "\(key): \(s.equalShare) bit-equal, \(s.maxUlps) bf16 ulps from torch autocast")
    }
}

/// `gatedResidual` under autocast: the output is x + round(gate·y), dx = dy, and the gate's gradient is
/// Σ_tokens round(round(dy)·y) (torch: the product of two low tensors has a low gradient, element by element),
/// which the float32 Σ round(dy)·y misses in most elements (checked: the two differ here).
@Test(arguments: [DType.float16, .bfloat16])
func gatedResidualRoundsTheGateGradientPerElement(_ low: DType) {
    let (n, t, d) = (2, 5, 7)
    let x = Tensor.randn([n, t, d], seed: 1), dy = Tensor.randn([n, t, d], seed: 4) * 1.7
    let gate = Tensor.randn([n, d], seed: 2).rounded(to: low).detached(), y = Tensor.randn([n, t, d], seed: 3).rounded(to: low).detached()
    for v in [x, gate, y] { v.requiresGrad = true }
    let precision: ComputePrecision = low == .float16 ? .float16 : .bfloat16
    let out = Autocast.run(precision) { x.gatedResidual(gate: gate, y) }
    out.backward(dy)
    let dyLow = dy.rounded(to: low).detached()
    let expected = (dyLow * y.detached()).rounded(to: low).sum(axis: 1)
    let unrounded = (dyLow * y.detached()).sum(axis: 1)
    expectClose(out, x.detached() + (gate.detached().reshaped([n, 1, d]) * y.detached()).rounded(to: low), atol: 0, rtol: 0, "output")
    expectClose(x.grad!, dy, atol: 0, rtol: 0, "dx")
    expectClose(gate.grad!, expected, atol: 1e-6, rtol: 1e-6, "dgate")
    let apart = zip(expected.scalars(as: Float.self), unrounded.scalars(as: Float.self)).filter { abs($0 - $1) > 1e-5 * max(abs($0), 1) }.count
    #expect(apart * 2 > n * d, "the per-element rounding must matter here: only \(apart) of \(n * d) gate gradients differ")
}
