import Foundation
import Testing
@testable import HasteTensor

/// Bounds: probabilities and log-probabilities (|y| up to ~10³ for the "big" rows) within 1e-6 + 1e-5·|y| of
/// the float64 reference, gradients likewise.
let softmaxCases: [(String, (Tensor) -> Tensor)] = [
    ("softmax_m1", { $0.softmax() }), ("log_softmax_m1", { $0.logSoftmax() }),
    ("softmax_0", { $0.softmax(axis: 0) }), ("log_softmax_1", { $0.logSoftmax(axis: 1) }),
    ("softmax_len1", { $0.softmax(axis: -1) }), ("log_softmax_len1", { $0.logSoftmax(axis: -1) }),
    ("softmax_big", { $0.softmax() }), ("log_softmax_big", { $0.logSoftmax() }),
]

@Test(arguments: softmaxCases.map(\.0))
func softmaxMatchesPyTorch(_ name: String) throws {
    let op = softmaxCases.first { $0.0 == name }!.1
    try expectMatchesNormFixture("softmax.safetensors", name, inputs: ["x"], atol: 1e-6, rtol: 1e-5) { op($0["x"]!) }
}

@Test func softmaxGradcheck() {
    let x = Tensor.randn([3, 5, 7], dtype: .float64, seed: 31)
    for a in [-1, 0, 1] {
        gradcheck({ $0.softmax(axis: a) }, at: x)
        gradcheck({ $0.logSoftmax(axis: a) }, at: x)
    }
    gradcheck({ $0.logSoftmax() }, at: Tensor.randn([4, 1], dtype: .float64, seed: 32))
}

/// The fused kernels against the plain composite exp(x − max) / Σ, on rows long enough for SIMD tails.
@Test func softmaxMatchesComposite() {
    let x = Tensor.randn([9, 300], dtype: .float64, seed: 33) * 5.0
    let shifted = x - x.max(axis: -1, keepDims: true)
    let logSum = shifted.exp().sum(axis: -1, keepDims: true).log()
    expectClose(x.softmax(), (shifted - logSum).exp(), atol: 1e-15, rtol: 1e-12)
    expectClose(x.logSoftmax(), shifted - logSum, atol: 1e-13, rtol: 1e-13)
    let x32 = x.to(.float32)
    expectClose(x32.softmax(), (shifted - logSum).exp(), atol: 1e-7, rtol: 1e-5, "float32")
}

@Test func softmaxTrapsOnBadInput() async {
    let axis = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([3, 4]).softmax(axis: 2)
    }
    #expect(trapMessage(axis).contains("softmax: axis 2 out of range for shape [3, 4]"))
    await #expect(processExitsWith: .failure) { _ = Tensor([Int32(1), 2], shape: [2]).logSoftmax() }
}

/// The 16-lane float32 exp of the softmax kernels: within 1 ulp of the correctly rounded value over its whole
/// normal range, and the documented special values.
@Test func vectorExpIsAccurate() {
    var worst = 0.0
    var x: Float = -87.3
    while x < 88.3 {
        var v = SIMD16<Float>()
        for l in 0..<16 { v[l] = Swift.min(x, 88.3); x += 0.0131 * Swift.max(1, Swift.abs(x)) }
        let y = Float.exp16(v)
        for l in 0..<16 {
            let exact = Foundation.exp(Double(v[l]))
            worst = Swift.max(worst, Swift.abs(Double(y[l]) - exact) / Double(Float(exact).ulp))
        }
    }
    #expect(worst <= 1, "worst error \(worst) ulp")
    let special = Float.exp16(SIMD16(-.infinity, -200, -87.4, 0, -0.0, 89, .infinity, .nan, 1, -1, 0, 0, 0, 0, 0, 0))
    #expect(special[0] == 0 && special[1] == 0 && special[2] == 0 && special[3] == 1 && special[4] == 1)
    #expect(special[5] == .infinity && special[6] == .infinity && special[7].isNaN)
    #expect(Swift.abs(special[8] - 2.7182817) <= Float(2.7182817).ulp && Swift.abs(special[9] - 0.36787945) <= Float(0.36787945).ulp)
}

/// The 16-lane float32 erf of the exact GELU (CPUMath's verf): within 1.2 ulp of float64 erf (measured 1.17 over
/// every 7th float32 in [−10, 10]) from subnormal-small to saturated arguments of both signs, and its special values.
@Test func vectorErfIsAccurate() {
    var worst = 0.0, at: Float = 0
    var xs: [Float] = []
    var m: Float = 1e-30
    while m < 10 { xs.append(m); xs.append(-m); m *= 1.0007 }                  // every scale
    var x: Float = -4.5
    while x < 4.5 { xs.append(x); x += 1.0 / 8191 }                           // both branches and the switch at 0.9277
    let edge: Float = 0.927_734_375
    xs += [edge, edge.nextUp, -edge, -edge.nextUp]
    while xs.count % 16 != 0 { xs.append(0.5) }
    for i in stride(from: 0, to: xs.count, by: 16) {
        var v = SIMD16<Float>()
        for l in 0..<16 { v[l] = xs[i + l] }
        let y = verf(v)
        for l in 0..<16 {
            let exact = Foundation.erf(Double(v[l]))
            let error = Swift.abs(Double(y[l]) - exact) / Double(Float(exact).magnitude.ulp)
            if error > worst { worst = error; at = v[l] }
        }
    }
    #expect(worst <= 1.2, "worst error \(worst) ulp at \(at)")
    let special = verf(SIMD16(0, -0.0, .infinity, -.infinity, .nan, 4, -4, 20, -20, Float.leastNormalMagnitude / 64, 0, 0, 0, 0, 0, 0))
    #expect(special[0] == 0 && special[1] == 0 && special[1].sign == .minus)
    #expect(special[2] == 1 && special[3] == -1 && special[4].isNaN)
    #expect(special[5] == 1 && special[6] == -1 && special[7] == 1 && special[8] == -1)
    #expect(special[9] > 0 && special[9] < Float.leastNormalMagnitude)
}

/// −∞ entries (masked logits) get probability exactly 0; a NaN poisons only its own row, as in torch.
@Test func softmaxHandlesInfinityAndNaN() {
    var v = [Float](repeating: 0.5, count: 2 * 21)
    v[3] = -.infinity; v[20] = -.infinity; v[21 + 17] = .nan
    let y = Tensor(v, shape: [2, 21]).softmax().scalars(as: Float.self)
    #expect(y[3] == 0 && y[20] == 0 && Swift.abs(y[0] - 1 / 19) < 1e-7)
    #expect(y[21...].allSatisfy { $0.isNaN })
}

/// The one-pass soft cross-entropy (the attention-alignment loss per layer pair) against the composite it replaces,
/// −(softmax(target)·logSoftmax(x)).sum(−1).mean(), value and gradient, in float64 (tight) and float32: a target
/// that is a strided view (the teacher's logits with heads, class row and column narrowed away, read in place), row
/// lengths with a SIMD tail, large and −∞ target logits (p = 0 there), and a loss scaled before its backward.
@Test func softCrossEntropyMatchesTheComposite() {
    for (dtype, atol, rtol) in [(DType.float64, 1e-13, 1e-11), (DType.float32, 1e-6, 2e-5)] {
        for cols in [1, 16, 37] {
            let full = (Tensor.randn([2, 5, cols + 1, cols + 1], dtype: .float64, seed: 41) * 4.0).to(dtype)
            if cols > 1 { full.backend.fill(Buffer(storage: full.storage, offset: 2 * (cols + 1) + 3, dtype: dtype), count: 1, value: -.infinity) }
            let target = full.narrowed(1, start: 0, length: 3).narrowed(2, start: 1, length: cols).narrowed(3, start: 1, length: cols)
            #expect(!target.isContiguous)
            let x = (Tensor.randn([2, 3, cols, cols], dtype: .float64, seed: 42) * 6.0).to(dtype)
            x.requiresGrad = true
            let fused = x.softCrossEntropy(target: target) * 0.75
            let gFused = gradients(of: fused, wrt: [x])[0]!
            let composite = -target.softmax(axis: -1).sumOfProducts(x.logSoftmax(axis: -1), axis: -1).mean() * 0.75
            let gComposite = gradients(of: composite, wrt: [x])[0]!
            expectClose(fused.reshaped([1]), composite.reshaped([1]), atol: atol, rtol: rtol, "\(dtype) cols \(cols): loss")
            expectClose(gFused, gComposite, atol: atol, rtol: rtol, "\(dtype) cols \(cols): gradient")
        }
    }
}

/// Under Autocast (bf16 training) the loss takes the same one-pass kernel, value and gradient bit for bit, and the
/// composite it replaces (whose softmax, log-softmax and sums ignore Autocast) agrees within float32 rounding.
@Test func softCrossEntropyUnderAutocastIsTheFloat32Kernel() {
    let x = Tensor.randn([2, 3, 40], seed: 47) * 4.0, target = Tensor.randn([2, 3, 40], seed: 48) * 4.0
    x.requiresGrad = true
    func lossAndGradient(_ body: () -> Tensor) -> (Tensor, Tensor) {
        let y = body()
        return (y, gradients(of: y, wrt: [x])[0]!)
    }
    let plain = lossAndGradient { x.softCrossEntropy(target: target) }
    let autocast = Autocast.run(.bfloat16) { lossAndGradient { x.softCrossEntropy(target: target) } }
    let composite = Autocast.run(.bfloat16) {
        lossAndGradient { -target.softmax(axis: -1).sumOfProducts(x.logSoftmax(axis: -1), axis: -1).mean() }
    }
    #expect(autocast.0.item() == plain.0.item() && autocast.1.scalars(as: Float.self) == plain.1.scalars(as: Float.self))
    expectClose(autocast.0.reshaped([1]), composite.0.reshaped([1]), atol: 1e-6, rtol: 2e-5, "loss")
    expectClose(autocast.1, composite.1, atol: 1e-6, rtol: 2e-5, "gradient")
}

/// Float64 gradient check of the one-pass kernel, and the composite fallback (a last axis that is not of stride 1)
/// giving the same loss as the kernel.
@Test func softCrossEntropyGradcheckAndFallback() {
    let target = Tensor.randn([3, 2, 19], dtype: .float64, seed: 43)
    gradcheck({ $0.softCrossEntropy(target: target) }, at: Tensor.randn([3, 2, 19], dtype: .float64, seed: 44))
    let x = Tensor.randn([4, 19], dtype: .float64, seed: 45), t = Tensor.randn([19, 4], dtype: .float64, seed: 46)
    let strided = t.transposed(0, 1)
    expectClose(x.softCrossEntropy(target: strided).reshaped([1]), x.softCrossEntropy(target: strided.contiguous()).reshaped([1]),
                atol: 1e-14, rtol: 1e-13, "fallback")
}

/// `softCrossEntropy(target:leadingHeads:)` (HASTE's alignment loss of one layer pair: the first heads of the student's
/// and the teacher's logits) gives the loss and gradient of the narrowed views' `softCrossEntropy(target:)` bit for bit
/// on the CPU (float32 and float64; zeros in the unused heads), passes a float64 gradient check, and falls back to the
/// narrowed views' composite where the kernel does not apply (a last axis not of stride 1: the same values); bad shapes
/// stop with the op named.
@Test func softCrossEntropyOfLeadingHeadsIsTheNarrowedViews() async {
    for dtype in [DType.float32, .float64] {
        let x = (Tensor.randn([2, 4, 5, 6], dtype: .float64, seed: 51) * 3.0).to(dtype)
        let target = (Tensor.randn([2, 3, 5, 6], dtype: .float64, seed: 52) * 3.0).to(dtype)
        x.requiresGrad = true
        let heads = x.softCrossEntropy(target: target, leadingHeads: 2) * 0.5
        let narrowed = x.narrowed(1, start: 0, length: 2).softCrossEntropy(target: target.narrowed(1, start: 0, length: 2)) * 0.5
        let (g, gNarrowed) = (gradients(of: heads, wrt: [x])[0]!, gradients(of: narrowed, wrt: [x])[0]!)
        #expect(floatBits(heads) == floatBits(narrowed) && floatBits(g) == floatBits(gNarrowed), "\(dtype)")
        #expect(g.narrowed(1, start: 2, length: 2).abs().sum().item() == 0 && g.abs().sum().item() > 0, "\(dtype)")
    }
    let target = Tensor.randn([1, 3, 4, 5], dtype: .float64, seed: 53)
    gradcheck({ $0.softCrossEntropy(target: target, leadingHeads: 2) }, at: Tensor.randn([1, 3, 4, 5], dtype: .float64, seed: 54))
    let x = Tensor.randn([1, 3, 5, 4], dtype: .float64, seed: 55).transposed(2, 3)         // last axis of stride 4
    #expect(x.softCrossEntropy(target: target, leadingHeads: 2).item()
            == x.narrowed(1, start: 0, length: 2).softCrossEntropy(target: target.narrowed(1, start: 0, length: 2)).item())
    let shapes = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([1, 3, 4, 5]).softCrossEntropy(target: Tensor.zeros([1, 3, 4, 6]), leadingHeads: 2)
    }
    #expect(trapMessage(shapes).contains("softCrossEntropy: logits [1, 3, 4, 5] and target [1, 3, 4, 6]"))
    let heads = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([1, 3, 4, 5]).softCrossEntropy(target: Tensor.zeros([1, 2, 4, 5]), leadingHeads: 3)
    }
    #expect(trapMessage(heads).contains("softCrossEntropy: 3 leading heads of logits [1, 3, 4, 5] and target [1, 2, 4, 5]"))
}

/// Under Autocast bf16 on the CPU the attention's logits come with their gradient rounded (`gradientRounded`), so the
/// walk offers the alignment loss a bf16 gradient (`softCrossEntropyBackwardLow`, CPUSoftmax.swift): q's, k's and v's
/// gradients are the narrowed views' (float32 gradient, scattered, rounded by the logits' node) bit for bit.
@Test func softCrossEntropyOfLeadingHeadsUnderAutocastIsTheNarrowedViews() {
    let q = Tensor.randn([2, 3, 7, 8], seed: 61), k = Tensor.randn([2, 3, 7, 8], seed: 62), v = Tensor.randn([2, 3, 7, 8], seed: 63)
    let up = Tensor.randn([2, 3, 7, 8], seed: 64), target = Tensor.randn([2, 2, 7, 7], seed: 65) * 3.0
    for t in [q, k, v] { t.requiresGrad = true }
    func grads(_ heads: Bool) -> [[UInt32]] {
        let (out, l) = Autocast.run(.bfloat16) { Tensor.attentionWithLogits(q, k, v) }
        let align = heads ? l.softCrossEntropy(target: target, leadingHeads: 2)
            : l.narrowed(1, start: 0, length: 2).softCrossEntropy(target: target)
        return gradients(of: (out * up).sum() + align * 50.0, wrt: [q, k, v]).map { floatBits($0!) }
    }
    let (fused, narrowed) = (grads(true), grads(false))
    #expect(fused == narrowed && fused.allSatisfy { $0.contains { $0 != 0 } })
}
