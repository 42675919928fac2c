import HasteTensor

/// Copies, gathers, selections, casts and fills: exact except where a backward adds repeated entries.
extension ConformanceSuite {
    static var movementCases: [OpCase] {
        [
            OpCase("fill / zeros / ones", "[37]", .exact) { c in
                c.output("full", Tensor.full([37], 0.3, device: c.device))
                c.output("zeros", Tensor.zeros([5, 7], device: c.device))
                c.output("ones", Tensor.ones([3], dtype: .int64, device: c.device))
            },
            OpCase("copy / clone / host round trip", "[5,37]", .exact) { c in
                let x = c.normal([5, 37], grad: false)
                c.output("clone", x.clone())
                c.output("x", x)
            },
            OpCase("permute + contiguous", "[3,5,7,2] → (2,0,3,1)", .exact) { c in
                let x = c.normal([3, 5, 7, 2])
                c.forwardBackward(x.permuted([2, 0, 3, 1]).contiguous(), [("x", x)])
            },
            OpCase("narrow / transpose views", "[9,11] → [:, 2..<9]ᵀ", .exact) { c in
                let x = c.normal([9, 11])
                c.forwardBackward(x[axis: 1, 2..<9].transposed(0, 1).contiguous(), [("x", x)])
            },
            OpCase("expand + contiguous", "[5,1,7] → [5,3,7]", .rounding(k: 4)) { c in
                let x = c.normal([5, 1, 7])
                c.forwardBackward(x.expanded([5, 3, 7]).contiguous(), [("x", x)])
            },
            OpCase("cat (strided inputs)", "[3,5,7] ⧺ [3,7,5]ᵀ ⧺ [3,9,7][:,1..<3]", .exact) { c in
                let a = c.normal([3, 5, 7]), b = c.normal([3, 7, 5]), d = c.normal([3, 9, 7])
                let y = Tensor.cat([a, b.transposed(1, 2), d[axis: 1, 1..<3]], axis: 1)
                c.forwardBackward(y, [("a", a), ("b", b), ("d", d)])
            },
            OpCase("stack", "3 × [5,7] on axis 1", .exact) { c in
                let a = c.normal([5, 7]), b = c.normal([5, 7]), d = c.normal([5, 7])
                c.forwardBackward(Tensor.stack([a, b, d], axis: 1), [("a", a), ("b", b), ("d", d)])
            },
            OpCase("pad", "[2,3,5,7] pad (1,2,0,3)", .exact) { c in
                let x = c.normal([2, 3, 5, 7])
                c.forwardBackward(x.padded(left: 1, right: 2, top: 0, bottom: 3), [("x", x)])
            },
            OpCase("embedding forward", "weight [13,7], int64 [5,3]; int32 [4]", .exact) { c in
                let w = c.normal([13, 7], grad: false)
                c.output("y", Tensor.embedding(w, c.randint(0, 13, [5, 3])))
                c.output("y32", Tensor.embedding(w, Tensor([Int32(12), 0, 5, 12], device: c.device)))
            },
            // Repeated indices add up (at most a handful of terms per row).
            OpCase("embedding backward", "weight [13,7], int64 [5,3] with repeats", .rounding(k: 8)) { c in
                let w = c.normal([13, 7]), idx = Tensor([Int64(3), 3, 0, 12, 3, 7, 0, 1, 2, 12, 3, 4, 5, 6, 7], shape: [5, 3], device: c.device)
                c.forwardBackward(Tensor.embedding(w, idx), [("weight", w)])
            },
            OpCase("index_select forward", "[5,9,3] axis 1, 7 indices", .exact) { c in
                let x = c.normal([5, 9, 3], grad: false)
                c.output("y", x.indexSelect(axis: 1, indices: Tensor([Int64(4), 0, 4, 8, 2, 7, 1], device: c.device)))
                c.output("y32", x.indexSelect(axis: 0, indices: Tensor([Int32(4), 0, 4], device: c.device)))
            },
            OpCase("index_select backward", "[5,9,3] axis 1, repeats", .rounding(k: 4)) { c in
                let x = c.normal([5, 9, 3])
                let y = x.indexSelect(axis: 1, indices: Tensor([Int64(4), 0, 4, 8, 2, 7, 1, 4], device: c.device))
                c.forwardBackward(y, [("x", x)])
            },
            OpCase("compare greater / less", "[7,33]", .exact) { c in
                let x = c.normal([7, 33], grad: false)
                c.output("gt", x.greater(0.2))
                c.output("lt", x.less(-0.3))
            },
            OpCase("where forward", "cond [5,3,1], a [5,1,7], b [3,7]", .exact) { c in
                let cond = c.normal([5, 3, 1], grad: false).greater(0)
                let a = c.normal([5, 1, 7], grad: false), b = c.normal([3, 7], grad: false)
                c.output("y", Tensor.where_(cond, a, b))
            },
            OpCase("where backward", "cond [5,3,7], a [5,1,7], b [3,7]", .rounding(k: 8)) { c in
                let cond = c.normal([5, 3, 7], grad: false).greater(0)
                let a = c.normal([5, 1, 7]), b = c.normal([3, 7])
                c.forwardBackward(Tensor.where_(cond, a, b), [("a", a), ("b", b)])
            },
        ]
    }

    static var castCases: [OpCase] {
        // Ties for bf16 (1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷), f16 overflow and subnormals, signed zero,
        // infinities and NaN, then random values over several binades.
        let special: [Float] = [1.00390625, 1.01171875, -1.00390625, 65520, 70000, 1e-6, 6e-8, -0.0, .infinity, -.infinity, .nan, 3.3895314e38]
        func floats(_ c: CaseContext) -> Tensor {
            let random = noGrad { (c.rng.normal([101]) * 37.0).to(.cpu) }
            return Tensor.cat([Tensor(special), random], axis: 0).to(c.device)
        }
        return [
            OpCase("cast f32 → bf16 → f32", "[113] incl. ties, inf, NaN", .exact) { c in
                let x = floats(c), h = x.to(.bfloat16)
                c.output("bf16", h)
                c.output("f32", h.to(.float32))
            },
            OpCase("cast f32 → f16 → f32", "[113] incl. overflow, subnormals", .exact) { c in
                let x = floats(c), h = x.to(.float16)
                c.output("f16", h)
                c.output("f32", h.to(.float32))
            },
            OpCase("cast f32 → int32/int64/uint8/bool", "[101] (truncation)", .exact) { c in
                let x = c.normal([101], scale: 40, grad: false)
                c.output("i32", x.to(.int32))
                c.output("i64", x.to(.int64))
                c.output("u8", x.abs().clamp(max: 255).to(.uint8))
                c.output("bool", x.clamp(min: -1, max: 1).to(.int32).to(.bool))
            },
            OpCase("cast int / uint8 / bool → f32", "[101]", .exact) { c in
                let i = c.randint(-1000, 1000, [101])
                c.output("i64→f32", i.to(.float32))
                c.output("i64→i32", i.to(.int32))
                c.output("u8→f32", Tensor((0..<101).map { UInt8(($0 * 37) % 256) }, device: c.device).to(.float32))
                c.output("bool→f32", c.normal([101], grad: false).greater(0).to(.float32))
            },
        ]
    }
}
