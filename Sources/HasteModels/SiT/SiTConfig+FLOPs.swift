import HasteTensor

/// Napkin math of a SiT step (issue #15 item 4, `haste bench train --sweep`): the multiply-accumulates of every
/// matmul of the forward pass, and the training FLOPs derived from them. Elementwise work (norms, activations,
/// softmax, the optimizer) is not counted: it is small next to the GEMMs and has no fixed FLOP rate.
extension SiTConfig {
    /// Multiply-accumulates of one forward pass over `batch` samples, every linear, conv and attention matmul
    /// (D = hiddenSize, T = tokens, M = D·mlpRatio, P = inChannels·patch², L = depth), per sample:
    /// - patch embedding (a conv with stride = kernel, one D × P product per token): T·P·D
    /// - timestep MLP (256 → D → D): 256·D + D·D; the label embedding is a lookup (no MACs)
    /// - per block: adaLN (D → 6D) 6·D², qkv 3·T·D², attention q·kᵀ and softmax·v 2·T²·D, out-projection T·D²,
    ///   MLP (D → M → D) 2·T·D·M; L blocks
    /// - final layer: adaLN (D → 2D) 2·D², linear T·D·P
    /// - with `projections`, each projector (D → h → h → z): T·(D·h + h·h + h·z)
    /// SiT-XL/2 at 32×32 latents: 118.6 G per image, the "Gflops" of the DiT paper (which counts MACs).
    public func forwardMACs(batch: Int, projections: Bool = false) -> Int {
        let d = hiddenSize, t = tokens, m = Int(Double(hiddenSize) * mlpRatio), p = inChannels * patchSize * patchSize
        let embed = t * p * d + 256 * d + d * d
        let block = 6 * d * d + 3 * t * d * d + 2 * t * t * d + t * d * d + 2 * t * d * m
        let final = 2 * d * d + t * d * p
        let h = projectorHidden
        let projectors = projections ? projectorDims.reduce(0) { $0 + t * (d * h + h * h + h * $1) } : 0
        return batch * (embed + depth * block + final + projectors)
    }

    /// FLOPs of one training step (forward + backward) over `batch` samples: 3 × the forward's, 2 FLOPs per MAC
    /// (the backward computes a gradient for each matmul's two operands, each as costly as the forward product).
    public func trainingFLOPs(batch: Int, projections: Bool = false) -> Double {
        3 * 2 * Double(forwardMACs(batch: batch, projections: projections))
    }
}
