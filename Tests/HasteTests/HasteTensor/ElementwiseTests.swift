import Testing
import HasteTensor

/// Unary ops by fixture name; bounds: float32 results within 2e-6 absolute + 1e-5 relative of torch.
let unaryOps: [(String, (Tensor) -> Tensor)] = [
    ("exp", { $0.exp() }), ("log", { $0.log() }), ("sqrt", { $0.sqrt() }), ("rsqrt", { $0.rsqrt() }),
    ("tanh", { $0.tanh() }), ("sin", { $0.sin() }), ("cos", { $0.cos() }), ("abs", { $0.abs() }),
    ("sigmoid", { $0.sigmoid() }), ("silu", { $0.silu() }), ("gelu_tanh", { $0.geluTanh() }), ("gelu", { $0.gelu() }),
    ("pow3", { $0.pow(3) }), ("pow_half", { $0.pow(0.5) }), ("clamp", { $0.clamp(min: -0.5, max: 0.7) }),
    ("square", { $0.square() }), ("reciprocal", { 1.0 / $0 }),
]

@Test(arguments: unaryOps.map(\.0))
func unaryMatchesPyTorch(_ name: String) throws {
    let f = try Fixture("elementwise_unary.safetensors")
    let op = unaryOps.first { $0.0 == name }!.1
    let x = f["\(name).x"]
    x.requiresGrad = true
    let y = op(x)
    expectClose(y, f["\(name).y"], atol: 2e-6, rtol: 1e-5, name)
    y.backward(f["\(name).dy"])
    expectClose(x.grad!, f["\(name).dx"], atol: 2e-6, rtol: 1e-5, "\(name) grad")
}

@Test(arguments: unaryOps.map(\.0))
func unaryGradcheck(_ name: String) {
    let op = unaryOps.first { $0.0 == name }!.1
    var x = Tensor.randn([3, 5], dtype: .float64, seed: 11)
    if ["log", "sqrt", "rsqrt", "pow_half", "reciprocal"].contains(name) { x = x.abs() + 0.2 }
    if name == "abs" || name == "clamp" { x = x + 0.013 }   // away from kinks at 0, -0.5 and 0.7
    gradcheck(op, at: x)
}

let binaryOps: [(String, (Tensor, Tensor) -> Tensor)] = [
    ("add", { $0 + $1 }), ("sub", { $0 - $1 }), ("mul", { $0 * $1 }), ("div", { $0 / $1 }),
    ("maximum", { $0.maximum($1) }), ("minimum", { $0.minimum($1) }),
]

@Test(arguments: binaryOps.map(\.0))
func binaryBroadcastMatchesPyTorch(_ name: String) throws {
    let f = try Fixture("elementwise_binary.safetensors")
    let op = binaryOps.first { $0.0 == name }!.1
    let a = f["\(name).a"], b = f["\(name).b"]
    a.requiresGrad = true; b.requiresGrad = true
    let y = op(a, b)
    expectClose(y, f["\(name).y"], atol: 1e-6, rtol: 1e-6, name)
    y.backward(f["\(name).dy"])
    expectClose(a.grad!, f["\(name).da"], atol: 1e-5, rtol: 1e-5, "\(name) da")
    expectClose(b.grad!, f["\(name).db"], atol: 1e-5, rtol: 1e-5, "\(name) db")
}

@Test(arguments: binaryOps.map(\.0))
func binaryGradcheck(_ name: String) {
    let op = binaryOps.first { $0.0 == name }!.1
    let a = Tensor.randn([4, 1, 3], dtype: .float64, seed: 3)
    var b = Tensor.randn([5, 3], dtype: .float64, seed: 4)
    if name == "div" { b = b.abs() + 0.5 }
    gradcheck({ op($0[0], $0[1]) }, at: [a, b])
}

@Test func scalarArithmetic() {
    let x = Tensor([1.0, -2, 4], shape: [3])
    #expect((x + 1.0).scalars(as: Double.self) == [2, -1, 5])
    #expect((2.0 - x).scalars(as: Double.self) == [1, 4, -2])
    #expect((x * 3.0).scalars(as: Double.self) == [3, -6, 12])
    #expect((8.0 / x).scalars(as: Double.self) == [8, -4, 2])
    #expect((-x).scalars(as: Double.self) == [-1, 2, -4])
}

/// ReLU's 16-lane path and its scalar tail follow one rule: x > 0 keeps x, NaN stays NaN, everything else (−0
/// included) is +0; the gradient is 1 where x > 0, else 0. 37 elements: two full lane groups and a tail of 5.
@Test func reluLanesAndTailAgree() {
    let special: [Float] = [.nan, -0.0, 0, -1e-30, 1e-30, -.infinity, .infinity, 3, -3]
    let values = (0..<37).map { special[$0 % special.count] * ($0 % 2 == 0 ? 1 : 2) }
    let x = Tensor(values, shape: [37])
    x.requiresGrad = true
    let y = x.relu()
    y.backward(Tensor.ones([37]))
    let ys = y.scalars(as: Float.self), gs = x.grad!.scalars(as: Float.self)
    for (i, v) in values.enumerated() {
        if v.isNaN { #expect(ys[i].isNaN, "relu(NaN) at \(i)") } else {
            let want: Float = v > 0 ? v : 0
            #expect(ys[i].bitPattern == want.bitPattern, "relu(\(v)) at \(i): \(ys[i])")
        }
        #expect(gs[i] == (v > 0 ? 1 : 0), "relu'(\(v)) at \(i): \(gs[i])")
    }
}
