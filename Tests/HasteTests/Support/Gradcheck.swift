import Testing
import HasteTensor

/// Central differences in Float64 on the CPU, compared with autograd (STYLE R10). The output is contracted
/// with a random cotangent so every output element matters. `inputs` are float64 leaves; each is checked.
func gradcheck(_ f: ([Tensor]) -> Tensor, at inputs: [Tensor], eps: Double = 1e-6, atol: Double = 1e-7,
               rtol: Double = 1e-5, sourceLocation: SourceLocation = #_sourceLocation) {
    for x in inputs {
        precondition(x.dtype == .float64 && x.device == .cpu, "gradcheck runs in float64 on cpu")
    }
    let leaves = inputs.map { x -> Tensor in let c = x.clone(); c.requiresGrad = true; return c }
    let out = f(leaves)
    let w = Tensor.randn(like: out, seed: 7)
    let analytic = gradients(of: (out * w).sum(), wrt: leaves).map { $0?.scalars(as: Double.self) }
    for (which, x) in inputs.enumerated() {
        var v = x.scalars(as: Double.self)
        func loss() -> Double {
            var args = inputs
            args[which] = Tensor(v, shape: x.shape)
            return noGrad { (f(args) * w).sum().item() }
        }
        guard let a = analytic[which] else {
            Issue.record("input \(which): autograd gave no gradient", sourceLocation: sourceLocation)
            continue
        }
        for i in v.indices {
            let saved = v[i]
            v[i] = saved + eps; let up = loss()
            v[i] = saved - eps; let down = loss()
            v[i] = saved
            let numeric = (up - down) / (2 * eps)
            #expect(Swift.abs(numeric - a[i]) <= atol + rtol * Swift.abs(numeric),
                    "input \(which) ∂/∂x[\(i)]: numeric \(numeric), autograd \(a[i])", sourceLocation: sourceLocation)
        }
    }
}

/// Single-input form.
func gradcheck(_ f: (Tensor) -> Tensor, at x: Tensor, eps: Double = 1e-6, atol: Double = 1e-7, rtol: Double = 1e-5,
               sourceLocation: SourceLocation = #_sourceLocation) {
    gradcheck({ f($0[0]) }, at: [x], eps: eps, atol: atol, rtol: rtol, sourceLocation: sourceLocation)
}
