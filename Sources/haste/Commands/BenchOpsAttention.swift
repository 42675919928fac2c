import HasteModels
import HasteNN
import HasteTensor

/// Attention and whole-block rows of `haste bench ops` (same shapes as BenchOps.swift: N 4, T 256, D 768,
/// 12 heads of 64). Work is napkin FLOPs of the GEMMs only: softmax, norms and elementwise passes are extra.
extension OpBenchmarks {
    static let headDim = 64

    /// SDPA and the explicit logits path on q, k, v [N, H, T, Dh]. One attention GEMM (q·kᵀ or P·v) is
    /// 2·N·H·T²·Dh FLOPs: the forward has two, the backward four (dv, dP, dq, dk).
    static func attention(seed: UInt64, device: Device) -> [BenchCase] {
        let qkv = [n, heads, tokens, headDim]
        let gemm = 2.0 * Double(n * heads * tokens * tokens * headDim)
        func inputs(grad: Bool) -> (Tensor, Tensor, Tensor, Tensor) {
            let q = Tensor.randn(qkv, seed: seed, device: device), k = Tensor.randn(qkv, seed: seed + 1, device: device), v = Tensor.randn(qkv, seed: seed + 2, device: device)
            for t in [q, k, v] { t.requiresGrad = grad }
            return (q, k, v, Tensor.randn(qkv, seed: seed + 3, device: device))
        }
        return [
            BenchCase(op: "attention fwd", shape: "q,k,v \(qkv)", work: .flops(2 * gemm)) {
                let (q, k, v, _) = inputs(grad: false)
                return { _ = Tensor.scaledDotProductAttention(q, k, v) }
            },
            BenchCase(op: "attention fwd+bwd", shape: "q,k,v \(qkv)", work: .flops(6 * gemm)) {
                let (q, k, v, dy) = inputs(grad: true)
                return { _ = gradients(of: Tensor.scaledDotProductAttention(q, k, v), wrt: [q, k, v], seed: dy) }
            },
            BenchCase(op: "attentionWithLogits fwd", shape: "q,k,v \(qkv)", work: .flops(2 * gemm)) {
                let (q, k, v, _) = inputs(grad: false)
                return { _ = Tensor.attentionWithLogits(q, k, v) }
            },
            // The gradient enters through the output only (as the SDPA row); in training the alignment loss
            // also seeds the logits, which `haste bench train` covers.
            BenchCase(op: "attentionWithLogits fwd+bwd", shape: "q,k,v \(qkv)", work: .flops(6 * gemm)) {
                let (q, k, v, dy) = inputs(grad: true)
                return { _ = gradients(of: Tensor.attentionWithLogits(q, k, v).output, wrt: [q, k, v], seed: dy) }
            },
        ] + packedQKV(seed: seed, device: device)
    }

    /// `Tensor.packedQKVAttention` (heads read in place from a fused qkv projection) at the shapes of the HASTE
    /// training step: the DINOv2-B/14 teacher (batch 16, 257 tokens at 224 px, 12 heads; blocks 8…11 also return
    /// their logits) and the SiT-S/2 student (batch 16, 256 tokens, 6 heads; forward and backward, which recomputes
    /// the probabilities; counted as the `attention` rows count theirs: two GEMMs forward, four backward, the
    /// recomputed product not). Rows that the device cannot run this way are left out.
    static func packedQKV(seed: UInt64, device: Device) -> [BenchCase] {
        func rows(_ name: String, batch: Int, tokens t: Int, heads h: Int, logits: Bool, backward: Bool) -> BenchCase? {
            let qkv = [batch, t, 3 * h * headDim], gemm = 2.0 * Double(batch * h * t * t * headDim)
            guard device.backend.packedQKVAttentionRuns(batch: batch, tokens: t, heads: h, headDim: headDim,
                                                       scale: 1 / Double(headDim).squareRoot(), logits: logits,
                                                       gradient: backward) else { return nil }
            return BenchCase(op: name, shape: "qkv \(qkv), \(h) heads", work: .flops((backward ? 6 : 2) * gemm)) {
                let x = Tensor.randn(qkv, seed: seed, device: device)
                if !backward { return { _ = Tensor.packedQKVAttention(x, heads: h, logits: logits) } }
                x.requiresGrad = true
                let dy = Tensor.randn([batch, t, h * headDim], seed: seed + 1, device: device)
                return { _ = gradients(of: Tensor.packedQKVAttention(x, heads: h, logits: false)!.output, wrt: [x], seed: dy) }
            }
        }
        return [rows("packedQKV fwd DINOv2-B", batch: 16, tokens: 257, heads: 12, logits: false, backward: false),
                rows("packedQKV+logits fwd DINOv2-B", batch: 16, tokens: 257, heads: 12, logits: true, backward: false),
                rows("packedQKV fwd SiT-S/2", batch: 16, tokens: 256, heads: 6, logits: false, backward: false),
                rows("packedQKV fwd+bwd SiT-S/2", batch: 16, tokens: 256, heads: 6, logits: false, backward: true)]
            .compactMap { $0 }
    }

    /// One SiT-B/2 block (`SiTBlock`, adaLN-Zero) on x [N, T, D], c [N, D], with the gradients of every
    /// parameter and of x and c. FLOPs: the four token linears (qkv 3D², proj D², fc1 4D², fc2 4D²: 24·N·T·D²),
    /// the attention GEMMs (4·N·T²·D) and adaLN (12·N·D²), forward; fwd+bwd = 3×. "+logits" runs the explicit
    /// path that returns the logits (what the aligned blocks do; the torch reference does it in every block).
    static func block(seed: UInt64, device: Device) -> [BenchCase] {
        let d = Double(hidden), m = Double(n * tokens)
        let forward = 24 * m * d * d + 4 * Double(n * tokens * tokens) * d + 12 * Double(n) * d * d
        let shape = "x [\(n), \(tokens), \(hidden)], c [\(n), \(hidden)]"
        return [false, true].map { logits in
            BenchCase(op: logits ? "SiT-B/2 block+logits fwd+bwd" : "SiT-B/2 block fwd+bwd", shape: shape,
                      work: .flops(3 * forward)) {
                let (block, params) = randomSiTBlock(seed: seed, device: device)
                let x = Tensor.randn([n, tokens, hidden], seed: seed + 1000, device: device), c = Tensor.randn([n, hidden], seed: seed + 1001, device: device)
                x.requiresGrad = true
                c.requiresGrad = true
                let dy = Tensor.randn([n, tokens, hidden], seed: seed + 1002, device: device)
                return { _ = gradients(of: block(x, c, logits: logits).0, wrt: params + [x, c], seed: dy) }
            }
        }
    }

    /// A SiT-B/2 block whose parameters are all small random values: the default init zeroes adaLN, which
    /// would leave the gates at zero (same work, but not the state a trained block is in).
    static func randomSiTBlock(seed: UInt64, device: Device = .cpu) -> (SiTBlock, [Tensor]) {
        let store = ParameterStore(seed: seed)
        let block = SiTBlock(store.root, hidden: hidden, heads: heads, mlpRatio: 4, qkNorm: false)
        store.finalize()
        store.move(to: device)
        let params = store.parameters.map(\.tensor)
        noGrad {
            for (i, p) in params.enumerated() { p.copyValues(from: Tensor.randn(p.shape, seed: seed + 100 + UInt64(i)) * 0.02) }
        }
        return (block, params)
    }
}
