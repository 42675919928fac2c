import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// bf16 GEMMs (cuBLAS `GemmStridedBatchedEx`, float32 compute): the emulator against the CPU backend's widened
/// sgemm. bf16 → float32 is exact and products of bf16 values are exact in float32, so both sides differ only in
/// float32 summation order (bound 2(k + 2)·u·Σ|terms|, as `gemmMatchesCPU`); a bf16 C must be exactly each side's
/// own float32 result rounded to nearest even (both sides round once, after alpha and beta).
extension CUDAKernelsBTests {
    static func bf16(_ x: [Float]) -> [UInt16] { x.map { $0.bfloat16Bits } }
    static func widen(_ bits: [UInt16]) -> [Float] { bits.map { Float(bitPattern: UInt32($0) << 16) } }

    @Test(arguments: [false, true], [false, true])
    func bf16GemmMatchesCPU(transA: Bool, transB: Bool) {
        var rng = TestRNG(seed: 41 + (transA ? 2 : 0) + (transB ? 1 : 0))
        let g = GemmLayout(transA: transA, transB: transB, k: 19)
        let a = Self.bf16(rng.floats(g.countA)), b = Self.bf16(rng.floats(g.countB)), c0 = Self.bf16(rng.floats(g.countC))
        let alpha = 0.75, beta = 0.5
        let ta = Twin(a, .bfloat16), tb = Twin(b, .bfloat16)
        let c32 = Twin(Self.widen(c0)), c16 = Twin(c0, .bfloat16)
        let gpuBF16Gemms = EmulatedDriver.countingBF16Gemms {
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                for c in [c32, c16] { g.run(backend, alpha: alpha, a: ta[side], b: tb[side], beta: beta, c: c[side]) }
            }
        }.bf16Gemms
        #expect(gpuBF16Gemms == 2, "the CUDA backend must send bf16 operands to GemmEx")
        let (want, got) = c32.floats()
        let (exact, bound) = g.reference(a: Self.widen(a), b: Self.widen(b), c0: Self.widen(c0), alpha: alpha, beta: beta)
        let what = "bf16 gemm transA \(transA) transB \(transB)"
        Check.within(want, exact, bound, what + " (CPU vs float64)")
        Check.within(got, want, bound, what + " → float32")
        let cpu16 = c16.read(0, UInt16.self), gpu16 = c16.read(1, UInt16.self)
        #expect(cpu16 == Self.bf16(want), "\(what) → bf16 on the CPU: not its float32 result rounded once")
        #expect(gpu16 == Self.bf16(got), "\(what) → bf16 on the emulator: not its float32 result rounded once")
    }

    /// Autocast bf16 on CUDA (no gradient recorded) runs linear and matmul as real bf16 GEMMs; the values are the
    /// CPU composite's (operands rounded, float32 GEMM, output rounded) up to summation order: equal, or one bf16 ulp
    /// apart where the float32 sums straddle a rounding midpoint.
    @Test func autocastGemmsOnCUDAMatchTheCPUComposite() {
        var rng = TestRNG(seed: 77)
        func t(_ shape: [Int]) -> Tensor { Tensor(rng.floats(shape.reduce(1, *)), shape: shape) }
        let x = t([2, 3, 13]), w = t([11, 13]), bias = t([11]), p = t([2, 4, 13, 9]), q = t([2, 4, 6, 13])
        let ops: [(String, [Tensor], ([Tensor]) -> Tensor)] = [
            ("linear+bias", [x, w, bias], { $0[0].linear($0[1], $0[2]) }),
            ("linear", [x, w], { $0[0].linear($0[1]) }),
            ("matmul pᵀ·qᵀ batched", [p, q], { $0[0].transposed(-1, -2).matmul($0[1].transposed(-1, -2)) }),
            ("matmul 3-D · 2-D", [x, w], { $0[0].matmul($0[1].transposed(0, 1)) }),
        ]
        for (name, inputs, op) in ops {
            let cpu = GradMode.withoutGrad { Autocast.run(.bfloat16) { op(inputs) } }
            let (gpu, gemms) = EmulatedDriver.countingBF16Gemms {
                GradMode.withoutGrad { Autocast.run(.bfloat16) { op(inputs.map { $0.to(EmulatedCUDA.device) }) }.to(.cpu) }
            }
            #expect(gemms == 1, "\(name): the CUDA autocast path must run one bf16 GEMM, ran \(gemms)")
            Self.expectBF16Close(gpu, cpu, name)
        }
        // With gradients, linear's backward is bf16 GEMMs too: dx, dw, db as the composite's.
        Self.expectAutocastGradients("linear", [x, w, bias], bf16Gemms: 3) { $0[0].linear($0[1], $0[2]) }
        // Real bf16 tensors: bf16 × bf16 → bf16 on both backends, one rounding of the float32 sum.
        let (xb, wb) = (x.to(.bfloat16), w.to(.bfloat16))
        let cpu = xb.linear(wb).to(.float32).scalars(as: Float.self)
        let gpu = xb.to(EmulatedCUDA.device).linear(wb.to(EmulatedCUDA.device))
        #expect(gpu.dtype == .bfloat16)
        let got = gpu.to(.cpu).to(.float32).scalars(as: Float.self)
        #expect(zip(got, cpu).allSatisfy { g, c in Swift.abs(g - c) <= Self.bf16Ulp(c) })
    }

    /// One bf16 ulp at |c| (at least the smallest normal's).
    static func bf16Ulp(_ c: Float) -> Float {
        Float(bitPattern: Swift.max(Swift.abs(c), .leastNormalMagnitude).bitPattern & 0x7f80_0000) / 128
    }

    /// A CUDA autocast result against the CPU composite's: float32 carriers of bf16 values, each within one bf16 ulp
    /// (the two float32 sums straddle a rounding midpoint) and at least 90 % of them bit-equal.
    static func expectBF16Close(_ gpu: Tensor, _ cpu: Tensor, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(gpu.dtype == .float32 && gpu.shape == cpu.shape, "\(name): \(gpu.dtype) \(gpu.shape) vs \(cpu.shape)",
                sourceLocation: sourceLocation)
        let want = cpu.scalars(as: Float.self), got = gpu.scalars(as: Float.self)
        #expect(got == widen(bf16(got)), "\(name): CUDA output not bf16-representable", sourceLocation: sourceLocation)
        let far = zip(got, want).filter { g, c in Swift.abs(g - c) > bf16Ulp(c) }
        #expect(far.isEmpty, "\(name): \(far.count) of \(got.count) more than one bf16 ulp from the CPU composite, e.g. \(far.prefix(3))",
                sourceLocation: sourceLocation)
        let equal = zip(got, want).filter { $0 == $1 }.count
        #expect(equal * 10 >= got.count * 9, "\(name): \(equal) of \(got.count) bit-equal (under 90 %)", sourceLocation: sourceLocation)
    }

    /// `op` under Autocast bf16 with every input a leaf that requires grad, back-propagating Σ y·upstream (upstream
    /// float32, not bf16-representable: the backward must round it): on the CPU (the composite) and on the emulated
    /// device, where it must run exactly `bf16Gemms` bf16 GEMMs (a fallback to float32 GEMMs runs none). Compares
    /// y and every gradient with `expectBF16Close`.
    static func expectAutocastGradients(_ name: String, _ inputs: [Tensor], bf16Gemms: Int, _ op: ([Tensor]) -> Tensor,
                                        sourceLocation: SourceLocation = #_sourceLocation) {
        var rng = TestRNG(seed: 78)
        let shape = GradMode.withoutGrad { Autocast.run(.bfloat16) { op(inputs) } }.shape
        let upstream = Tensor(rng.floats(shape.reduce(1, *)), shape: shape)
        func run(_ device: Device) -> [Tensor] {
            let leaves = inputs.map { t -> Tensor in let l = t.to(device).detached(); l.requiresGrad = true; return l }
            let y = Autocast.run(.bfloat16) { op(leaves) }
            (y * upstream.to(device)).sum().backward()
            return [y.detached().to(.cpu)] + leaves.map { $0.grad!.to(.cpu) }
        }
        let cpu = run(.cpu)
        let (gpu, gemms) = EmulatedDriver.countingBF16Gemms { run(EmulatedCUDA.device) }
        #expect(gemms == bf16Gemms, "\(name): \(gemms) bf16 GEMMs forward and backward, expected \(bf16Gemms)",
                sourceLocation: sourceLocation)
        for (i, (g, c)) in zip(gpu, cpu).enumerated() {
            expectBF16Close(g, c, "\(name) " + (i == 0 ? "y" : "d(input \(i - 1))"), sourceLocation: sourceLocation)
        }
    }
}

/// The one-pass kernels that stand in for a widened copy (issue 12: fewer and smaller tensors per bf16 step):
/// `roundThrough` is a cast to bf16/fp16 and back, and `sumWidened` the float32 sum of a widened bf16 tensor, bit
/// for bit, on the CPU and on the emulated device.
extension CUDAKernelsBTests {
    @Test func roundThroughIsTheTwoCastsBitwise() {
        var rng = TestRNG(seed: 71)
        let specials: [Float] = [0, -0.0, 1, -1, .infinity, -.infinity, .nan, Float(bitPattern: 0x7f80_0001), Float(bitPattern: 0xffc0_1234),
                                 65504, 65520, -65536, 1e-8, -3e-5, Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000),
                                 .greatestFiniteMagnitude, .leastNonzeroMagnitude, Float(bitPattern: 0x0040_0000)]
        let all = specials + rng.floats(1000).map { $0 * 300 } + rng.floats(200).map { $0 * 1e-6 }
        // 1219 values (one-element kernels) and 1216 (four at a time on the GPU: round_through_f32_v4, cast_*_v4).
        for values in [all, Array(all.prefix(1216))] {
            for low in [DType.bfloat16, .float16] {
                var cpuBits: [UInt32] = []
                for device in [Device.cpu, EmulatedCUDA.device] {
                    let x = Tensor(values, shape: [values.count], device: device)
                    let twoCasts = x.to(low).to(.float32).scalars(as: Float.self).map(\.bitPattern)
                    let onePass = x.roundedValues(low).scalars(as: Float.self).map(\.bitPattern)
                    #expect(onePass == twoCasts, "roundThrough to \(low) on \(device), \(values.count) values")
                    if device == .cpu { cpuBits = onePass } else { #expect(onePass == cpuBits, "\(low): device vs CPU") }
                }
            }
        }
    }

    /// `roundedValues(low, shiftedBy:)` (Autocast's 1 + scale for adaLN) is the three ops it replaces — a float32 add,
    /// the round trip, a float32 subtract — bit for bit on the CPU and the emulated device: ties at 1 + 2⁻⁸ (bf16)
    /// and 1 + 2⁻¹¹ (fp16) around the shift, −1 (0 after the add), signed zeros, specials, huge and tiny values.
    @Test func shiftedRoundThroughIsTheComposite() {
        var rng = TestRNG(seed: 72)
        let specials: [Float] = [0, -0.0, 1, -1, -2, .infinity, -.infinity, .nan, 0x1p-8, -0x1p-8, 0x1.8p-8, 0x1p-11, 0x1.8p-11,
                                 3e38, -3e38, 1e-30, -1e-30, 65504, Float(bitPattern: 0x3f80_8000), .leastNonzeroMagnitude]
        let all = specials + rng.floats(1000).map { $0 * 0.05 } + rng.floats(200).map { $0 * 300 }
        for values in [all, Array(all.prefix(1216))] {                  // one-element and four-element kernels
            for low in [DType.bfloat16, .float16] {
                for shift: Float in [1, 0.5, -3] {
                    var cpuBits: [UInt32] = []
                    for device in [Device.cpu, EmulatedCUDA.device] {
                        let x = Tensor(values, shape: [values.count], device: device)
                        let composite = noGrad { ((x + Double(shift)).roundedValues(low) - Double(shift)) }.scalars(as: Float.self)
                        let onePass = x.roundedValues(low, shiftedBy: shift).scalars(as: Float.self)
                        func same(_ a: Float, _ b: Float) -> Bool { a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }
                        let differing = zip(onePass, composite).filter { !same($0, $1) }.count
                        #expect(differing == 0, "\(low) shift \(shift) on \(device), \(values.count) values: \(differing) differ")
                        let bits = onePass.map { $0.isNaN ? UInt32(0x7fc0_0000) : $0.bitPattern }
                        if device == .cpu { cpuBits = bits } else { #expect(bits == cpuBits, "\(low) shift \(shift): device vs CPU") }
                    }
                }
            }
        }
    }

    @Test(arguments: [[3, 70, 5], [1, 5000, 3], [40, 3000], [2, 7, 33], [64, 256, 40]])
    func sumWidenedIsTheFloat32SumOfTheWidenedValues(shape: [Int]) {
        var rng = TestRNG(seed: 73)
        let bits = Self.bf16(rng.floats(shape.reduce(1, *)))
        let axes = shape.count == 2 ? [0] : [1]
        for device in [Device.cpu, EmulatedCUDA.device] {
            let x = Tensor(Self.widen(bits), shape: shape, device: device).to(.bfloat16)   // exact: bf16 values
            let want = x.to(.float32).sum(axes: axes).scalars(as: Float.self).map(\.bitPattern)
            let got = x.sumWidened(axes: axes)
            #expect(got.dtype == .float32 && got.scalars(as: Float.self).map(\.bitPattern) == want, "\(shape) over \(axes) on \(device)")
        }
    }
}
