import Testing
@testable import HasteTensor

/// A bf16 tensor that autograd tracks (an autocast op's output: the aligned attention's logits on CUDA) has a bf16
/// gradient: each term rounded to bf16 on its own (a float32 term from a node that computes in float32, as torch's
/// cast back at a type promotion) and two terms added as bf16 tensors, the float32 sum rounded once (torch's bf16
/// add). On the CPU, which has no bf16 add kernel (`addLow` false), the walk adds them in float32 and rounds.
@Suite struct LowFloatAutogradTests {
    /// u = x's values as a tracked bf16 tensor; its node hands u's gradient to the float32 leaf x as it is (widened).
    struct LowOutputBackward: Backward {
        let x: Tensor
        var inputs: [Tensor] { [x] }
        func gradients(_ dy: Tensor) -> [Tensor?] { [dy.to(.float32)] }
    }

    /// A consumer of u that returns a float32 gradient for it (the walk rounds it).
    struct Float32TermBackward: Backward {
        let x: Tensor
        var inputs: [Tensor] { [x] }
        func gradients(_ dy: Tensor) -> [Tensor?] { [dy] }
    }

    static func lowOutput(_ x: Tensor) -> Tensor {
        let u = GradMode.withoutGrad { x.to(.bfloat16) }
        return u.recorded(LowOutputBackward(x: x))
    }

    static func float32Use(_ u: Tensor) -> Tensor {
        GradMode.withoutGrad { u.to(.float32) }.recorded(Float32TermBackward(x: u))
    }

    /// bf16(v) as float32 values.
    static func rounded(_ v: [Float]) -> [Float] { Tensor(v, shape: [v.count]).to(.bfloat16).to(.float32).scalars(as: Float.self) }

    @Test func twoTermsAreRoundedEachAndTheirSumOnce() {
        let n = 2000
        let a = Tensor.randn([n], seed: 3), b = Tensor.randn([n], seed: 4) * 0.37
        let (av, bv) = (a.scalars(as: Float.self), b.scalars(as: Float.self))
        let (ar, br) = (Self.rounded(av), Self.rounded(bv))
        let expected = Self.rounded(zip(ar, br).map { $0 + $1 }).map(\.bitPattern)
        // The test tells the two roundings apart: bf16(a + b) differs somewhere.
        #expect(Self.rounded(zip(av, bv).map { $0 + $1 }).map(\.bitPattern) != expected)
        // Terms as bf16 tensors (`to(.float32)`'s backward rounds each), as float32 terms (the walk rounds each), mixed.
        for (first, second) in [(false, false), (true, true), (true, false), (false, true)] {
            let x = Tensor.zeros([n]); x.requiresGrad = true
            let u = Self.lowOutput(x)
            #expect(u.dtype == .bfloat16 && u.isTracked)
            let uses = [first, second].map { float32 in float32 ? Self.float32Use(u) : u.to(.float32) }
            ((uses[0] * a).sum() + (uses[1] * b).sum()).backward()
            #expect(x.grad!.dtype == .float32)
            #expect(x.grad!.scalars(as: Float.self).map(\.bitPattern) == expected, "float32 terms: \(first), \(second)")
        }
    }

    @Test func oneFloat32TermIsRounded() {
        let a = Tensor.randn([300], seed: 5)
        let x = Tensor.zeros([300]); x.requiresGrad = true
        (Self.float32Use(Self.lowOutput(x)) * a).sum().backward()
        #expect(x.grad!.scalars(as: Float.self).map(\.bitPattern) == Self.rounded(a.scalars(as: Float.self)).map(\.bitPattern))
    }

    /// The alignment loss of bf16 logits: float32, the loss of their float32 values bit for bit, and their gradient that
    /// loss's gradient rounded to bf16 (on the CPU the logits are widened first).
    @Test func theAlignmentLossOfBF16LogitsIsTheirFloat32ValuesLoss() {
        let shape = [2, 4, 9, 9]
        let values = (Tensor.randn(shape, seed: 8) * 3).to(.bfloat16).to(.float32)
        let target = Tensor.randn([2, 3, 9, 9], seed: 9) * 2
        let x = Tensor.zeros(shape); x.requiresGrad = true
        let low = Self.lowOutput(values.detached() + x)      // bf16 values of `values`; the gradient reaches x
        let lossLow = low.softCrossEntropy(target: target, leadingHeads: 3)
        let y = values.detached(); y.requiresGrad = true
        let lossFloat = y.softCrossEntropy(target: target, leadingHeads: 3)
        #expect(lossLow.dtype == .float32 && lossLow.item() == lossFloat.item())
        (lossLow * 1000).backward()
        (lossFloat * 1000).backward()
        #expect(x.grad!.scalars(as: Float.self).map(\.bitPattern) == Self.rounded(y.grad!.scalars(as: Float.self)).map(\.bitPattern))
        #expect(y.grad!.scalars(as: Float.self).contains { $0 != 0 })
    }
}
