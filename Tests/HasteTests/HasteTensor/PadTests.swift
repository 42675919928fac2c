import Testing
@testable import HasteTensor

/// The cases of Scripts/fixtures/vae.py (PAD_CASES): x shape and (left, right, top, bottom).
let padCases: [(name: String, shape: [Int], pad: (Int, Int, Int, Int))] = [
    ("vae", [2, 3, 5, 7], (0, 1, 0, 1)), ("all", [1, 2, 3, 4], (2, 1, 3, 0)), ("rank3", [3, 4, 5], (1, 2, 0, 1)),
]

/// Pure copies: exact.
@Test func padMatchesPyTorch() throws {
    let f = try Fixture("pad.safetensors")
    for c in padCases {
        let x = f["\(c.name).x"]
        x.requiresGrad = true
        let y = x.padded(left: c.pad.0, right: c.pad.1, top: c.pad.2, bottom: c.pad.3)
        expectClose(y, f["\(c.name).y"], atol: 0, rtol: 0, "\(c.name) y")
        y.backward(f["\(c.name).dy"])
        expectClose(x.grad!, f["\(c.name).dx"], atol: 0, rtol: 0, "\(c.name) dx")
    }
}

@Test func padGradcheckAndViews() {
    gradcheck({ $0.padded(left: 1, right: 2, top: 0, bottom: 3) }, at: Tensor.randn([2, 3, 5], dtype: .float64, seed: 4))
    // A non-contiguous input (a transposed view) pads like its contiguous copy.
    let x = Tensor.randn([2, 5, 3], dtype: .float64, seed: 5).transposed(1, 2)
    expectClose(x.padded(right: 1, bottom: 1), x.contiguous().padded(right: 1, bottom: 1), atol: 0, rtol: 0)
    gradcheck({ $0.transposed(1, 2).padded(left: 2, top: 1) }, at: Tensor.randn([2, 5, 3], dtype: .float64, seed: 6))
}
