import COpenBLAS
import HasteNN
import HasteTensor

/// The rows of `haste bench ops`, at SiT-B/2 training shapes: batch N = 4, T = 256 tokens, hidden D = 768,
/// MLP hidden 4·D = 3072, 12 heads of 64. To add a row, append a `BenchCase` here (or in
/// BenchOpsAttention.swift) and the row of the same name to Scripts/bench_torch.py.
enum OpBenchmarks {
    static let n = 4, tokens = 256, hidden = 768, mlpHidden = 3072, heads = 12
    /// One AdamW step over SiT-B/2's parameter count (130.5 M): reads p, g, m, v and writes p, m, v (28 B each).
    static let adamCount = 130_500_000

    /// Inputs are made on `device`; the raw cblas row exists on the CPU only.
    static func cases(seed: UInt64, device: Device = .cpu) -> [BenchCase] {
        gemmAndElementwise(seed: seed, device: device) + (device == .cpu ? gemmShapes(seed: seed) : [])
            + normAndSoftmax(seed: seed, device: device)
            + attention(seed: seed, device: device) + block(seed: seed, device: device)
            + convolutions(seed: seed, device: device) + (device == .cpu ? sampler(seed: seed) : [])
    }

    static func gemmAndElementwise(seed: UInt64, device: Device) -> [BenchCase] {
        let rows = n * tokens
        let gemmFlops = 2.0 * Double(rows * hidden * mlpHidden)
        let act = [n, tokens, mlpHidden], res = [n, tokens, hidden]
        let actCount = Double(act.reduce(1, *)), resCount = Double(res.reduce(1, *))
        return (device != .cpu ? [] : [
            BenchCase(op: "sgemm (cblas)", shape: "\(rows)x\(hidden) · (\(mlpHidden)x\(hidden))ᵀ", work: .flops(gemmFlops)) {
                rawSgemm(m: rows, n: mlpHidden, k: hidden, seed: seed)
            },
            BenchCase(op: "adamw step", shape: "\(adamCount) parameters", work: .bytes(28 * Double(adamCount))) {
                let store = ParameterStore(seed: seed)
                let p = store.root.parameter("w", [adamCount / 1000, 1000], .normal(std: 0.02))
                store.finalize()
                noGrad { p.grad!.copyValues(from: Tensor.randn(p.shape, seed: seed + 1)) }
                let optimizer = AdamW(store: store, lr: 1e-4, weightDecay: 0)
                return { optimizer.step() }
            }]) + [
            BenchCase(op: "linear fwd", shape: "\(res) → \(mlpHidden)", work: .flops(gemmFlops)) {
                let (x, w, b) = linearInputs(seed: seed, grad: false, device: device)
                return { _ = x.linear(w, b) }
            },
            BenchCase(op: "linear fwd+bwd", shape: "\(res) → \(mlpHidden)", work: .flops(3 * gemmFlops)) {
                let (x, w, b) = linearInputs(seed: seed, grad: true, device: device)
                let dy = Tensor.randn(act, seed: seed + 3, device: device)
                return { _ = gradients(of: x.linear(w, b), wrt: [x, w, b], seed: dy) }
            },
            BenchCase(op: "geluTanh fwd", shape: "\(act)", work: .bytes(8 * actCount)) {
                let x = Tensor.randn(act, seed: seed, device: device)
                return { _ = x.geluTanh() }
            },
            // forward reads x, writes y; backward reads x and dy, writes dx
            BenchCase(op: "geluTanh fwd+bwd", shape: "\(act)", work: .bytes(20 * actCount)) {
                let x = Tensor.randn(act, seed: seed, device: device)
                x.requiresGrad = true
                let dy = Tensor.randn(act, seed: seed + 1, device: device)
                return { _ = gradients(of: x.geluTanh(), wrt: [x], seed: dy) }
            },
            BenchCase(op: "add", shape: "\(res)", work: .bytes(12 * resCount)) {
                let a = Tensor.randn(res, seed: seed, device: device), b = Tensor.randn(res, seed: seed + 1, device: device)
                return { _ = a + b }
            },
            BenchCase(op: "mul", shape: "\(res)", work: .bytes(12 * resCount)) {
                let a = Tensor.randn(res, seed: seed, device: device), b = Tensor.randn(res, seed: seed + 1, device: device)
                return { _ = a * b }
            },
        ]
    }

    /// layerNorm on the residual stream [N, T, D] (affine, eps 1e-6); softmax over the last axis of attention
    /// probabilities [N, H, T, T]. Bytes: forward reads x, writes y; backward reads x (or y) and dy, writes dx.
    static func normAndSoftmax(seed: UInt64, device: Device) -> [BenchCase] {
        let res = [n, tokens, hidden], probs = [n, heads, tokens, tokens]
        let resCount = Double(res.reduce(1, *)), probCount = Double(probs.reduce(1, *))
        func affine(grad: Bool) -> (Tensor, Tensor, Tensor) {
            let x = Tensor.randn(res, seed: seed, device: device)
            let w = Tensor.randn([hidden], seed: seed + 1, device: device) * 0.1 + 1, b = Tensor.randn([hidden], seed: seed + 2, device: device) * 0.1
            for t in [x, w, b] { t.requiresGrad = grad }
            return (x, w, b)
        }
        return [
            BenchCase(op: "layerNorm fwd", shape: "\(res)", work: .bytes(8 * resCount)) {
                let (x, w, b) = affine(grad: false)
                return { _ = x.layerNorm(weight: w, bias: b, eps: 1e-6) }
            },
            BenchCase(op: "layerNorm fwd+bwd", shape: "\(res)", work: .bytes(20 * resCount)) {
                let (x, w, b) = affine(grad: true)
                let dy = Tensor.randn(res, seed: seed + 3, device: device)
                return { _ = gradients(of: x.layerNorm(weight: w, bias: b, eps: 1e-6), wrt: [x, w, b], seed: dy) }
            },
            BenchCase(op: "softmax fwd", shape: "\(probs)", work: .bytes(8 * probCount)) {
                let x = Tensor.randn(probs, seed: seed, device: device)
                return { _ = x.softmax(axis: -1) }
            },
            BenchCase(op: "softmax fwd+bwd", shape: "\(probs)", work: .bytes(20 * probCount)) {
                let x = Tensor.randn(probs, seed: seed, device: device)
                x.requiresGrad = true
                let dy = Tensor.randn(probs, seed: seed + 1, device: device)
                return { _ = gradients(of: x.softmax(axis: -1), wrt: [x], seed: dy) }
            },
        ]
    }

    /// x [N, T, D], weight [4D, D], bias [4D], as `nn.Linear(768, 3072)` sees them.
    private static func linearInputs(seed: UInt64, grad: Bool, device: Device) -> (Tensor, Tensor, Tensor) {
        let x = Tensor.randn([n, tokens, hidden], seed: seed, device: device)
        let w = Tensor.randn([mlpHidden, hidden], seed: seed + 1, device: device) * 0.02
        let b = Tensor.randn([mlpHidden], seed: seed + 2, device: device) * 0.02
        for t in [x, w, b] { t.requiresGrad = grad }
        return (x, w, b)
    }

    /// The float32 GEMMs of a SiT-B/2 batch-4 step (M = 1024 tokens), through CPUBackend.gemm as linear layers
    /// call it (haste's AVX-512 kernel where the CPU has it; OpenBLAS with HASTE_CPU_KERNELS=portable):
    /// forward y = x·Wᵀ of qkv, proj, fc1 and fc2; the backward of qkv: dW as Xᵀ·dY, and dX = dY·W.
    static func gemmShapes(seed: UInt64) -> [BenchCase] {
        let t = n * tokens, d = hidden, h = mlpHidden
        // name, transA, transB, m, n, k, shape
        let rows: [(String, Bool, Bool, Int, Int, Int, String)] = [
            ("gemm qkv fwd", false, true, t, 3 * d, d, "\(t)x\(d) · (\(3 * d)x\(d))ᵀ"),
            ("gemm proj fwd", false, true, t, d, d, "\(t)x\(d) · (\(d)x\(d))ᵀ"),
            ("gemm fc1 fwd", false, true, t, h, d, "\(t)x\(d) · (\(h)x\(d))ᵀ"),
            ("gemm fc2 fwd", false, true, t, d, h, "\(t)x\(h) · (\(d)x\(h))ᵀ"),
            ("gemm qkv dW", true, false, d, 3 * d, t, "(\(t)x\(d))ᵀ · \(t)x\(3 * d)"),
            ("gemm qkv dX", false, false, t, d, 3 * d, "\(t)x\(3 * d) · \(3 * d)x\(d)"),
        ]
        return rows.map { name, ta, tb, m, n, k, shape in
            BenchCase(op: name, shape: shape, work: .flops(2.0 * Double(m * n * k))) {
                let a = Tensor.randn([m * k], seed: seed), b = Tensor.randn([k * n], seed: seed + 1), c = Tensor.empty([m, n])
                return {
                    CPUBackend.shared.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 1, a: a.buffer, lda: ta ? m : k,
                                           strideA: 0, b: b.buffer, ldb: tb ? k : n, strideB: 0, beta: 0, c: c.buffer,
                                           ldc: n, strideC: 0, batch: 1)
                }
            }
        }
    }

    /// C[m, n] = A[m, k] · B[n, k]ᵀ straight through OpenBLAS: the ceiling `linear fwd` is measured against.
    private static func rawSgemm(m: Int, n: Int, k: Int, seed: UInt64) -> () -> Void {
        let a = Tensor.randn([m, k], seed: seed), b = Tensor.randn([n, k], seed: seed + 1)
        let c = Tensor.empty([m, n])
        let pa = a.buffer.pointer(Float.self), pb = b.buffer.pointer(Float.self), pc = c.buffer.pointer(Float.self)
        return {
            withExtendedLifetime((a, b, c)) {
                CPUBackend.withGemmMutex {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
                                1, pa, Int32(k), pb, Int32(k), 0, pc, Int32(n))
                }
            }
        }
    }
}
