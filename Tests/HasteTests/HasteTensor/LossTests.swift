import Testing
import HasteTensor

/// Bounds: loss and dlogits within 1e-6 + 1e-5·|ref| of the float64 reference (|logits| up to ~90 in
/// "ce_big"); normalize likewise (the all-zero row's gradient is dy/eps ≈ 10¹², checked relatively).
@Test(arguments: ["ce", "ce_big", "ce_one_class"])
func crossEntropyMatchesPyTorch(_ name: String) throws {
    try expectMatchesNormFixture("loss.safetensors", name, inputs: ["x", "t"], atol: 1e-6, rtol: 1e-5) {
        $0["x"]!.crossEntropy(targets: $0["t"]!)
    }
    // int32 class indices give the same result.
    try expectMatchesNormFixture("loss.safetensors", name, inputs: ["x", "t"], atol: 1e-6, rtol: 1e-5) {
        $0["x"]!.crossEntropy(targets: $0["t"]!.to(.int32))
    }
}

let normalizeCases: [(String, (Tensor) -> Tensor)] = [
    ("normalize_m1", { $0.l2Normalized() }), ("normalize_0", { $0.l2Normalized(axis: 0) }),
    ("normalize_1_eps", { $0.l2Normalized(axis: 1, eps: 0.5) }),
]

@Test(arguments: normalizeCases.map(\.0))
func l2NormalizedMatchesPyTorch(_ name: String) throws {
    let op = normalizeCases.first { $0.0 == name }!.1
    try expectMatchesNormFixture("loss.safetensors", name, inputs: ["x"], atol: 1e-6, rtol: 1e-5) { op($0["x"]!) }
}

@Test func lossGradcheck() {
    let logits = Tensor.randn([5, 7], dtype: .float64, seed: 61) * 2.0
    let targets = Tensor([Int64(0), 6, 3, 3, 1], shape: [5])
    gradcheck({ $0.crossEntropy(targets: targets) }, at: logits)
    gradcheck({ $0.crossEntropy(targets: targets.to(.int32)) }, at: logits)
    gradcheck({ $0.crossEntropy(targets: Tensor([Int64(0), 0], shape: [2])) }, at: Tensor.randn([2, 1], dtype: .float64, seed: 62))
    let x = Tensor.randn([3, 5, 7], dtype: .float64, seed: 63)
    gradcheck({ $0.l2Normalized() }, at: x)
    gradcheck({ $0.l2Normalized(axis: 0) }, at: x)
    gradcheck({ $0.l2Normalized(axis: 1, eps: 2) }, at: x * 0.3)   // some slices below eps: the clamped branch
}

/// The fused loss against the composite −mean(logSoftmax picked at the targets), via a one-hot mask.
@Test func crossEntropyMatchesComposite() {
    let logits = Tensor.randn([9, 37], dtype: .float64, seed: 64) * 4.0
    let t = (0..<9).map { Int64(($0 * 11) % 37) }
    var onehot = [Double](repeating: 0, count: 9 * 37)
    for (r, c) in t.enumerated() { onehot[r * 37 + Int(c)] = 1 }
    let reference = -(logits.logSoftmax() * Tensor(onehot, shape: [9, 37])).sum() / 9.0
    expectClose(logits.crossEntropy(targets: Tensor(t, shape: [9])), reference, atol: 1e-14, rtol: 1e-13)
}

@Test func lossTrapsOnBadInput() async {
    let range = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([2, 3]).crossEntropy(targets: Tensor([Int64(0), 3], shape: [2]))
    }
    #expect(trapMessage(range).contains("crossEntropy: index 3 at position 1 is out of range [0, 3) for logits [2, 3]"))
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([2, 3]).crossEntropy(targets: Tensor([Int64(0), -1], shape: [2])) }
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([2, 3]).crossEntropy(targets: Tensor([Float(0), 1], shape: [2])) }
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([2, 3]).crossEntropy(targets: Tensor([Int64(0)], shape: [1])) }
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([2, 3]).l2Normalized(axis: 2) }
}
