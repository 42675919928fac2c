import HasteTensor

/// GEMM and attention cases. k = the inner dimensions along the longest forward + backward chain.
extension ConformanceSuite {
    static var matmulCases: [OpCase] {
        [
            OpCase("matmul", "[13,17]·[17,11]", .rounding(k: 38)) { c in
                let a = c.normal([13, 17]), b = c.normal([17, 11])
                c.forwardBackward(a.matmul(b), [("a", a), ("b", b)])
            },
            OpCase("matmul batch folded", "[3,13,17]·[17,11]", .rounding(k: 64)) { c in
                let a = c.normal([3, 13, 17]), b = c.normal([17, 11])
                c.forwardBackward(a.matmul(b), [("a", a), ("b", b)])
            },
            OpCase("bmm broadcast", "[2,1,13,17]·[3,17,11]", .rounding(k: 64)) { c in
                let a = c.normal([2, 1, 13, 17]), b = c.normal([3, 17, 11])
                c.forwardBackward(a.matmul(b), [("a", a), ("b", b)])
            },
            OpCase("matmul transposed operands", "[17,13]ᵀ·[11,17]ᵀ", .rounding(k: 38)) { c in
                let a = c.normal([17, 13]), b = c.normal([11, 17])
                c.forwardBackward(a.transposed(0, 1).matmul(b.transposed(0, 1)), [("a", a), ("b", b)])
            },
            OpCase("bmm transposed", "[3,17,13]ᵀ·[3,17,11]", .rounding(k: 38)) { c in
                let a = c.normal([3, 17, 13]), b = c.normal([3, 17, 11])
                c.forwardBackward(a.transposed(-1, -2).matmul(b), [("a", a), ("b", b)])
            },
            OpCase("linear + bias", "[3,5,17]·[11,17]ᵀ + [11]", .rounding(k: 40)) { c in
                let x = c.normal([3, 5, 17]), w = c.normal([11, 17]), b = c.normal([11])
                c.forwardBackward(x.linear(w, b), [("x", x), ("weight", w), ("bias", b)])
            },
            // Autocast bf16 with sizes cuBLASLt's tensor-core kernels take (the bias added by the GEMM's epilogue on a
            // GPU, `GPUDriver.gemm(_:addingBias:)`): both sides round the same operands and each result once, after
            // float32 sums in different orders, so a result may land one bf16 ulp apart (2⁻⁸ normwise at most).
            OpCase("linear + bias (autocast bf16)", "[4,8,64]·[48,64]ᵀ + [48]", .bfloat16(k: 1)) { c in
                let x = c.normal([4, 8, 64]), w = c.normal([48, 64]), b = c.normal([48], scale: 4)
                c.forwardBackward(Autocast.run(.bfloat16) { x.linear(w, b) }, [("x", x), ("weight", w), ("bias", b)])
            },
            OpCase("linear", "[7,17]·[11,17]ᵀ", .rounding(k: 32)) { c in
                let x = c.normal([7, 17]), w = c.normal([11, 17])
                c.forwardBackward(x.linear(w), [("x", x), ("weight", w)])
            },
            // Attention chains q·kᵀ (Dh), softmax (Tk), P·v (Tk); the backward adds dP = dOut·vᵀ (Dv), the row
            // sums (Tk) and dk, dv summing over Tq.
            OpCase("attention", "q[2,3,13,8] k[2,3,11,8] v[2,3,11,5]", .rounding(k: 72)) { c in
                let q = c.normal([2, 3, 13, 8]), k = c.normal([2, 3, 11, 8]), v = c.normal([2, 3, 11, 5])
                c.forwardBackward(Tensor.scaledDotProductAttention(q, k, v), [("q", q), ("k", k), ("v", v)])
            },
            // Several query and key tiles of the flash kernels (64 × 64) on backends that recompute, Dh 72 as in
            // SiT-XL/2, Dh ≠ Dv: the chain adds a rescale (4 operations) per key tile, 72 + 3·130 + 40 + 2·67 + 4·3.
            OpCase("attention (several tiles)", "q[1,2,67,72] k[1,2,130,72] v[1,2,130,40]", .rounding(k: 648)) { c in
                let q = c.normal([1, 2, 67, 72]), k = c.normal([1, 2, 130, 72]), v = c.normal([1, 2, 130, 40])
                c.forwardBackward(Tensor.scaledDotProductAttention(q, k, v), [("q", q), ("k", k), ("v", v)])
            },
            // Autocast bf16: on CUDA (sm_80+) the tensor-core flash kernels, which round P and dS to bf16 before
            // their products where the CPU keeps them float32; both sides round the output and the gradients to
            // bf16. Per result: each side within u_b·Σ|terms| of the exact value (P or dS rounded), then the
            // final roundings: normwise ≤ 2·u_b·(1 + R), R = max Σ|terms| / max|result| (Σ_j P·|v|, Σ_j |dS|·|k|),
            // k = 4 covers R ≤ 7 (measured on the emulated device: 3.9e-3, about one bf16 ulp).
            OpCase("attention (autocast bf16)", "q[1,2,67,72] k[1,2,130,72] v[1,2,130,40]", .bfloat16(k: 4)) { c in
                let q = c.normal([1, 2, 67, 72]), k = c.normal([1, 2, 130, 72]), v = c.normal([1, 2, 130, 40])
                let y = Autocast.run(.bfloat16) { Tensor.scaledDotProductAttention(q, k, v) }
                c.forwardBackward(y, [("q", q), ("k", k), ("v", v)])
            },
            // The same where Dh and Dv pad to the kernels' width (64): on CUDA the WHOLE entry points, the forward
            // over two 128-row query tiles, 5 key tiles (dq from its own kernel); SiT's block below covers the
            // fused dq. Bound as above.
            OpCase("attention (autocast bf16, whole tiles)", "q[1,2,200,64] k[1,2,300,64] v[1,2,300,64]", .bfloat16(k: 4)) { c in
                let q = c.normal([1, 2, 200, 64]), k = c.normal([1, 2, 300, 64]), v = c.normal([1, 2, 300, 64])
                let y = Autocast.run(.bfloat16) { Tensor.scaledDotProductAttention(q, k, v) }
                c.forwardBackward(y, [("q", q), ("k", k), ("v", v)])
            },
            OpCase("attention (inference)", "q[2,3,13,8] k[2,3,11,8] v[2,3,11,5]", .rounding(k: 40)) { c in
                let q = c.normal([2, 3, 13, 8], grad: false), k = c.normal([2, 3, 11, 8], grad: false)
                let v = c.normal([2, 3, 11, 5], grad: false)
                c.output("y", noGrad { Tensor.scaledDotProductAttention(q, k, v, scale: 0.3) })
            },
            // float32 without a gradient where TF32 is allowed (sampling in float32, a frozen teacher): on CUDA sm_80+
            // the TF32 flash forward, q, k, v and P rounded to TF32 (2⁻¹¹) where the CPU keeps float32. S's error
            // ≤ 2·u_t·scale·Σ_d|q·k| moves each weight by about as much relative; with v's and P's roundings and
            // normal inputs, k = 4 (measured on the emulated device: see EmulatedSelftestTests).
            OpCase("attention (inference, TF32)", "q[1,2,67,72] k[1,2,130,72] v[1,2,130,72]", .tf32(k: 4), tf32: true) { c in
                let q = c.normal([1, 2, 67, 72], grad: false), k = c.normal([1, 2, 130, 72], grad: false)
                let v = c.normal([1, 2, 130, 72], grad: false)
                c.output("y", noGrad { Tensor.scaledDotProductAttention(q, k, v) })
            },
            // float32 sampling's MLP where TF32 is allowed: on CUDA fc1's GELU(tanh) in its TF32 GEMM's epilogue
            // (cuBLASLt GELU_BIAS, `linearBiasGeluTanhUntracked`), the CPU's float32 linear then bias+GELU. The sum
            // errs by ≤ 2·u_t·Σ|x·w| (x and w rounded to TF32), ≈ 2.3·u_t of max|y| for these normal operands, GELU′ ≤
            // 1.13 carries it, and a tanh approximate to 2⁻¹¹ (tanh.approx) would add ≤ 0.5·u_t: k = 2.
            OpCase("linear + GELU(tanh) (inference, TF32)", "[4,30,64]·[256,64]ᵀ + [256]", .tf32(k: 2), tf32: true) { c in
                let x = c.normal([4, 30, 64], grad: false), w = c.normal([256, 64], scale: 0.125, grad: false)
                let b = c.normal([256], scale: 0.5, grad: false)
                c.output("y", noGrad { x.linearBiasGeluTanhUntracked(w, b) ?? x.linear(w).biasGeluTanh(b) })
            },
            OpCase("attention with logits", "q[2,3,13,8] k[2,3,11,8] v[2,3,11,5]", .rounding(k: 72)) { c in
                let q = c.normal([2, 3, 13, 8]), k = c.normal([2, 3, 11, 8]), v = c.normal([2, 3, 11, 5])
                let (out, logits) = Tensor.attentionWithLogits(q, k, v)
                // One upstream gradient for both outputs: a loss on the logits (alignment) and on the output.
                let both = Tensor.cat([out.flattened(), logits.flattened()], axis: 0)
                c.forwardBackward(both, [("q", q), ("k", k), ("v", v)])
            },
            // Autocast bf16 with logits (HASTE's aligned blocks): CUDA's bf16 GEMMs against the CPU's float32 GEMMs on
            // rounded operands, both rounding logits, probabilities, output and gradients to bf16 where torch does:
            // they differ in summation order, so a rounding may land one bf16 ulp apart and carry through softmax
            // and the second product (bound as the flash case's).
            OpCase("attention with logits (autocast bf16)", "q[2,3,13,8] k[2,3,11,8] v[2,3,11,5]", .bfloat16(k: 4)) { c in
                let q = c.normal([2, 3, 13, 8]), k = c.normal([2, 3, 11, 8]), v = c.normal([2, 3, 11, 5])
                let (out, logits) = Autocast.run(.bfloat16) { Tensor.attentionWithLogits(q, k, v) }
                let both = Tensor.cat([out.flattened(), logits.flattened()], axis: 0)
                c.forwardBackward(both, [("q", q), ("k", k), ("v", v)])
            },
            OpCase("softmaxMatmul", "logits[2,3,13,11] v[2,3,11,5]", .rounding(k: 56)) { c in
                let s = c.normal([2, 3, 13, 11], scale: 2), v = c.normal([2, 3, 11, 5])
                c.forwardBackward(Tensor.softmaxMatmul(s, v), [("logits", s), ("v", v)])
            },
        ]
    }
}
