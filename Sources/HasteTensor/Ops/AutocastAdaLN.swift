/// Autocast bf16 on CUDA: an adaLN-Zero half-block `x + gate·branch(modulate(layerNorm(x), shift, scale))` (SiT's
/// attention and MLP halves) as one op over the branch's bf16 operands (AutocastBranch.swift).
///
/// The general path, `x.gatedResidual(gate:, branch(x.modulatedLayerNorm(shift:, scale:, eps:)))`, writes the
/// LayerNorm's float32 output that the branch's first GEMM narrows, widens the branch's bf16 output to a float32
/// carrier that the gated residual reads (and keeps for its backward), and backward writes the branch's float32
/// gradient that its last GEMM's backward narrows and widens the branch's bf16 input gradient for the LayerNorm's
/// backward. Here the fused kernels read and write those bf16 tensors themselves (`fusedBranchesInBF16`):
/// modulatedLayerNorm's y and dy, gatedResidual's y and dy. The same values: each kernel computes in float32 on the
/// same values, and stores rounded where the general path's next step rounded.
extension Tensor {
    /// `x + gate·branch(modulatedLayerNorm(x, shift, scale, eps))` under `Autocast.run(.bfloat16)` on a backend with
    /// `fusedBranchesInBF16`, or nil where that does not apply (the branch's own conditions, `BF16Branch.applies`;
    /// x [N, T, D] with shift, scale, gate [N, D], the branch D → D). Gradients for x, shift, scale, gate and the
    /// branch's parameters, as the general path's.
    public static func autocastAdaLNBranch(_ x: Tensor, shift: Tensor, scale: Tensor, gate: Tensor, eps: Double,
                                           _ branch: BF16Branch) -> Tensor? {
        guard x.backend.fusedBranchesInBF16, x.rank == 3, x.count > 0, branch.applies(to: x), branch.outFeatures == x.shape[2] else { return nil }
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        guard [shift, scale, gate].allSatisfy({ $0.shape == [n, d] && $0.dtype == .float32 && $0.device == x.device }) else { return nil }
        let params = branch.parameters
        let records = GradMode.isEnabled && ([x, shift, scale, gate] + params).contains { $0.isTracked }
        let front = BF16AdaLNFront(x, shift: shift, scale: scale, eps: eps), g = gate.contiguous()
        let (y, tape) = branch.forward(front.xn, records: records)
        let out = Tensor.empty([n, t, d], dtype: .float32, device: x.device)
        x.backend.gatedResidualForward(front.x.buffer, gate: g.buffer, y.buffer, out.buffer, batch: n, tokens: t, cols: d, low: .bfloat16)
        guard let tape else {                 // nothing to record; a checkpoint's forward notes what it read
            if let reads = CheckpointReads.current { reads.note([x, shift, scale, gate] + params) }
            return out
        }
        return out.recorded(BF16AdaLNBranchBackward(front: front, shift: shift, scale: scale, gate: g, branch: branch, y: y, tape: tape))
    }
}

/// dx = dout + modulatedLayerNorm's dx; dgate = Σ_t bf16(bf16(dout)·ỹ), d̃y = bf16(gate·bf16(dout)) (gatedResidual's
/// bf16 kernels); the branch's backward to d̃x; modulatedLayerNorm's backward from d̃x (dshift, and dscale rounded
/// once as the general path's rounded 1 + scale rounds it); the parameters' gradients as float32 carriers.
struct BF16AdaLNBranchBackward: InPlaceGradientBackward {
    let front: BF16AdaLNFront, shift: Tensor, scale: Tensor, gate: Tensor, branch: BF16Branch
    let y: Tensor, tape: BF16BranchTape
    var inputs: [Tensor] { [front.x, shift, scale, gate] + branch.parameters }

    func gradients(_ dout: Tensor) -> [Tensor?] { gradients(dout, into: inputs.map { _ in nil }) }

    /// The parameters' gradients go into their arena slots where the walk offers them (`bf16Carriers`).
    func gradients(_ dout: Tensor, into: [Tensor?]) -> [Tensor?] {
        GradMode.withoutGrad {
            let x = front.x, (n, t, d) = (x.shape[0], x.shape[1], x.shape[2]), dc = dout.contiguous()
            let branchInput = x.isTracked || shift.isTracked || scale.isTracked
            let dgate = gate.isTracked ? Tensor.empty(like: gate) : nil
            let dy = branchInput || branch.parameters.contains(where: \.isTracked) ? Tensor.empty([n, t, d], dtype: .bfloat16, device: x.device) : nil
            if dy != nil || dgate != nil {
                x.backend.gatedResidualBackward(gate: gate.buffer, y.buffer, dc.buffer, dy: dy?.buffer, dgate: dgate?.buffer,
                                                batch: n, tokens: t, cols: d, low: .bfloat16)
            }
            var (dxn, grads): (Tensor?, [Tensor?]) = (nil, branch.parameters.map { _ in nil })
            if let dy { (dxn, grads) = branch.backward(tape, dy, input: branchInput) }
            // x's two terms, dout (the residual) + the LayerNorm's, added in the LayerNorm's backward pass.
            let r = dxn.map { front.backward($0, x: x.isTracked, shift: shift.isTracked, scale: scale.isTracked,
                                             residual: x.isTracked ? dc : nil) }
            return [r?.dx, r?.dshift, r?.dscale, dgate] + bf16Carriers(grads, into: Array(into.dropFirst(4)))
        }
    }
}
