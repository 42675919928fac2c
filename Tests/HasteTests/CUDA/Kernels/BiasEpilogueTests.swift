import Testing
import Foundation
@testable import HasteTensor
@testable import HasteCUDA
import HasteModels

/// A linear layer's bias on CUDA is added by its GEMM's epilogue (`GPUDriver.gemm(_:epilogue:)` with `.bias`, cuBLASLt on a GPU):
/// the same bits as the composite (the bias copied into every row, then the GEMM with beta 1), which runs where the
/// driver turns the GEMM down; float32 and Autocast bf16, forward and gradients, and a whole SiT training step.
@Suite(.serialized) struct BiasEpilogueTests {
    static let device = EmulatedCUDA.device

    /// Runs `body` with the emulator's bias GEMMs counted, or refused (the driver without them); the count with it.
    /// The other epilogues are turned down in both cases (GemmEpilogueTests has them), so the bias epilogue alone
    /// is compared with the composite.
    static func counting<R>(refused: Bool, _ body: () throws -> R) rethrows -> (R, Int) {
        let tally = BiasGemmTally(refuses: refused, refusedLabels: ["+gelu+bias", "+gelu+bias+aux", "+dgelu", "+dgelu+bgrad", "+bgradb"])
        let r = try EmulatedDriver.$biasGemmTally.withValue(tally) { try body() }
        return (r, tally.count)
    }


    /// y = x·Wᵀ + b and the gradients of x, W, b, as bit patterns.
    static func linear(_ precision: ComputePrecision, rows: Int, inF: Int, outF: Int, seed: UInt64) -> [[UInt32]] {
        let x = Tensor.randn([2, rows, inF], seed: seed).to(device), w = (Tensor.randn([outF, inF], seed: seed + 1) * 0.3).to(device)
        let b = Tensor.randn([outF], seed: seed + 2).to(device), up = Tensor.randn([2, rows, outF], seed: seed + 3).to(device)
        for p in [x, w, b] { p.requiresGrad = true }
        let y = precision == .float32 ? x.linear(w, b) : Autocast.run(.bfloat16) { x.linear(w, b) }
        (y.to(.float32) * up).sum().backward()
        return [floatBits(y.detached())] + [x, w, b].map { floatBits($0.grad!) }
    }

    @Test(arguments: [ComputePrecision.float32, .bfloat16])
    func linearAddsItsBiasInTheGEMM(precision: ComputePrecision) {
        // Sizes a multiple of 8 and odd ones (each a different lda/ldc and alignment in cuBLASLt's terms).
        for (rows, inF, outF) in [(5, 24, 16), (3, 17, 11)] {
            let what = "\(precision) rows \(rows) in \(inF) out \(outF)"
            let (epilogue, ran) = Self.counting(refused: false) { Self.linear(precision, rows: rows, inF: inF, outF: outF, seed: 3) }
            let (composite, refusedRan) = Self.counting(refused: true) { Self.linear(precision, rows: rows, inF: inF, outF: outF, seed: 3) }
            #expect(ran == 1 && refusedRan == 0, "\(what): bias GEMMs \(ran) and, refused, \(refusedRan)")
            let same = epilogue == composite
            #expect(same, "\(what): the bias epilogue's bits are the composite's")
            // HASTE_GEMM_BIAS_EPILOGUE=0 (the backend's switch) asks no driver.
            let (switched, switchedRan) = CUDABackend.$biasEpilogueAllowed.withValue(false) {
                Self.counting(refused: false) { Self.linear(precision, rows: rows, inF: inF, outF: outF, seed: 3) }
            }
            let switchedSame = switched == composite
            #expect(switchedRan == 0 && switchedSame, "\(what): with the switch off")
        }
    }

    /// The bias lands on the output features (cuBLAS's rows of D), once: against the sums in double precision.
    @Test func biasIsAddedPerOutputFeature() {
        let (rows, inF, outF) = (6, 8, 5)
        let x = Tensor.randn([rows, inF], seed: 41), w = Tensor.randn([outF, inF], seed: 42), b = Tensor.randn([outF], seed: 43) * 10
        let (y, ran) = Self.counting(refused: false) { x.to(Self.device).linear(w.to(Self.device), b.to(Self.device)).to(.cpu) }
        #expect(ran == 1)
        let xs = x.scalars(as: Float.self), ws = w.scalars(as: Float.self), bs = b.scalars(as: Float.self), ys = y.scalars(as: Float.self)
        for r in 0..<rows {
            for o in 0..<outF {
                var want = Double(bs[o])
                for i in 0..<inF { want += Double(xs[r * inF + i]) * Double(ws[o * inF + i]) }
                #expect(abs(Double(ys[r * outF + o]) - want) <= 1e-5 * (1 + abs(want)), "y[\(r), \(o)] = \(ys[r * outF + o]), want \(want)")
            }
        }
    }

    /// A SiT training step under Autocast bf16 (every linear with a bias: adaLN, qkv, proj, MLP, timestep MLP, final
    /// layer): the same loss gradients with the bias GEMMs as with the composite, and the GEMMs were asked for.
    @Test func sitStepIsTheCompositeBitForBit() throws {
        let sit = try tinyGenerationSiT()
        sit.store.move(to: Self.device)
        let x = Tensor.randn([2, 1, 8, 8], seed: 31).to(Self.device), up = Tensor.randn([2, 1, 8, 8], seed: 32).to(Self.device)
        let t = Tensor([Float(0.2), 0.7], shape: [2]).to(Self.device), y = Tensor([Int64(0), 3]).to(Self.device)
        func grads() -> [[UInt32]] {
            sit.store.setRequiresGrad(true)
            defer { sit.store.setRequiresGrad(false) }
            let out = Autocast.run(.bfloat16) { sit(x, t: t, y: y) }
            return sit.store.gradients(of: (out.velocity * up).sum()).map { floatBits($0.1) }
        }
        let (epilogue, ran) = Self.counting(refused: false) { grads() }
        let (composite, refusedRan) = Self.counting(refused: true) { grads() }
        // Per block adaLN, qkv, proj, fc1, fc2; the patch embedding; the timestep MLP's two; the final layer's adaLN
        // and linear.
        let blocks = sit.config.depth
        #expect(ran == 5 * blocks + 5 && refusedRan == 0, "bias GEMMs \(ran) for \(blocks) blocks")
        let differing = zip(epilogue, composite).enumerated().filter { $0.1.0 != $0.1.1 }.map { sit.store.keys[$0.0] }
        #expect(epilogue.count == composite.count && differing.isEmpty, "gradients differing: \(differing)")
    }
}
