import Foundation
import HasteTensor

/// Linear layers whose elementwise neighbours ride in the GEMM's epilogue (cuBLASLt,
/// `GPUDriver.gemm(_:epilogue:)`), as Transformer Engine runs its MLPs: on bf16, fc1's GELU(tanh) after the bias
/// (`GELU_AUX_BIAS`, or `GELU_BIAS` without a gradient), its gradient with fc1's bias gradient on fc2's
/// input-gradient GEMM (`DGELU_BGRAD`), and a bias gradient on the weight-gradient GEMM (`BGRADB`); on float32
/// where TF32 is allowed, `GELU_BIAS` for sampling. Each saves a pass over a [rows, features] bf16 tensor or two:
/// for SiT-XL/2 at batch 64 the GELU forward and backward kernels (12.5 ms of the H100 step of 12-06) and the bias
/// gradients' column sums (4.5 ms). The values differ from the kernels' by where bf16 rounding happens: GELU reads
/// the float32 pre-activation, not its rounded copy, and dh = (dy·W)·GELU′(h) does not round dy·W first.
///
/// `HASTE_GEMM_GELU_EPILOGUE=0` and `HASTE_GEMM_BGRAD_EPILOGUE=0` turn each family off (the kernels then run, as
/// where cuBLASLt turns a problem down); tests switch them per task (`$geluEpilogueAllowed`, `$biasGradientEpilogueAllowed`).
extension CUDABackend {
    @TaskLocal static var geluEpilogueAllowed = ProcessInfo.processInfo.environment["HASTE_GEMM_GELU_EPILOGUE"] != "0"
    @TaskLocal static var biasGradientEpilogueAllowed = ProcessInfo.processInfo.environment["HASTE_GEMM_BGRAD_EPILOGUE"] != "0"

    public var gemmEpilogues: GemmEpilogueSupport {
        var offered: GemmEpilogueSupport = []
        if CUDABackend.geluEpilogueAllowed { offered.insert(.geluTanh) }
        if CUDABackend.biasGradientEpilogueAllowed { offered.insert(.biasGradient) }
        return offered
    }

    /// Every buffer bf16, every size positive and within cuBLASLt's 32-bit ints.
    private static func bf16Problem(_ buffers: [Buffer?], _ sizes: [Int]) -> Bool {
        buffers.allSatisfy { $0 == nil || $0!.dtype == .bfloat16 } && sizes.allSatisfy { $0 > 0 && $0 <= Int(Int32.max) }
    }

    /// bf16, or float32 without a pre-activation where TF32 is allowed (sampling in float32: the GEMM is TF32 as
    /// the plain one would be, and the epilogue's GELU, whose float32 accuracy cuBLASLt does not state, stays within
    /// that class; strict float32 keeps the kernels).
    public func linearBiasGeluTanh(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer,
                                   preActivation: Buffer?, y: Buffer) -> Bool {
        let tf32 = preActivation == nil && driver.allowTF32 && [x, weight, bias, y].allSatisfy { $0.dtype == .float32 }
            && [rows, inF, outF].allSatisfy { $0 > 0 && $0 <= Int(Int32.max) }
        // The GELU input matrix's leading dimension (outF) must be a multiple of 8 for cuBLASLt.
        guard CUDABackend.geluEpilogueAllowed, tf32 || Self.bf16Problem([x, weight, bias, preActivation, y], [rows, inF, outF]),
              preActivation == nil || outF % 8 == 0 else { return false }
        let dtype: DType = tf32 ? .float32 : .bfloat16
        return driver.gemm(GemmDescriptor(transA: true, transB: false, m: outF, n: rows, k: inF, alpha: 1, beta: 0,
                                          a: address(weight), lda: inF, strideA: 0, b: address(x), ldb: inF, strideB: 0,
                                          c: address(y), ldc: outF, strideC: 0, batch: 1, inputs: dtype, output: dtype),
                           epilogue: .geluBias(bias: address(bias), preActivation: preActivation.map(address)))
    }

    public func geluTanhInputGradient(rows: Int, outF: Int, hidden: Int, dy: Buffer, weight: Buffer, preActivation: Buffer,
                                      dh: Buffer, biasGradient: Buffer?) -> Bool {
        guard CUDABackend.geluEpilogueAllowed, hidden % 8 == 0,
              Self.bf16Problem([dy, weight, preActivation, dh, biasGradient], [rows, outF, hidden]) else { return false }
        // Row-major dh = dy·W is column-major dhᵀ [hidden × rows] = Wᵀ·dyᵀ, W read as stored.
        return driver.gemm(GemmDescriptor(transA: false, transB: false, m: hidden, n: rows, k: outF, alpha: 1, beta: 0,
                                          a: address(weight), lda: hidden, strideA: 0, b: address(dy), ldb: outF, strideB: 0,
                                          c: address(dh), ldc: hidden, strideC: 0, batch: 1, inputs: .bfloat16, output: .bfloat16),
                           epilogue: .dgelu(preActivation: address(preActivation), biasGradient: biasGradient.map(address)))
    }

    public func linearWeightAndBiasGradients(rows: Int, inF: Int, outF: Int, dy: Buffer, x: Buffer, dw: Buffer,
                                             db: Buffer) -> Bool {
        guard CUDABackend.biasGradientEpilogueAllowed, Self.bf16Problem([dy, x, dw, db], [rows, inF, outF]) else { return false }
        // Row-major dW = dyᵀ·x is column-major dWᵀ [inF × outF] = xᵀ·dy: B = dy, transposed, whose sums over k
        // (the rows) are the bias gradient.
        return driver.gemm(GemmDescriptor(transA: false, transB: true, m: inF, n: outF, k: rows, alpha: 1, beta: 0,
                                          a: address(x), lda: inF, strideA: 0, b: address(dy), ldb: outF, strideB: 0,
                                          c: address(dw), ldc: inF, strideC: 0, batch: 1, inputs: .bfloat16, output: .bfloat16),
                           epilogue: .biasGradientB(address(db)))
    }
}
