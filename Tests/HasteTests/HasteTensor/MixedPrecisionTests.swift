import Testing
import HasteTensor

/// bf16 autocast (Ops/Precision.swift) against `torch.autocast('cpu', dtype=torch.bfloat16)`
/// (Scripts/fixtures/make_bf16_fixture.py). Bounds, per element, in units of one bf16 ulp of PyTorch's value
/// (ulp(y) = 2^(⌊log2 |y|⌋ − 7): bf16 keeps 8 significant bits):
///
/// - linear, matmul, conv2d: both sides multiply the same bf16-rounded operands (products exact in float32) and
///   accumulate in float32, only in a different order: the sums before the final rounding differ by
///   ≤ k·2^-24·Σ|terms|, far below one bf16 ulp, so each rounded output or gradient is PyTorch's or one ulp from it
///   (a sum landing next to a rounding midpoint). Bound: 1 ulp, ≥ 90 % bit-equal (measured: all bit-equal).
/// - attention: torch rounds the probabilities elsewhere (its CPU flash kernel rounds exp(s − max) before
///   normalising, haste's fused kernel keeps them float32; the explicit path with logits rounds where torch does and
///   is bit-equal: AutocastGradientTests). Each such rounding is a relative change ≤ 2^-9 of one term of a sum
///   whose terms are bounded by the tensor's largest element, and at most a few stack on one result: bound
///   2^-6·max|torch| per element, ≥ 40 % bit-equal (measured for sdpa: ≤ 0.003·max|torch|, 60–72 % bit-equal).
/// - bf16 mode must show: every output and gradient is bf16-representable, and float32 mode is not (it would
///   miss both the representability check and the bit-equal share: the test fails if bf16 silently runs fp32).
struct MixedPrecisionOpTests {
    /// Runs fixture case `name` (inputs in0…, upstream weights w0…) in `precision`: outputs and input gradients.
    func run(_ f: Fixture, _ name: String, inputs: Int, _ precision: ComputePrecision,
             _ op: ([Tensor]) -> [Tensor]) -> (outputs: [Tensor], grads: [Tensor]) {
        let xs = (0..<inputs).map { i -> Tensor in let t = f["\(name).in\(i)"]; t.requiresGrad = true; return t }
        let outs = Autocast.run(precision) { op(xs) }
        var loss = (outs[0] * f["\(name).w0"]).sum()
        for i in 1..<outs.count { loss = loss + (outs[i] * f["\(name).w\(i)"]).sum() }
        loss.backward()
        return (outs, xs.map { $0.grad! })
    }

    static let cases: [(String, Int, ([Tensor]) -> [Tensor])] = [
        ("linear", 3, { [$0[0].linear($0[1], $0[2])] }),
        ("matmul", 2, { [$0[0].matmul($0[1])] }),
        ("conv_patch", 3, { [$0[0].conv2d($0[1], $0[2], stride: 2)] }),
        ("conv3x3", 3, { [$0[0].conv2d($0[1], $0[2], padding: 1)] }),
        ("sdpa", 3, { [Tensor.scaledDotProductAttention($0[0], $0[1], $0[2])] }),
        ("logits", 3, { let (o, l) = Tensor.attentionWithLogits($0[0], $0[1], $0[2]); return [o, l] }),
    ]

    @Test(arguments: 0..<cases.count)
    func bf16OpsMatchTorchAutocast(_ index: Int) throws {
        let f = try Fixture("bf16_ops.safetensors")
        let (name, inputs, op) = MixedPrecisionOpTests.cases[index]
        let gemmLike = !["sdpa", "logits"].contains(name)
        let bf = run(f, name, inputs: inputs, .bfloat16, op)
        let fp = run(f, name, inputs: inputs, .float32, op)
        let pairs = bf.outputs.enumerated().map { ("\(name).out\($0.offset)", $0.element, fp.outputs[$0.offset]) }
            + bf.grads.enumerated().map { ("\(name).grad\($0.offset)", $0.element, fp.grads[$0.offset]) }
        for (key, ours, ours32) in pairs {
            let s = BF16Comparison(ours, f[key])
            if gemmLike {
                #expect(s.maxUlps <= 1, "\(key): \(s.maxUlps) bf16 ulps from torch autocast")
                #expect(s.equalShare >= 0.9, "\(key): only \(s.equalShare) bit-equal to torch")
            } else {
                #expect(s.maxRelativeToLargest <= 0x1p-6, "\(key): \(s.maxRelativeToLargest)·max|torch| from torch autocast")
                #expect(s.equalShare >= 0.4, "\(key): only \(s.equalShare) bit-equal to torch")
            }
            #expect(!isBF16Representable(f[key]) || isBF16Representable(ours), "\(key): bf16 mode left values bf16 cannot hold")
            #expect(!isBF16Representable(ours32), "\(key): float32 mode is indistinguishable from bf16")
            expectClose(ours32, f["fp32." + key], atol: 1e-5, rtol: 1e-4, "\(key) in float32 mode")
        }
    }

    @Test func roundingIsToNearestEvenWithARoundedGradient() {
        // 1 + 2^-8 is the midpoint between 1 and 1 + 2^-7: ties go to the even 1; 1 + 3·2^-8 goes up to 1 + 2^-6.
        let x = Tensor([Float(1 + 1.0 / 256), Float(1 + 3.0 / 256), -3.0e38, 1e-3])
        x.requiresGrad = true
        let y = x.rounded(to: .bfloat16)
        #expect(y.scalars(as: Float.self)[0] == 1 && y.scalars(as: Float.self)[1] == Float(1 + 1.0 / 64))
        #expect(isBF16Representable(y))
        y.backward(Tensor([Float(1 + 1.0 / 256), 1, 1, 1]))
        #expect(x.grad!.scalars(as: Float.self)[0] == 1)
        #expect(x.rounded(to: .float16).scalars(as: Float.self)[2] == -.infinity)   // beyond fp16's range
    }
}

/// `--mixed-precision auto` (the default): bf16 on a CUDA device, float32 on the CPU; the explicit values mean the
/// same on every device; anything else is refused.
@Test func autoPrecisionIsBF16OnCUDAAndFloat32OnTheCPU() {
    #expect(ComputePrecision(flag: "auto", device: .cpu) == .float32)
    #expect(ComputePrecision(flag: "auto", device: .cuda(0)) == .bfloat16 && ComputePrecision(flag: "auto", device: .cuda(3)) == .bfloat16)
    for device in [Device.cpu, .cuda(0)] {
        #expect(ComputePrecision(flag: "no", device: device) == .float32)
        #expect(ComputePrecision(flag: "fp16", device: device) == .float16)
        #expect(ComputePrecision(flag: "bf16", device: device) == .bfloat16)
        #expect(ComputePrecision(flag: "fp32", device: device) == nil && ComputePrecision(flag: "AUTO", device: device) == nil)
    }
    #expect(ComputePrecision(flag: "auto") == nil && ComputePrecision.flags == ["no", "fp16", "bf16", "auto"])
}

/// How far `ours` is from `torch` in bf16 ulps of torch's values, and the share of bit-equal elements.
struct BF16Comparison {
    let maxUlps: Double, equalShare: Double
    /// max |ours − torch| / max |torch|.
    let maxRelativeToLargest: Double
    init(_ ours: Tensor, _ torch: Tensor) {
        let a = ours.scalars(as: Float.self), b = torch.scalars(as: Float.self)
        precondition(a.count == b.count)
        var worst = 0.0, equal = 0, largest = 0.0, worstAbs = 0.0
        for i in a.indices {
            largest = max(largest, Double(abs(b[i])))
            worstAbs = max(worstAbs, Double(abs(a[i] - b[i])))
            if a[i] == b[i] { equal += 1; continue }
            let ulp = b[i] == 0 ? Double(Float.leastNormalMagnitude) : Double.exp2(Double(b[i].exponent) - 7)
            worst = max(worst, Double(abs(a[i] - b[i])) / ulp)
        }
        maxUlps = a[0..<a.count].contains(where: \.isNaN) ? .infinity : worst
        equalShare = a.isEmpty ? 1 : Double(equal) / Double(a.count)
        maxRelativeToLargest = largest == 0 ? worstAbs : worstAbs / largest
    }
}

func isBF16Representable(_ t: Tensor) -> Bool {
    t.scalars(as: Float.self).allSatisfy { $0.bitPattern & 0xFFFF == 0 || $0.isNaN }
}
