import Testing
import HasteTensor

/// Runs one fixture case of Scripts/fixtures/norm.py: loads `inputs` (float ones become leaves), applies `op`,
/// compares y and every float input's gradient (for the fixture's dy) with PyTorch's float64 results.
func expectMatchesNormFixture(_ file: String, _ name: String, inputs: [String], atol: Double, rtol: Double,
                              gradAtol: Double? = nil, gradRtol: Double? = nil,
                              sourceLocation: SourceLocation = #_sourceLocation,
                              _ op: ([String: Tensor]) -> Tensor) throws {
    let f = try Fixture(file)
    var leaves: [String: Tensor] = [:]
    for key in inputs {
        let t = f["\(name).\(key)"]
        t.requiresGrad = t.dtype.isComputeFloat
        leaves[key] = t
    }
    let y = op(leaves)
    expectClose(y, f["\(name).y"], atol: atol, rtol: rtol, name, sourceLocation: sourceLocation)
    y.backward(f["\(name).dy"])
    for key in inputs where leaves[key]!.requiresGrad {
        guard let g = leaves[key]!.grad else {
            Issue.record("\(name): no gradient for \(key)", sourceLocation: sourceLocation)
            continue
        }
        expectClose(g, f["\(name).d\(key)"], atol: gradAtol ?? atol, rtol: gradRtol ?? rtol, "\(name) d\(key)",
                    sourceLocation: sourceLocation)
    }
}

/// Bounds: sums/means of ≤ 105 float32 values within 2e-6 + 1e-5·|y| of the float64 reference; amax and its
/// gradient (dy / ties) are exact; variance 1e-5 absolute + 1e-5 relative.
let reduceCases: [(String, Double, Double, (Tensor) -> Tensor)] = [
    ("sum_all", 2e-6, 1e-5, { $0.sum() }),
    ("sum_02", 2e-6, 1e-5, { $0.sum(axes: [0, 2]) }),
    ("sum_1_keep", 2e-6, 1e-5, { $0.sum(axis: 1, keepDims: true) }),
    ("sum_m1", 2e-6, 1e-5, { $0.sum(axis: -1) }),
    ("mean_all", 2e-6, 1e-5, { $0.mean() }),
    ("mean_02", 2e-6, 1e-5, { $0.mean(axes: [0, 2]) }),
    ("mean_1_keep", 2e-6, 1e-5, { $0.mean(axis: 1, keepDims: true) }),
    ("amax_all", 0, 0, { $0.max() }),
    ("amax_02", 0, 0, { $0.max(axes: [0, 2]) }),
    ("amax_1_keep", 0, 0, { $0.max(axis: 1, keepDims: true) }),
    ("amax_ties_1", 0, 0, { $0.max(axis: 1) }),
    ("amax_ties_0", 0, 0, { $0.max(axis: 0) }),
    ("amax_ties_long", 0, 0, { $0.max(axes: [-1]) }),
    ("var_all", 1e-5, 1e-5, { $0.variance() }),
    ("var_02_unbiased", 1e-5, 1e-5, { $0.variance(axes: [0, 2], unbiased: true) }),
    ("var_1_keep", 1e-5, 1e-5, { $0.variance(axes: [1], keepDims: true) }),
    ("var_m1_unbiased", 1e-5, 1e-5, { $0.variance(axes: [-1], unbiased: true) }),
]

@Test(arguments: reduceCases.map(\.0))
func reduceMatchesPyTorch(_ name: String) throws {
    let (_, atol, rtol, op) = reduceCases.first { $0.0 == name }!
    try expectMatchesNormFixture("reduce.safetensors", name, inputs: ["x"], atol: atol, rtol: rtol) { op($0["x"]!) }
}

@Test func reduceGradcheck() {
    let x = Tensor.randn([3, 5, 7], dtype: .float64, seed: 21)   // continuous: no ties, no kinks
    gradcheck({ $0.sum(axes: [0, 2]) }, at: x)
    gradcheck({ $0.mean(axis: 1, keepDims: true) }, at: x)
    gradcheck({ $0.max(axes: [0, 2]) }, at: x)
    gradcheck({ $0.max(axis: 1) }, at: x)
    gradcheck({ $0.max() }, at: x)
    gradcheck({ $0.variance(axes: [0, 2], unbiased: true) }, at: x)
    gradcheck({ $0.variance(axes: [1], keepDims: true) }, at: x)
}

@Test func maxSplitsGradientAmongTiesAndPropagatesNaN() {
    let x = Tensor([1.0, 3, 3, 2, 3, 0], shape: [2, 3])
    x.requiresGrad = true
    let y = x.max(axis: 1)
    #expect(y.scalars(as: Double.self) == [3, 3])
    y.backward(Tensor([6.0, 1], shape: [2]))
    #expect(x.grad!.scalars(as: Double.self) == [0, 3, 3, 0, 1, 0])
    var long = [Float](repeating: 1, count: 40)
    long[33] = .nan
    #expect(Tensor(long, shape: [40]).max().item().isNaN)
    long[33] = .infinity
    #expect(Tensor(long, shape: [40]).max().item() == .infinity)
    #expect(Tensor([Float](repeating: 2, count: 7), shape: [7, 1]).max(axis: 1).scalars(as: Float.self) == [Float](repeating: 2, count: 7))
}

@Test func varianceOfOneElementUnbiasedIsNaN() {
    #expect(Tensor([Float(2)], shape: [1]).variance(unbiased: true).item().isNaN)   // torch: nan (no dof)
    #expect(Tensor([Float(2)], shape: [1]).variance().item() == 0)
}

@Test func reduceTrapsOnBadInput() async {
    let axis = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([3, 4]).max(axis: 2)
    }
    #expect(trapMessage(axis).contains("max: axis 2 out of range for shape [3, 4]"))
    let dtype = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor([Int64(1), 2], shape: [2]).max()
    }
    #expect(trapMessage(dtype).contains("max: needs float32 or float64, got int64 [2]"))
    await #expect(processExitsWith: .failure) { _ = Tensor.zeros([3, 0]).max(axis: 1) }
}

/// `sumOfProducts` is `(a * b).sum(axis)` bit for bit, values and both gradients (both operands tracked, one tracked,
/// a middle axis), and its graph keeps no product: the saved bytes are the operands' alone (the attention loss's
/// P·log Q, [B, H, T, T] per layer, was held by the sum node).
@Test func sumOfProductsIsTheCompositeBitForBitWithoutKeepingTheProduct() {
    func bits(_ t: Tensor?) -> [UInt32] { t?.scalars(as: Float.self).map(\.bitPattern) ?? [] }
    for (shape, axis, trackB) in [([3, 5, 7], -1, true), ([4, 6, 5], 1, true), ([2, 3, 33], -1, false)] {
        let seedA = Tensor.randn(shape, seed: 31), seedB = Tensor.randn(shape, seed: 32), dy = Tensor.randn(shape, seed: 33)
        func run(_ fused: Bool) -> (Tensor, Tensor?, Tensor?, Int) {
            let a = Tensor(seedA.scalars(as: Float.self), shape: shape), b = Tensor(seedB.scalars(as: Float.self), shape: shape)
            a.requiresGrad = true
            b.requiresGrad = trackB
            let ta = a.tanh(), tb = b * 1.5                      // intermediates: their storages count as saved bytes
            let y = fused ? ta.sumOfProducts(tb, axis: axis) : (ta * tb).sum(axis: axis)
            let report = Tensor.savedBytes(from: [y]), saved = report.totalSaved + report.totalEdges
            (y * dy.sum(axis: axis)).sum().backward()
            return (y, a.grad, b.grad, saved)
        }
        let (yc, gac, gbc, savedComposite) = run(false), (yf, gaf, gbf, savedFused) = run(true)
        #expect(bits(yf) == bits(yc) && bits(gaf) == bits(gac) && bits(gbf) == bits(gbc), "\(shape) axis \(axis): differs")
        #expect(trackB == (gbf != nil))
        let product = shape.reduce(1, *) * 4
        #expect(savedFused <= savedComposite - product, "\(shape): \(savedFused) bytes held, composite \(savedComposite)")
    }
}
