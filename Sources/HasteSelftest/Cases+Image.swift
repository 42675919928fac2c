import HasteNN
import HasteTensor

/// Convolution, pooling and resampling (NCHW), random fills and the optimizer passes.
extension ConformanceSuite {
    static var imageCases: [OpCase] {
        [
            // Forward sums Cin·kh·kw = 27 products; dW sums over N·Ho·Wo = 60 pixels; dx (col2im) ≤ 9·Cout.
            OpCase("conv2d 3×3 stride 2 pad 1", "x[2,3,9,11] w[5,3,3,3] b[5]", .rounding(k: 80)) { c in
                let x = c.normal([2, 3, 9, 11]), w = c.normal([5, 3, 3, 3]), b = c.normal([5])
                c.forwardBackward(x.conv2d(w, b, stride: 2, padding: 1), [("x", x), ("weight", w), ("bias", b)])
            },
            OpCase("conv2d 1×3 pad (0,1)", "x[2,3,7,9] w[4,3,1,3]", .rounding(k: 140)) { c in
                let x = c.normal([2, 3, 7, 9]), w = c.normal([4, 3, 1, 3])
                c.forwardBackward(x.conv2d(w, nil, stride: 1, padding: (0, 1)), [("x", x), ("weight", w)])
            },
            OpCase("conv2d patchify 2×2 stride 2", "x[3,4,8,8] w[7,4,2,2] b[7]", .rounding(k: 64)) { c in
                let x = c.normal([3, 4, 8, 8]), w = c.normal([7, 4, 2, 2]), b = c.normal([7])
                c.forwardBackward(x.conv2d(w, b, stride: 2), [("x", x), ("weight", w), ("bias", b)])
            },
            OpCase("conv2d 1×1", "x[2,5,7,9] w[3,5,1,1] b[3]", .rounding(k: 140)) { c in
                let x = c.normal([2, 5, 7, 9]), w = c.normal([3, 5, 1, 1]), b = c.normal([3])
                c.forwardBackward(x.conv2d(w, b), [("x", x), ("weight", w), ("bias", b)])
            },
            OpCase("maxPool2d 3 stride 2 pad 1", "[2,3,9,11]", .exact) { c in
                let x = c.normal([2, 3, 9, 11], grad: false)
                c.output("y", noGrad { x.maxPool2d(kernel: 3, stride: 2, padding: 1) })
            },
            OpCase("avgPool2d 3 stride 1 pad 1", "[2,3,9,11], both count modes", .rounding(k: 12)) { c in
                let x = c.normal([2, 3, 9, 11], grad: false)
                c.output("exclude pad", noGrad { x.avgPool2d(kernel: 3, stride: 1, padding: 1, countIncludePad: false) })
                c.output("include pad", noGrad { x.avgPool2d(kernel: 3, stride: 2, padding: 1, countIncludePad: true) })
            },
            OpCase("upsample nearest 2×", "[2,3,5,7]", .rounding(k: 4)) { c in
                let x = c.normal([2, 3, 5, 7])
                c.forwardBackward(x.upsampleNearest2x(), [("x", x)])
            },
            // Two separable passes of ≤ 4 taps each, with weights computed in float32.
            OpCase("resize bicubic", "[2,3,8,8] → [11,13]", .rounding(k: 32)) { c in
                let x = c.normal([2, 3, 8, 8])
                c.forwardBackward(x.resizeBicubic(height: 11, width: 13, antialias: false), [("x", x)])
            },
            // Downsampling with antialias widens the support to 2·scale per side: up to ~10 taps a pass.
            OpCase("resize bicubic antialias", "[2,3,17,15] → [7,6]", .rounding(k: 64)) { c in
                let x = c.normal([2, 3, 17, 15])
                c.forwardBackward(x.resizeBicubic(height: 7, width: 6, antialias: true), [("x", x)])
            },
        ]
    }

    static var randomCases: [OpCase] {
        [
            OpCase("Philox uniform", "[5] then [1001] (offset 8)", .exact) { c in
                let g = RandomGenerator(seed: 0x5EED)
                c.output("first", g.uniform([5], device: c.device))
                c.output("second", g.uniform([1001], device: c.device))
            },
            // Box–Muller: logf, sqrtf, sinf/cosf of the same exact uniforms.
            OpCase("Philox normal", "[5] then [1001] (offset 8)", .pointwise) { c in
                let g = RandomGenerator(seed: 0x5EED)
                c.output("first", g.normal([5], device: c.device))
                c.output("second", g.normal([1001], device: c.device))
            },
        ]
    }

    static var optimizerCases: [OpCase] {
        [
            // Three steps of ≤ 12 float32 operations per element each (decay, lerp, addcmul, sqrt, addcdiv).
            OpCase("AdamW (3 steps, ± decay)", "[1031]", .rounding(k: 48)) { c in
                let p = c.normal([1031], grad: false).clone(), m = Tensor.zeros([1031], device: c.device)
                let v = Tensor.zeros([1031], device: c.device)
                for step in 1...3 {
                    let g = c.normal([1031], scale: 0.1, grad: false)
                    c.device.backend.adamw(param: p.buffer, grad: g.buffer, m: m.buffer, v: v.buffer, count: 1031, lr: 1e-2,
                                           beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: step == 2 ? 0 : 0.1, step: step)
                }
                c.output("param", p)
                c.output("m", m)
                c.output("v", v)
            },
            OpCase("EMA update (3 steps)", "[1031]", .rounding(k: 12)) { c in
                let e = c.normal([1031], grad: false).clone()
                for decay in [0.9999, 0.9, 0.5] {
                    let p = c.normal([1031], grad: false)
                    c.device.backend.emaUpdate(ema: e.buffer, param: p.buffer, count: 1031, decay: decay)
                }
                c.output("ema", e)
            },
            // All terms positive, so Σ|terms| = the result: the worst case is (k − 1)·u relative. Dropping one
            // element (a tail bug) changes the sum by ~1/1031 ≫ 4·1031·u.
            OpCase("grad norm (sum of squares)", "[1031]", .rounding(k: 1031)) { c in
                let x = c.uniform([1031], 0.5, 1.5, grad: false)
                let s = c.device.backend.sumOfSquares(x.buffer, count: 1031)
                c.output("sumsq", Tensor([s]))
            },
            OpCase("grad clip (scale)", "[1031]", .rounding(k: 1)) { c in
                let x = c.normal([1031], grad: false).clone()
                c.device.backend.scale(x.buffer, count: 1031, by: 0.37)
                c.output("x", x)
            },
            OpCase("clipGradNorm (store)", "Linear 17→11 + bias", .rounding(k: 220)) { c in
                let store = ParameterStore(seed: 3)
                let layer = Linear(store.root["fc"], 17, 11)
                store.finalize()
                store.move(to: c.device)
                let x = c.normal([5, 17], grad: false)
                layer(x).square().sum().backward()
                let norm = clipGradNorm(store, maxNorm: 0.5)
                c.output("norm", Tensor([norm]))
                for (name, t) in store.parameters { c.output("grad " + name, t.grad!) }
            },
        ]
    }
}
