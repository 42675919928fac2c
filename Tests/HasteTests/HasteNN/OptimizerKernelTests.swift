import Testing
import HasteTensor
@testable import HasteNN

/// Σ x² against a Double reference on sizes around the SIMD width, the 1024 block and the 32 Ki chunk:
/// float32 within 1e-6 relative, float64 within 1e-13.
@Test(arguments: [0, 1, 15, 17, 33, 1025, 70_001])
func sumOfSquaresMatchesReference(_ n: Int) {
    for dtype in [DType.float32, .float64] {
        let x = Tensor.randn([n], dtype: dtype, seed: UInt64(n))
        let expected = x.scalars(as: Double.self).reduce(0) { $0 + $1 * $1 }
        let got = x.backend.sumOfSquares(x.buffer, count: n)
        #expect(Swift.abs(got - expected) <= (dtype == .float32 ? 1e-6 : 1e-13) * expected, "\(dtype) n=\(n)")
    }
}

@Test func scaleMultipliesInPlace() {
    let x = Tensor([Float(1), -2, 3.5])
    x.backend.scale(x.buffer, count: 3, by: 0.5)
    #expect(x.scalars(as: Float.self) == [0.5, -1, 1.75])
}

/// Below the threshold nothing changes; above it the norm becomes maxNorm/(1 + 1e-6/total); a non-finite
/// norm is returned and the grads multiplied as torch does.
@Test func clipGradNormFollowsTorch() {
    let store = ParameterStore()
    let w = store.root.parameter("w", [2, 2], .zeros), b = store.root.parameter("b", [3], .zeros)
    store.finalize()
    noGrad {
        w.grad!.copyValues(from: Tensor([Float(3), 0, 0, 0], shape: [2, 2]))
        b.grad!.copyValues(from: Tensor([Float(4), 0, 0]))
    }
    #expect(clipGradNorm(store, maxNorm: 10) == 5)
    #expect(w.grad!.scalars(as: Float.self) == [3, 0, 0, 0])
    #expect(clipGradNorm(store, maxNorm: 1) == 5)
    let coefficient = Float(1 / (5 + 1e-6))
    #expect(w.grad!.scalars(as: Float.self)[0] == 3 * coefficient && b.grad!.scalars(as: Float.self)[0] == 4 * coefficient)

    noGrad { b.grad!.copyValues(from: Tensor([Float.infinity, 1, 0])) }
    #expect(clipGradNorm(store, maxNorm: 1) == .infinity)
    let g = b.grad!.scalars(as: Float.self)
    #expect(g[0].isNaN && g[1] == 0 && w.grad!.scalars(as: Float.self)[0] == 0)
    noGrad { b.grad!.copyValues(from: Tensor([Float.nan, 1, 0])) }
    #expect(clipGradNorm(store, maxNorm: 1).isNaN)
    #expect(w.grad!.scalars(as: Float.self).allSatisfy { $0.isNaN })
}

/// Skipped parameters keep value and moments; a restored optimizer continues exactly like the original.
@Test func adamwSkipsAndRestoresState() throws {
    func make() -> (ParameterStore, Linear, AdamW) {
        let s = ParameterStore(seed: 4)
        let lin = Linear(s.root["lin"], 3, 5)
        s.finalize()
        return (s, lin, AdamW(store: s, lr: 1e-2, weightDecay: 0.1))
    }
    let (store, lin, opt) = make()
    let x = Tensor.randn([4, 3], seed: 2)
    func train(_ s: ParameterStore, _ l: Linear, _ o: AdamW, skipping: Set<String> = []) {
        s.zeroGrad()
        l(x).square().sum().backward()
        o.step(skipping: skipping)
    }
    train(store, lin, opt)
    let bias = lin.bias!.clone(), m = Dictionary(uniqueKeysWithValues: opt.stateTensors())["m.lin.bias"]!.clone()
    train(store, lin, opt, skipping: ["lin.bias"])
    expectClose(lin.bias!, bias, atol: 0, rtol: 0, "skipped value")
    expectClose(Dictionary(uniqueKeysWithValues: opt.stateTensors())["m.lin.bias"]!, m, atol: 0, rtol: 0, "skipped moment")
    #expect(opt.stateTensors().map(\.0) == ["m.lin.weight", "m.lin.bias", "v.lin.weight", "v.lin.bias"])

    let (store2, lin2, opt2) = make()
    try store2.load(Dictionary(uniqueKeysWithValues: store.stateDict().map { ($0.0, $0.1.clone()) }))
    try opt2.loadState(Dictionary(uniqueKeysWithValues: opt.stateTensors().map { ($0.0, $0.1.clone()) }), stepCount: 2)
    train(store, lin, opt)
    train(store2, lin2, opt2)
    expectClose(lin2.weight, lin.weight, atol: 0, rtol: 0, "restored optimizer")
    #expect(throws: HasteError.self) { try opt2.loadState(["m.lin.weight": Tensor.zeros([5, 3])], stepCount: 1) }
}
