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
        let gpuBF16Gemms = EmulatedCUDA.driver.bf16Gemms
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            for c in [c32, c16] { g.run(backend, alpha: alpha, a: ta[side], b: tb[side], beta: beta, c: c[side]) }
        }
        #expect(EmulatedCUDA.driver.bf16Gemms == gpuBF16Gemms + 2, "the CUDA backend must send bf16 operands to GemmEx")
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
            let before = EmulatedCUDA.driver.bf16Gemms
            let (cpu, gpu) = GradMode.withoutGrad {
                (Autocast.run(.bfloat16) { op(inputs) }, Autocast.run(.bfloat16) { op(inputs.map { $0.to(EmulatedCUDA.device) }) }.to(.cpu))
            }
            #expect(EmulatedCUDA.driver.bf16Gemms == before + 1, "\(name): the CUDA autocast path must run one bf16 GEMM")
            #expect(gpu.dtype == .float32 && gpu.shape == cpu.shape, "\(name): \(gpu.dtype) \(gpu.shape)")
            let want = cpu.scalars(as: Float.self), got = gpu.scalars(as: Float.self)
            #expect(got == Self.widen(Self.bf16(got)), "\(name): CUDA output not bf16-representable")
            let far = zip(got, want).filter { g, c in
                let ulp = Float(bitPattern: (Swift.max(Swift.abs(c), .leastNormalMagnitude).bitPattern & 0x7f80_0000)) / 128
                return Swift.abs(g - c) > ulp
            }
            #expect(far.isEmpty, "\(name): \(far.count) of \(got.count) more than one bf16 ulp from the CPU composite, e.g. \(far.prefix(3))")
            #expect(zip(got, want).filter { $0 == $1 }.count * 10 >= got.count * 9, "\(name): under 90 % bit-equal")
        }
        // With gradients, linear's backward is bf16 GEMMs too: dx, dw, db as the composite's.
        let upstream = t([2, 3, 11])
        func grads(_ device: Device) -> [Tensor] {
            let leaves = [x, w, bias].map { t -> Tensor in let l = t.to(device); l.requiresGrad = true; return l }
            let y = Autocast.run(.bfloat16) { leaves[0].linear(leaves[1], leaves[2]) }
            (y * upstream.to(device)).sum().backward()
            return [y.detached().to(.cpu)] + leaves.map { $0.grad!.to(.cpu) }
        }
        let cpuGrads = grads(.cpu)
        let before = EmulatedCUDA.driver.bf16Gemms, gpuGrads = grads(EmulatedCUDA.device)
        #expect(EmulatedCUDA.driver.bf16Gemms == before + 3, "forward, dx and dw as bf16 GEMMs")
        for (i, name) in ["y", "dx", "dw", "db"].enumerated() {
            let want = cpuGrads[i].scalars(as: Float.self), got = gpuGrads[i].scalars(as: Float.self)
            #expect(got == Self.widen(Self.bf16(got)), "linear \(name): not bf16-representable")
            #expect(zip(got, want).allSatisfy { g, c in
                Swift.abs(g - c) <= Float(bitPattern: (Swift.max(Swift.abs(c), .leastNormalMagnitude).bitPattern & 0x7f80_0000)) / 128
            }, "linear \(name): more than one bf16 ulp from the CPU composite")
        }
        // Real bf16 tensors: bf16 × bf16 → bf16 on both backends, one rounding of the float32 sum.
        let (xb, wb) = (x.to(.bfloat16), w.to(.bfloat16))
        let cpu = xb.linear(wb).to(.float32).scalars(as: Float.self)
        let gpu = xb.to(EmulatedCUDA.device).linear(wb.to(EmulatedCUDA.device))
        #expect(gpu.dtype == .bfloat16)
        let got = gpu.to(.cpu).to(.float32).scalars(as: Float.self)
        #expect(zip(got, cpu).allSatisfy { g, c in Swift.abs(g - c) <= Float(bitPattern: (Swift.abs(c).bitPattern & 0x7f80_0000)) / 128 })
    }
}
