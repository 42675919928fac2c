import HasteModels
import HasteNN
import HasteTensor

/// Autocast bf16 through a whole SiT block (adaLN modulation, the attention and MLP halves), forward and every
/// gradient: on CUDA the bf16 branches (`Tensor.autocastAdaLNBranch`: the fused LayerNorm writing the branch's bf16
/// operand, the attention branch's bf16 heads through the direct tensor-core flash kernels, the bf16 MLP, the gated
/// residual on bf16, every linear's bias added by its GEMM's epilogue), on the CPU the general path (float32
/// carriers, the CPU's float32 attention). Hidden 144 with 2 heads is SiT-XL/2's head dim 72; 80 tokens are one
/// whole key tile and one partial one.
///
/// Bound: both sides round the same operands where torch does and differ in summation orders and in the flash
/// kernels' bf16 P and dS (the attention cases' 2⁻⁹ each), so a bf16 rounding may land one ulp apart and carry
/// through what follows, damped by the sums after it (a one-ulp difference in one term of a sum of many moves the
/// sum far less). Measured on the emulated device: 0.74 % normwise at worst (its cuBLAS stand-in sums in another
/// order than the CPU, its flash kernels round P and dS), so k = 3 (4.7 %) leaves a margin of 6 for a GPU's own
/// orders and its ex2.approx, while a kernel that drops or misplaces a term is off by O(1).
extension ConformanceSuite {
    static var autocastCases: [OpCase] {
        [
            sitBlockCase("SiT block (autocast bf16)", seed: 0, loss: .output),
            // An aligned block (HASTE's): on CUDA the attention half with logits on bf16 operands
            // (`Tensor.autocastAdaLNAttentionWithLogits`: bf16 GEMMs for q·kᵀ and P·v, the bf16 softmax kernels), the
            // output and the first head's logits under one upstream gradient, as the alignment loss reads a subset of
            // the heads.
            sitBlockCase("SiT block with logits (autocast bf16)", seed: 1, loss: .logits),
            // HASTE's alignment loss on that block's logits (`softCrossEntropy(target:leadingHeads:)`, the first head
            // of two) beside the output: on CUDA the loss writes the logits' bf16 gradient in one kernel and autograd
            // adds it to the softmax's in bf16 (`soft_cross_entropy_backward_bf16`, `add_bf16`); on the CPU float32,
            // rounded by the logits' node. The loss is scaled by 2 000 (its 160 rows, times 12) so that its gradient
            // outweighs the output's: the loss's gradient at half its value fails (emulated: 40 % against 0.76 %).
            sitBlockCase("SiT block with the alignment loss (autocast bf16)", seed: 2, loss: .alignment),
            // The bf16 MLP alone (hidden a multiple of 8): on CUDA fc1's GELU(tanh) in its GEMM's epilogue, dh and
            // fc1's bias gradient in fc2's input-gradient GEMM, fc2's bias gradient in its weight-gradient GEMM
            // (cuBLASLt's GELU_AUX_BIAS, DGELU_BGRAD, BGRADB: AutocastMLP.swift), which skip a bf16 rounding the CPU
            // makes; the bound as the block's (a one-ulp move damped by the sums after it; measured on the emulated
            // device: see EmulatedSelftestTests). A GELU other than the tanh one in cuBLASLt would sit within it
            // too (erf and tanh GELU differ by < 5e-4); a transposed or misplaced operand would not.
            OpCase("MLP GELU(tanh) (autocast bf16)", "x[2,40,64]·[256,64]ᵀ → GELU → ·[64,256]ᵀ", .bfloat16(k: 3)) { c in
                let x = c.normal([2, 40, 64]), w1 = c.normal([256, 64], scale: 0.125), b1 = c.normal([256], scale: 0.5)
                let w2 = c.normal([64, 256], scale: 0.0625), b2 = c.normal([64], scale: 0.5)
                let mlp = BF16Branch.mlp(w1: w1, b1: b1, activation: .geluTanh, w2: w2, b2: b2)
                let y = Autocast.run(.bfloat16) { Tensor.autocastBranch(x, mlp) ?? x.linear(w1, b1).geluTanh().linear(w2, b2) }
                c.forwardBackward(y, [("x", x), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)])
            },
            // The frozen teacher's forward (no gradient): on CUDA each half-block's LayerNorm writes the branch's bf16
            // input and LayerScale's residual reads its bf16 output (`autocastLayerScaledBranch`), the logit layer's
            // attention half through the general path; on the CPU the general path. Width 144 with 2 heads is
            // SiT-XL/2's head dim 72 (DINOv2-B's is 64); 17 tokens (a 4×4 grid and the class token). The bound as the
            // SiT block's (the same rounding points, other summation orders).
            OpCase("DINOv2 teacher (autocast bf16)", "images[2,3,8,8] width 144 heads 2 depth 2, logits of block 1", .bfloat16(k: 3)) { c in
                let model = DINOv2(.selftestTiny(patch: 2, width: 144, depth: 2, heads: 2, grid: 4), seed: 3, frozen: true)
                model.store.move(to: c.device)
                for key in model.store.keys {
                    let p = model.store[key]!
                    p.copyValues(from: c.normal(p.shape, scale: 0.3, grad: false))
                }
                let images = c.normal([2, 3, 8, 8], grad: false)
                let out = Autocast.run(.bfloat16) { noGrad { model(images, logitLayers: [1]) } }
                c.output("patch tokens", out.patchTokens)
                c.output("class token", out.classToken)
                c.output("logits 1", out.attentionLogits[1]!.to(.float32))          // bf16 on CUDA, as torch's autocast leaves them
            },
        ]
    }

    /// What the upstream gradient reaches: the block's output, the output and the first head's logits, or the output
    /// and the alignment loss on that head.
    private enum BlockLoss { case output, logits, alignment }

    private static func sitBlockCase(_ name: String, seed: UInt64, loss: BlockLoss) -> OpCase {
        OpCase(name, "x[2,80,144] c[2,144] heads 2" + (loss == .alignment ? ", loss on logits head 0 vs t[2,2,80,80]" : ""),
               .bfloat16(k: 3)) { c in
            let store = ParameterStore(seed: seed)
            let block = SiTBlock(store.root["block"], hidden: 144, heads: 2, mlpRatio: 4, qkNorm: false)
            store.finalize(on: c.device)
            let params = store.parameters
            for (_, p) in params { p.copyValues(from: c.normal(p.shape, scale: 0.1, grad: false)) }
            let x = c.normal([2, 80, 144]), cond = c.normal([2, 144])
            let target = loss == .alignment ? c.normal([2, 2, 80, 80], scale: 3, grad: false) : nil
            let (y, l) = Autocast.run(.bfloat16) { block(x, cond, logits: loss != .output) }
            let out: Tensor
            switch loss {
            case .output: out = y
            case .logits:                                    // (bf16 logits on CUDA: widened, their gradient rounded back)
                out = Tensor.cat([y.flattened(), l!.to(.float32).narrowed(1, start: 0, length: 1).flattened()], axis: 0)
            case .alignment:
                out = Tensor.cat([y.flattened(), (l!.softCrossEntropy(target: target!, leadingHeads: 1) * 2000).reshaped([1])], axis: 0)
            }
            c.forwardBackward(out, [("x", x), ("c", cond)] + params.map { ($0.name, $0.tensor) })
        }
    }
}
