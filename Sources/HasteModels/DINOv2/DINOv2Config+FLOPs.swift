/// Napkin math of the teacher's forward (issue 12 item 4, `haste bench train`'s "+align" rows), in the style of
/// `SiTConfig.forwardMACs`: every matmul's multiply-accumulates; LayerNorms, GELU, softmax, LayerScale and the
/// bicubic preprocessing are not counted.
extension DINOv2Config {
    /// Multiply-accumulates of one forward pass over `batch` images at `imageSize` (D = embedDim, N = tokens,
    /// T = N + 1 with the class token, P = inChannels·patch², M = D·mlpRatio, L = depth), per image:
    /// - patch embedding (a conv with stride = kernel, one D × P product per patch): N·P·D
    /// - per block: qkv 3·T·D², attention q·kᵀ and softmax·v 2·T²·D, out-projection T·D², MLP (D → M → D)
    ///   2·T·D·M, or SwiGLU (g/14: D → 2H, H → D) 3·T·D·H; L blocks
    /// DINOv2-B/14 at 224 px (T = 257): 23.2 G per image.
    public func forwardMACs(batch: Int) -> Int {
        let d = embedDim, n = tokens, t = tokens + 1, p = inChannels * patchSize * patchSize
        let mlp = swiGLU ? 3 * t * d * swiGLUHidden : 2 * t * d * Int(Double(embedDim) * mlpRatio)
        let block = 3 * t * d * d + 2 * t * t * d + t * d * d + mlp
        return batch * (n * p * d + depth * block)
    }

    /// FLOPs of one forward pass (no backward: the teacher is frozen), 2 per multiply-accumulate.
    public func forwardFLOPs(batch: Int) -> Double { 2 * Double(forwardMACs(batch: batch)) }
}
