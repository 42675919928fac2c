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
