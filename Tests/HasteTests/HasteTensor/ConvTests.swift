import Testing
@testable import HasteTensor

/// The cases of Scripts/fixtures/conv.py (CONV_CASES): x shape, weight shape, bias, stride, padding (height, width).
struct ConvCase: Sendable, CustomStringConvertible {
    let name: String, x: [Int], w: [Int], bias: Bool, stride: Int, padding: (Int, Int)
    var description: String { name }
    init(name: String, x: [Int], w: [Int], bias: Bool, stride: Int, padding: Int) {
        self.init(name: name, x: x, w: w, bias: bias, stride: stride, padding: (padding, padding))
    }
    init(name: String, x: [Int], w: [Int], bias: Bool, stride: Int, padding: (Int, Int)) {
        (self.name, self.x, self.w, self.bias, self.stride, self.padding) = (name, x, w, bias, stride, padding)
    }
}

let convCases: [ConvCase] = [
    ConvCase(name: "k3p1", x: [2, 3, 7, 7], w: [5, 3, 3, 3], bias: true, stride: 1, padding: 1),
    ConvCase(name: "k3p1_rect", x: [1, 3, 9, 7], w: [5, 3, 3, 3], bias: false, stride: 1, padding: 1),
    ConvCase(name: "k3s2p1", x: [1, 3, 9, 9], w: [5, 3, 3, 3], bias: true, stride: 2, padding: 1),
    ConvCase(name: "k3s2", x: [2, 3, 9, 9], w: [4, 3, 3, 3], bias: true, stride: 2, padding: 0),
    ConvCase(name: "k1", x: [2, 5, 7, 7], w: [3, 5, 1, 1], bias: true, stride: 1, padding: 0),
    ConvCase(name: "k2x3", x: [1, 3, 7, 9], w: [4, 3, 2, 3], bias: true, stride: 1, padding: 0),
    ConvCase(name: "patch2", x: [2, 3, 8, 8], w: [5, 3, 2, 2], bias: true, stride: 2, padding: 0),
    ConvCase(name: "patch2_odd", x: [1, 3, 9, 9], w: [5, 3, 2, 2], bias: true, stride: 2, padding: 0),
    ConvCase(name: "patch4", x: [1, 3, 8, 12], w: [7, 3, 4, 4], bias: true, stride: 4, padding: 0),
    ConvCase(name: "patch8", x: [1, 3, 16, 16], w: [4, 3, 8, 8], bias: false, stride: 8, padding: 0),
    ConvCase(name: "k1x7p03", x: [2, 3, 7, 9], w: [4, 3, 1, 7], bias: true, stride: 1, padding: (0, 3)),
    ConvCase(name: "k7x1p30", x: [1, 3, 9, 5], w: [5, 3, 7, 1], bias: false, stride: 1, padding: (3, 0)),
    ConvCase(name: "k3x1s2p12", x: [1, 2, 9, 7], w: [3, 2, 3, 1], bias: true, stride: 2, padding: (1, 2)),
]

/// float32 against torch: y and the gradients are sums of at most Cin·kh·kw = 192 (forward) or
/// N·Ho·Wo = 98 (dW) products of O(1) terms, so 1e-5 absolute + 1e-5 relative covers float32 rounding.
@Test(arguments: convCases)
func conv2dMatchesPyTorch(_ c: ConvCase) throws {
    let f = try Fixture("conv2d.safetensors")
    let x = f["\(c.name).x"], w = f["\(c.name).w"], b = c.bias ? f["\(c.name).b"] : nil
    for t in [x, w] + (b.map { [$0] } ?? []) { t.requiresGrad = true }
    let y = x.conv2d(w, b, stride: c.stride, padding: c.padding)
    expectClose(y, f["\(c.name).y"], atol: 1e-5, rtol: 1e-5, "\(c.name) y")
    y.backward(f["\(c.name).dy"])
    expectClose(x.grad!, f["\(c.name).dx"], atol: 1e-5, rtol: 1e-5, "\(c.name) dx")
    expectClose(w.grad!, f["\(c.name).dw"], atol: 1e-5, rtol: 1e-5, "\(c.name) dw")
    if let b { expectClose(b.grad!, f["\(c.name).db"], atol: 1e-5, rtol: 1e-5, "\(c.name) db") }
}

@Test(arguments: convCases)
func conv2dGradcheck(_ c: ConvCase) {
    let x = Tensor.randn(c.x, dtype: .float64, seed: 21), w = Tensor.randn(c.w, dtype: .float64, seed: 22)
    if c.bias {
        let b = Tensor.randn([c.w[0]], dtype: .float64, seed: 23)
        gradcheck({ $0[0].conv2d($0[1], $0[2], stride: c.stride, padding: c.padding) }, at: [x, w, b])
    } else {
        gradcheck({ $0[0].conv2d($0[1], stride: c.stride, padding: c.padding) }, at: [x, w])
    }
}

/// The definition, written as the obvious six nested loops, in float64 (zero padding, no bias).
func directConv2d(_ x: Tensor, _ w: Tensor, stride: Int, padding: Int) -> Tensor {
    directConv2d(x, w, stride: stride, padding: (padding, padding))
}

func directConv2d(_ x: Tensor, _ w: Tensor, stride: Int, padding pad: (Int, Int)) -> Tensor {
    let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]), (cout, kh, kw) = (w.shape[0], w.shape[2], w.shape[3])
    let oh = (h + 2 * pad.0 - kh) / stride + 1, ow = (wd + 2 * pad.1 - kw) / stride + 1
    let xv = x.scalars(as: Double.self), wv = w.scalars(as: Double.self)
    var out = [Double](repeating: 0, count: n * cout * oh * ow)
    for img in 0..<n { for o in 0..<cout { for oy in 0..<oh { for ox in 0..<ow {
        var s = 0.0
        for ci in 0..<cin { for i in 0..<kh { for j in 0..<kw {
            let iy = oy * stride - pad.0 + i, ix = ox * stride - pad.1 + j
            guard iy >= 0 && iy < h && ix >= 0 && ix < wd else { continue }
            s += xv[((img * cin + ci) * h + iy) * wd + ix] * wv[((o * cin + ci) * kh + i) * kw + j]
        } } }
        out[((img * cout + o) * oh + oy) * ow + ox] = s
    } } } }
    return Tensor(out, shape: [n, cout, oh, ow])
}

@Test(arguments: convCases)
func conv2dMatchesDirectLoops(_ c: ConvCase) {
    let x = Tensor.randn(c.x, dtype: .float64, seed: 31), w = Tensor.randn(c.w, dtype: .float64, seed: 32)
    let b = Tensor.randn([c.w[0]], dtype: .float64, seed: 33)
    let expected = directConv2d(x, w, stride: c.stride, padding: c.padding) + b.reshaped([1, c.w[0], 1, 1])
    expectClose(x.conv2d(w, b, stride: c.stride, padding: c.padding), expected, atol: 1e-12, rtol: 1e-12, c.name)
}

/// Column matrices are built a group of images at a time; one image per group must give the same
/// forward and gradients as the whole batch at once.
@Test func conv2dColumnGroupsAgree() {
    for (stride, padding) in [(1, 1), (2, 0)] {
        let x = Tensor.randn([3, 2, 7, 6], dtype: .float64, seed: 41), w = Tensor.randn([4, 2, 3, 2], dtype: .float64, seed: 42)
        let dy = Tensor.randn(x.conv2d(w, stride: stride, padding: padding).shape, dtype: .float64, seed: 43)
        var results: [[Tensor]] = []
        for budget in [ConvColumns.budget, 1] {
            let xl = x.clone(), wl = w.clone()
            xl.requiresGrad = true; wl.requiresGrad = true
            let y = xl.conv2d(wl, nil, stride: stride, padding: (padding, padding), columnBudget: budget)
            y.backward(dy)
            results.append([y, xl.grad!, wl.grad!])
        }
        for (a, b) in zip(results[0], results[1]) { expectClose(a, b, atol: 1e-12, rtol: 1e-12, "stride \(stride)") }
    }
}

/// Sizes big enough for several parallel chunks in im2col and col2im: the forward against the direct loops,
/// the backward by the adjoint identity ⟨conv(x, w), dy⟩ = ⟨x, dx⟩ = ⟨w, dw⟩ (conv is linear in each argument).
@Test func conv2dAdjointAcrossChunks() {
    let x = Tensor.randn([2, 8, 40, 40], dtype: .float64, seed: 61), w = Tensor.randn([3, 8, 3, 3], dtype: .float64, seed: 62)
    x.requiresGrad = true; w.requiresGrad = true
    let y = x.conv2d(w, stride: 1, padding: 1)
    expectClose(y, directConv2d(x.detached(), w.detached(), stride: 1, padding: 1), atol: 1e-12, rtol: 1e-12)
    let dy = Tensor.randn(y.shape, dtype: .float64, seed: 63)
    let g = gradients(of: y, wrt: [x, w], seed: dy)
    let inner = (y.detached() * dy).sum().item()
    #expect(Swift.abs((x.detached() * g[0]!).sum().item() - inner) <= 1e-9 * Swift.abs(inner))
    #expect(Swift.abs((w.detached() * g[1]!).sum().item() - inner) <= 1e-9 * Swift.abs(inner))
}
