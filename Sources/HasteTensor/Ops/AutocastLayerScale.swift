/// Autocast bf16 on CUDA without a gradient (the HASTE teacher): DINOv2's pre-norm half-block
/// `x + gamma·branch(layerNorm(x, weight, bias))` over the branch's bf16 operands (AutocastBranch.swift).
///
/// The general path writes the LayerNorm's float32 output, which the branch's first GEMM narrows to bf16, and widens
/// the branch's bf16 output to a float32 carrier that LayerScale's residual reads. Here the LayerNorm writes its
/// output in bf16 (`layerNormWritesBF16`: the float32 values rounded to nearest even as they are stored, what the
/// narrowing made) and the residual reads the branch's bf16 output (`gatedResidualForward` without `low`: the
/// product float32, as `layerScaledResidual`): the same values, two passes fewer over the float32 activation and
/// one over its bf16 copy per half-block (DINOv2-B/14 at batch 64: 50 MB each; 24 half-blocks a step).
extension Tensor {
    /// `x.layerScaledResidual(gamma: branch(x.layerNorm(weight:, bias:, eps:)))` (x [N, T, D]; weight, bias, gamma
    /// [D]; the branch D → D) when nothing records a gradient for it, under Autocast bf16 on a backend with
    /// `fusedBranchesInBF16` and `layerNormWritesBF16(cols: D)`; nil where that does not apply (the caller runs the
    /// general path: the same values).
    public static func autocastLayerScaledBranch(_ x: Tensor, norm weight: Tensor, _ bias: Tensor, eps: Double, gamma: Tensor,
                                                 _ branch: BF16Branch) -> Tensor? {
        guard x.backend.fusedBranchesInBF16, x.rank == 3, x.count > 0, branch.applies(to: x), branch.outFeatures == x.shape[2],
              x.backend.layerNormWritesBF16(cols: x.shape[2]) else { return nil }
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let inputs = [x, weight, bias, gamma] + branch.parameters
        guard [weight, bias, gamma].allSatisfy({ $0.shape == [d] && $0.dtype == .float32 && $0.device == x.device }),
              !(GradMode.isEnabled && inputs.contains { $0.isTracked }) else { return nil }
        let xc = x.contiguous(), w = weight.contiguous(), b = bias.contiguous(), g = gamma.contiguous()
        let xn = Tensor.empty([n, t, d], dtype: .bfloat16, device: x.device)
        let mean = Tensor.empty([n * t], dtype: .float32, device: x.device), rstd = Tensor.empty(like: mean)
        x.backend.layerNormForward(xc.buffer, weight: w.buffer, bias: b.buffer, xn.buffer, mean: mean.buffer, rstd: rstd.buffer,
                                   rows: n * t, cols: d, eps: eps)
        let (y, _) = branch.forward(xn, records: false)
        if let reads = CheckpointReads.current { reads.note(inputs) }     // a checkpoint's forward notes what it read
        let out = Tensor.empty(like: xc)
        x.backend.gatedResidualForward(xc.buffer, gate: g.buffer, y.buffer, out.buffer, batch: 1, tokens: n * t, cols: d, low: nil)
        return out
    }
}
