import Testing
import HasteTensor
@testable import HasteCUDA

/// The bf16 flash-attention kernels that stream their tiles with cp.async (`attention_flash_bf16_async_*`) give the
/// synchronous kernels' bits: output and dq, dk, dv, over partial tiles, several key and query tiles (so the stage
/// is refilled while in use), Dh ≠ Dv, and every register width. The emulator poisons a cp.async destination until
/// the issuing thread's wait, so a missing wait or barrier changes the result.
@Suite struct FlashStreamingTests {
    static func run(_ shape: (n: Int, h: Int, tq: Int, tk: Int, dh: Int, dv: Int)) -> [[UInt32]] {
        let (n, h, tq, tk, dh, dv) = shape
        let q = (Tensor.randn([n, h, tq, dh], seed: 1) * 1.7).to(EmulatedCUDA.device)
        let k = (Tensor.randn([n, h, tk, dh], seed: 2) * 1.7).to(EmulatedCUDA.device)
        let v = (Tensor.randn([n, h, tk, dv], seed: 3) * 1.7).to(EmulatedCUDA.device)
        let dout = Tensor.randn([n, h, tq, dv], seed: 4).to(EmulatedCUDA.device)
        for t in [q, k, v] { t.requiresGrad = true }
        let out = Autocast.run(.bfloat16) { Tensor.scaledDotProductAttention(q, k, v) }
        (out * dout).sum().backward()
        return [out, q.grad!, k.grad!, v.grad!].map { $0.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
    }

    @Test func streamedTilesGiveTheSynchronousKernelsBits() {
        let s = AttentionShape(batch: 2, queries: 130, keys: 150, headDim: 72, valueDim: 40)
        let words = CUDABackend.flashBF16SharedWords(s, staged: true)
        let inputs = [0, 1, 2].map { _ in Tensor.zeros([4096]).to(EmulatedCUDA.device).buffer }
        #expect(EmulatedCUDA.backend.flashBF16Async(s, words: words.dkdv, inputs), "the streaming kernels apply here")
        for shape in [(1, 2, 130, 150, 72, 40), (1, 1, 70, 129, 64, 64), (1, 1, 65, 66, 96, 88), (1, 1, 40, 70, 128, 100)] {
            CUDABackend.flashAsyncAllowed = false
            let plain = Self.run(shape)
            CUDABackend.flashAsyncAllowed = true
            let streamed = Self.run(shape)
            for (i, name) in ["out", "dq", "dk", "dv"].enumerated() { #expect(streamed[i] == plain[i], "\(name) \(shape)") }
        }
    }
}

/// The tensor-core flash kernels on bf16 operands (`attention_flash_bf16[_async]_in16_*`, `attentionTakesBF16Operands`)
/// give the bits of the float32-carrier kernels on the same bf16 values: out and lse as they are, dq, dk, dv as
/// theirs rounded to bf16 (the bf16 kernels write them rounded); streamed and
/// synchronous, every register width, partial and several tiles, Dh ≠ Dv, head dims not a multiple of 8 (no
/// streaming), odd (one element at a time), and keys past the fused-dq limit (the dq kernel).
@Suite(.serialized) struct FlashBF16OperandTests {
    static func run(_ shape: (n: Int, h: Int, tq: Int, tk: Int, dh: Int, dv: Int), bf16: Bool) -> [[UInt32]] {
        let (n, h, tq, tk, dh, dv) = shape
        let be = EmulatedCUDA.backend, dev = EmulatedCUDA.device
        func operand(_ s: [Int], _ seed: UInt64, _ scale: Double) -> Tensor {
            let x = (Tensor.randn(s, seed: seed) * scale).to(.bfloat16).to(dev)
            return bf16 ? x : x.to(.float32)
        }
        let q = operand([n, h, tq, dh], 1, 1.7), k = operand([n, h, tk, dh], 2, 1.7), v = operand([n, h, tk, dv], 3, 1.7)
        let dout = operand([n, h, tq, dv], 4, 1)
        let s = AttentionShape(batch: n * h, queries: tq, keys: tk, headDim: dh, valueDim: dv), scale = 1 / Double(dh).squareRoot()
        #expect(be.attentionTakesBF16Operands(s))
        let out = Tensor.empty([n, h, tq, dv], dtype: .float32, device: dev), lse = Tensor.empty([n, h, tq], dtype: .float32, device: dev)
        be.attentionForwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, shape: s, scale: scale,
                               precision: .bfloat16)
        let g = bf16 ? DType.bfloat16 : .float32
        let dq = Tensor.empty([n, h, tq, dh], dtype: g, device: dev), dk = Tensor.empty([n, h, tk, dh], dtype: g, device: dev)
        let dvv = Tensor.empty([n, h, tk, dv], dtype: g, device: dev)
        be.attentionBackwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, dOut: dout.buffer,
                                dq: dq.buffer, dk: dk.buffer, dv: dvv.buffer, shape: s, scale: scale, precision: .bfloat16)
        // The gradients as bf16 values either way (the carrier kernels' float32 ones rounded once).
        let grads = [dq, dk, dvv].map { $0.to(.bfloat16).to(.float32) }
        return ([out, lse] + grads).map { $0.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
    }

    /// The direct kernels (`attention_flash_bf16_direct_in16_*`: cp.async straight into double-buffered pair tiles,
    /// one barrier per streamed tile) give the staged `_async_in16_` kernels' bits, where Dh and Dv are multiples of
    /// 8: several and partial query and key tiles (both buffers in use, rows past Tq and Tk zeroed), Dh ≠ Dv, Dh not
    /// a multiple of 16 (the padding zeroed once per block), every register width, the dq kernel (300 keys), and
    /// SiT-XL/2's head (256 keys, Dh 72).
    @Test func directTilesGiveTheStagedKernelsBits() {
        let shapes = [(1, 2, 130, 150, 72, 40), (1, 1, 70, 129, 64, 64), (1, 1, 65, 300, 96, 88), (1, 1, 40, 70, 128, 104),
                      (2, 1, 70, 256, 72, 72)]
        for shape in shapes {
            let s = AttentionShape(batch: shape.0 * shape.1, queries: shape.2, keys: shape.3, headDim: shape.4, valueDim: shape.5)
            let words = CUDABackend.flashBF16SharedWords(s, direct: true)
            #expect(EmulatedCUDA.backend.flashBF16Direct(s, words: words.dkdv + 64 * 36, async: true, input16: true), "\(shape)")
            CUDABackend.flashDirectAllowed = false
            let staged = Self.run(shape, bf16: true)
            CUDABackend.flashDirectAllowed = true
            let direct = Self.run(shape, bf16: true)
            for (i, name) in ["out", "lse", "dq", "dk", "dv"].enumerated() { #expect(direct[i] == staged[i], "\(name) \(shape)") }
        }
        // Not for head dims that are not a multiple of 8, nor for float32 carriers.
        let odd = AttentionShape(batch: 1, queries: 64, keys: 64, headDim: 12, valueDim: 8)
        #expect(!EmulatedCUDA.backend.flashBF16Direct(odd, words: 0, async: true, input16: true))
        #expect(!EmulatedCUDA.backend.flashBF16Direct(AttentionShape(batch: 1, queries: 64, keys: 64, headDim: 64, valueDim: 64),
                                                       words: 0, async: true, input16: false))
    }

    @Test func bf16OperandsGiveTheCarrierKernelsBits() {
        let shapes = [(1, 2, 130, 150, 72, 40), (1, 1, 70, 129, 64, 64), (1, 1, 65, 300, 96, 88), (1, 1, 40, 70, 128, 104),
                      (2, 1, 33, 20, 12, 6), (1, 2, 17, 19, 5, 7)]
        for shape in shapes {
            for async in [true, false] {
                CUDABackend.flashAsyncAllowed = async
                let carriers = Self.run(shape, bf16: false), operands = Self.run(shape, bf16: true)
                for (i, name) in ["out", "lse", "dq", "dk", "dv"].enumerated() {
                    #expect(operands[i] == carriers[i], "\(name) \(shape) streaming allowed \(async)")
                }
            }
        }
        CUDABackend.flashAsyncAllowed = true
    }
}
