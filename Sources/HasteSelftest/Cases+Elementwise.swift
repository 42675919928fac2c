import HasteTensor

/// Elementwise, reduction, softmax and normalisation cases. Sizes are odd (tails, chunk edges); k in each
/// bound is the longest float32 chain feeding one element (see `Bound`).
extension ConformanceSuite {
    static var elementwiseCases: [OpCase] {
        var cases: [OpCase] = []
        let binaries: [(String, BinaryOp)] = [("add", .add), ("sub", .sub), ("mul", .mul), ("div", .div),
                                              ("maximum", .maximum), ("minimum", .minimum)]
        for (name, op) in binaries {
            // Backward sums dy over the broadcast axes (5 or 3 terms) after a few pointwise operations.
            cases.append(OpCase("binary.\(name)", "[5,1,7] ∘ [3,7]", .rounding(k: 16)) { c in
                let a = c.normal([5, 1, 7])
                let b = op == .div ? c.uniform([3, 7], 0.5, 2) : c.normal([3, 7])
                c.forwardBackward(a.binary(op, b, name), [("a", a), ("b", b)])
            })
        }
        let positive: Set<String> = ["log", "sqrt", "rsqrt", "reciprocal", "pow(1.7)"]
        let unaries: [(String, UnaryOp)] = [
            ("exp", .exp), ("log", .log), ("sqrt", .sqrt), ("rsqrt", .rsqrt), ("tanh", .tanh), ("sin", .sin), ("cos", .cos),
            ("abs", .abs), ("sign", .sign), ("reciprocal", .reciprocal), ("square", .square), ("sigmoid", .sigmoid),
            ("silu", .silu), ("geluTanh", .geluTanh), ("gelu", .gelu), ("relu", .relu), ("pow(1.7)", .pow(1.7)),
            ("clamp(-0.5,0.8)", .clamp(-0.5, 0.8)), ("affine(1.3,-0.2)", .affine(scale: 1.3, shift: -0.2)),
        ]
        for (name, op) in unaries {
            cases.append(OpCase("unary.\(name)", "[3,37]", .pointwise) { c in
                let x = positive.contains(name) ? c.uniform([3, 37], 0.5, 3) : c.normal([3, 37], scale: 1.5)
                c.forwardBackward(x.unary(op), [("x", x)])
            })
        }
        cases.append(OpCase("axpy (addInPlace)", "[101]", .rounding(k: 2)) { c in
            let x = c.normal([101], grad: false), y = c.normal([101], grad: false).clone()
            y.addInPlace(x, alpha: 0.3)
            c.output("y", y)
        })
        cases.append(OpCase("sum axis 1", "[5,33,7]", .rounding(k: 41)) { c in
            let x = c.normal([5, 33, 7])
            c.forwardBackward(x.sum(axis: 1), [("x", x)])
        })
        cases.append(OpCase("sum axes [0,2] (permuted)", "[5,33,7]", .rounding(k: 43)) { c in
            let x = c.normal([5, 33, 7])
            c.forwardBackward(x.sum(axes: [0, 2], keepDims: true), [("x", x)])
        })
        cases.append(OpCase("mean all", "[9,37]", .rounding(k: 341)) { c in
            let x = c.normal([9, 37])
            c.forwardBackward(x.mean(), [("x", x)])
        })
        cases.append(OpCase("max axis 1", "[5,33,7]", .exact) { c in
            let x = c.normal([5, 33, 7])
            c.forwardBackward(x.max(axis: 1), [("x", x)])
        })
        cases.append(OpCase("max all (ties)", "[7,9]", .rounding(k: 2)) { c in
            let x = c.normal([7, 9])
            // Several maxima tie at 0.5: each gets dy / (number of ties), one division.
            c.forwardBackward(x.clamp(max: 0.5).max(), [("x", x)])
        })
        cases.append(OpCase("softmax", "[7,33]", .rounding(k: 50)) { c in
            let x = c.normal([7, 33], scale: 3)
            c.forwardBackward(x.softmax(axis: -1), [("x", x)])
        })
        cases.append(OpCase("logSoftmax", "[7,33]", .rounding(k: 50)) { c in
            let x = c.normal([7, 33], scale: 3)
            c.forwardBackward(x.logSoftmax(axis: -1), [("x", x)])
        })
        // The attention-alignment loss: the CPU's one-pass kernel against whatever the device runs (CUDA's
        // soft_cross_entropy_f32; the composite softmax · log-softmax where a backend has no kernel), the target a
        // strided view as the teacher's logits are.
        cases.append(OpCase("softCrossEntropy", "[2,3,33,33] of [2,4,34,34]", .rounding(k: 100)) { c in
            let x = c.normal([2, 3, 33, 33], scale: 3)
            let t = c.normal([2, 4, 34, 34], scale: 3).narrowed(1, start: 0, length: 3).narrowed(2, start: 1, length: 33)
                .narrowed(3, start: 1, length: 33)
            c.forwardBackward(x.softCrossEntropy(target: t), [("x", x)])
        })
        cases.append(OpCase("softmax axis 0", "[9,5]", .rounding(k: 25)) { c in
            let x = c.normal([9, 5], scale: 3)
            c.forwardBackward(x.softmax(axis: 0), [("x", x)])
        })
        cases.append(OpCase("layerNorm affine", "[3,7,45]", .rounding(k: 90)) { c in
            let x = c.normal([3, 7, 45], scale: 2, shift: 0.5), w = c.normal([45]), b = c.normal([45])
            c.forwardBackward(x.layerNorm(weight: w, bias: b, eps: 1e-6), [("x", x), ("weight", w), ("bias", b)])
        })
        cases.append(OpCase("layerNorm", "[21,45]", .rounding(k: 90)) { c in
            let x = c.normal([21, 45], scale: 2, shift: 0.5)
            c.forwardBackward(x.layerNorm(eps: 1e-6), [("x", x)])
        })
        cases.append(OpCase("groupNorm (composite)", "[2,6,5,5] groups 3", .rounding(k: 90)) { c in
            let x = c.normal([2, 6, 5, 5]), w = c.normal([6]), b = c.normal([6])
            c.forwardBackward(x.groupNorm(groups: 3, weight: w, bias: b, eps: 1e-6), [("x", x), ("weight", w), ("bias", b)])
        })
        cases.append(OpCase("groupNorm+silu (inference)", "[2,64,12,12] groups 32", .rounding(k: 320)) { c in
            let x = c.normal([2, 64, 12, 12], scale: 2, shift: 0.5, grad: false), w = c.normal([64], grad: false), b = c.normal([64], grad: false)
            c.output("y", noGrad { x.groupNorm(groups: 32, weight: w, bias: b, eps: 1e-6, silu: true) })   // CUDA: stats + one pass
        })
        cases.append(OpCase("crossEntropy", "[7,11] int64 targets", .rounding(k: 40)) { c in
            let x = c.normal([7, 11], scale: 2), t = c.randint(0, 11, [7])
            c.forwardBackward(x.crossEntropy(targets: t), [("x", x)])
        })
        return cases
    }
}
