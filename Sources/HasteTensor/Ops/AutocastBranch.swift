#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Autocast bf16 on CUDA: the two branches of a DiT block (the MLP and the self-attention) on bf16 operands, and the
/// ops made of them: a branch alone (`autocastBranch`: float32 carrier in and out) and an
/// adaLN half-block `x + gate·branch(modulate(layerNorm(x), shift, scale))` (`autocastAdaLNBranch`), whose
/// LayerNorm writes the branch's bf16 operand itself and whose gated residual reads the branch's bf16 output and
/// writes its bf16 gradient: no float32 carrier between them in either direction.
///
/// Every value is the one the general path (Linear, activation, splitHeads, scaledDotProductAttention,
/// modulatedLayerNorm, gatedResidual under `Autocast.run(.bfloat16)`) computes: the same kernels and GEMMs on the
/// same bf16 operands, and each rounding one the general path makes (a second rounding of a bf16 value is the
/// identity) — except where a GEMM epilogue takes an elementwise step (the MLP's GELU, AutocastMLP.swift; bias
/// gradients, `bf16LinearGradients`), which skips a rounding. AutocastMLP.swift and AutocastAttention.swift hold
/// the branches' own steps.
///
/// `HASTE_BF16_BRANCHES=0` (read once) turns them off: the general path everywhere, for comparisons on a GPU
/// (Scripts/gpu_check.sh profiles the step both ways).
public enum BF16Branch {
    /// False under `HASTE_BF16_BRANCHES=0`.
    static let enabled: Bool = {
        guard let v = getenv("HASTE_BF16_BRANCHES") else { return true }
        return String(cString: v) != "0"
    }()
    /// True inside `$generalPathOnly.withValue(true) { … }`: the general path in this task only (tests comparing
    /// the two paths while others run).
    @TaskLocal static var generalPathOnly = false
    /// True inside `$recomputesMLPActivation.withValue(true) { … }` (the training config's `recompute-mlp-activation`):
    /// the MLP branches of the forwards run there keep their hidden layer's input h only and recompute the
    /// activation's output in backward (the same kernel on the same h: the same bits), so each holds one [rows,
    /// hidden] bf16 tensor less until its backward — 15.7 GiB for SiT-XL/2 at batch 256 — for one more elementwise
    /// pass per MLP.
    @TaskLocal public static var recomputesMLPActivation = false

    /// `fc2(act(fc1(x)))`: w1 [hidden, in], w2 [out, hidden] (MLP; `act` with `derivativeReadsOnlyInput`).
    case mlp(w1: Tensor, b1: Tensor?, activation: UnaryOp, w2: Tensor, b2: Tensor?)
    /// `proj(attention(heads of qkv(x)))`: qkv [3·D, D] head-major within q | k | v, proj [D, D] (SiT's attention
    /// without qk-norm or logits).
    case attention(qkv: Tensor, qkvBias: Tensor?, proj: Tensor, projBias: Tensor?, heads: Int)

    /// The parameter slots, in the order of the gradients `BF16BranchTape.backward` returns: the two weights, then
    /// their biases (nil where a layer has none).
    var slots: [Tensor?] {
        switch self {
        case let .mlp(w1, b1, _, w2, b2): return [w1, w2, b1, b2]
        case let .attention(w, b, pw, pb, _): return [w, pw, b, pb]
        }
    }

    /// The parameters there are, in slot order: the ops' inputs after their own.
    var parameters: [Tensor] { slots.compactMap { $0 } }

    /// The tape's backward from d̃y with the parameters' gradients in `parameters` order (raw: bf16 GEMM outputs or
    /// float32 bias sums, for `bf16Carriers`).
    func backward(_ tape: BF16BranchTape, _ dyn: Tensor, input: Bool) -> (dx: Tensor?, parameters: [Tensor?]) {
        let (dx, grads) = tape.backward(dyn, input: input, wanted: slots.map { $0?.isTracked == true })
        return (dx, zip(slots, grads).filter { $0.0 != nil }.map(\.1))
    }

    /// True where this branch runs on bf16 operands for input x [..., D] on x's device: CUDA, Autocast bf16, shapes
    /// this branch takes (the general path reports others), and for attention heads the backend's bf16 flash
    /// kernels take.
    func applies(to x: Tensor) -> Bool {
        guard BF16Branch.enabled, !BF16Branch.generalPathOnly, case .cuda = x.device, Autocast.lowering(x.dtype) == .bfloat16, x.rank >= 1 else { return false }
        let d = x.shape[x.rank - 1]
        switch self {
        case let .mlp(w1, b1, activation, w2, b2):
            return activation.derivativeReadsOnlyInput && w1.rank == 2 && w2.rank == 2 && w1.shape[1] == d
                && w2.shape[1] == w1.shape[0] && (b1 == nil || b1!.shape == [w1.shape[0]]) && (b2 == nil || b2!.shape == [w2.shape[0]])
        case let .attention(w, b, pw, pb, heads):
            guard x.rank == 3, heads > 0, d % heads == 0, w.shape == [3 * d, d], b == nil || b!.shape == [3 * d],
                  pw.shape == [d, d], pb == nil || pb!.shape == [d], x.count > 0 else { return false }
            let dh = d / heads
            let shape = AttentionShape(batch: x.shape[0] * heads, queries: x.shape[1], keys: x.shape[1], headDim: dh, valueDim: dh)
            return x.backend.attentionRoundsOperands(shape, precision: .bfloat16)
        }
    }

    /// The output's last axis.
    var outFeatures: Int {
        switch self {
        case let .mlp(_, _, _, w2, _): return w2.shape[0]
        case let .attention(_, _, pw, _, _): return pw.shape[0]
        }
    }

    /// ỹ (bf16, x̃'s leading axes) from x̃ (bf16), no autograd, and what the backward needs when `records`.
    func forward(_ xn: Tensor, records: Bool) -> (y: Tensor, tape: BF16BranchTape?) {
        Autocast.core {
            GradMode.withoutGrad {
                switch self {
                case let .mlp(w1, b1, activation, w2, b2):
                    return BF16MLPTape.forward(xn, w1, b1, activation, w2, b2, records: records)
                case let .attention(w, b, pw, pb, heads):
                    return BF16SelfAttentionTape.forward(xn, w, b, pw, pb, heads: heads, records: records)
                }
            }
        }
    }
}

/// A bf16 linear layer's backward on bf16 operands, d̃ [rows, out] the gradient of its output, x̃ [rows, in] its input,
/// w̃ [out, in] its weight: dx = d̃·w̃ (bf16, unless `input` is false), dw = d̃ᵀ·x̃ (bf16), db = Σ_rows d̃ (float32 sums,
/// rounded by `bf16Carriers`), each only where wanted. The GEMMs of `BF16LinearBackward`.
/// Where the backend has it, dw and db come from one GEMM (`linearWeightAndBiasGradients`: db then bf16, the rounded
/// float32 sums, where the kernel's are float32 sums rounded later: the same values up to the sums' order).
func bf16LinearGradients(_ d: Tensor, x xn: Tensor, w wn: Tensor, input: Bool, weight: Bool, bias: Bool)
    -> (dx: Tensor?, dw: Tensor?, db: Tensor?) {
    let dx = input ? d.matmul(wn) : nil
    if weight && bias, d.backend.gemmEpilogues.contains(.biasGradient), d.dtype == .bfloat16, xn.dtype == .bfloat16,
       d.rank == 2, xn.rank == 2, d.isContiguous, xn.isContiguous {
        let (rows, outF, inF) = (d.shape[0], d.shape[1], xn.shape[1])
        let dw = Tensor.empty([outF, inF], dtype: .bfloat16, device: d.device), db = Tensor.empty([outF], dtype: .bfloat16, device: d.device)
        if d.backend.linearWeightAndBiasGradients(rows: rows, inF: inF, outF: outF, dy: d.buffer, x: xn.buffer, dw: dw.buffer, db: db.buffer) {
            return (dx, dw, db)
        }
    }
    return (dx, weight ? d.transposed(0, 1).matmul(xn) : nil, bias ? bf16ChannelSums(d, axis: 1) : nil)
}

/// What a branch's forward kept for its backward.
protocol BF16BranchTape {
    /// From d̃y (bf16, shaped as ỹ): d̃x (bf16, shaped as x̃; nil unless `input`) and the raw gradients of the four
    /// `BF16Branch.slots` (nil where `wanted` is false, a missing bias never wanted): bf16 GEMM outputs, or float32
    /// sums still to be rounded (biases), as `bf16Gradients` takes them.
    func backward(_ dyn: Tensor, input: Bool, wanted: [Bool]) -> (dx: Tensor?, parameters: [Tensor?])
}

extension Tensor {
    /// `branch(x)` under Autocast bf16 on CUDA with its operands in bf16 (x rounded once on the way in, the output
    /// widened), or nil where the branch does not apply (`BF16Branch.applies`).
    public static func autocastBranch(_ x: Tensor, _ branch: BF16Branch) -> Tensor? {
        guard branch.applies(to: x) else { return nil }
        let params = branch.parameters
        let records = GradMode.isEnabled && ([x] + params).contains { $0.isTracked }
        let xn = x.narrowed(.bfloat16)
        let (y, tape) = branch.forward(xn, records: records)
        guard let tape else {                 // nothing to record; a checkpoint's forward notes what it read
            if let reads = CheckpointReads.current { reads.note([x] + params) }
            return y.to(.float32)
        }
        return y.to(.float32).recorded(BF16BranchBackward(x: x, branch: branch, tape: tape))
    }
}

/// d̃y = bf16(dy), then the branch's backward; each gradient rounded to bf16 once, as a float32 carrier (written
/// into a parameter's arena slot where the walk offers it).
struct BF16BranchBackward: InPlaceGradientBackward {
    let x: Tensor, branch: BF16Branch, tape: BF16BranchTape
    var inputs: [Tensor] { [x] + branch.parameters }

    func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, into: inputs.map { _ in nil }) }

    func gradients(_ dy: Tensor, into: [Tensor?]) -> [Tensor?] {
        GradMode.withoutGrad {
            let (dx, grads) = branch.backward(tape, dy.narrowed(.bfloat16), input: x.isTracked)
            return bf16Carriers([dx] + grads, into: into)
        }
    }
}
