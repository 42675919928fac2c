/// Fused elementwise work of the adaLN transformer block (issues 12 item 3, 15 item 1): what PyTorch eager runs
/// as separate passes, each over the whole activation, done in one pass per direction. The composites they
/// replace stay in the tests as the reference (STYLE §2.4):
/// - `modulatedLayerNorm(shift:scale:eps:)` = `modulate(x.layerNorm(eps:), shift, scale)`;
/// - `gatedResidual(gate:_:)` = `x + gate.unsqueezed(1) * y`;
/// - `biasGeluTanh(_:)` = `(x + bias).geluTanh()` (the epilogue of `linear`: BLAS/cuBLAS GEMMs take none, so the
///   linear runs without its bias and this op adds it).
/// Rows are [batch·tokens, cols] with per-item vectors [batch, cols] broadcast over the item's tokens.
public protocol FusedKernels: AnyObject {
    /// x, y: [batch·tokens, cols]; shift, scale: [batch, cols]. Per row r of item b = r / tokens:
    /// y = (x − mean)·rstd·(1 + scale[b]) + shift[b], rstd = 1/√(biased var + eps). Saves mean, rstd: [rows].
    /// With `roundedScale` ([batch, cols] float32): Autocast bf16's 1 + scale, bf16(1 + scale) − 1 (`roundThrough` with
    /// shift 1: its bits), in scale's place, written there for the backward (BF16AdaLNFront).
    func modulatedLayerNormForward(_ x: Buffer, shift: Buffer, scale: Buffer, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                   batch: Int, tokens: Int, cols: Int, eps: Double, roundedScale: Buffer?)
    /// From the saved mean and rstd: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·(1 + scale[b]);
    /// dshift[b, j] = Σ_t dy, dscale[b, j] = Σ_t dy·x̂ over the item's tokens (written, not accumulated; nil = not
    /// wanted). Deterministic: fixed chunks of tokens, partial sums added in chunk order. With `residual` (same
    /// shape as x): dx = residual + that dx, one float32 addition per element (an adaLN half-block's two terms of
    /// x's gradient, added where they are made). With `dscaleLow` (bfloat16), dscale rounded to it as it is written
    /// (float32 values; `roundThrough`'s bits): the gradient of Autocast's bf16 1 + scale (BF16AdaLNFront).
    func modulatedLayerNormBackward(_ x: Buffer, scale: Buffer, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                    residual: Buffer?, dshift: Buffer?, dscale: Buffer?, batch: Int, tokens: Int, cols: Int,
                                    dscaleLow: DType?)
    /// out = x + gate[b]·y over [batch·tokens, cols]; gate: [batch, cols]. With `low` (bfloat16 under Autocast,
    /// float32 buffers holding bf16 values of gate and y): out = x + low(gate·y), the product rounded as torch's
    /// bf16 tensor product is.
    func gatedResidualForward(_ x: Buffer, gate: Buffer, _ y: Buffer, _ out: Buffer, batch: Int, tokens: Int, cols: Int,
                              low: DType?)
    /// dy = gate[b]·dout, dgate[b, j] = Σ_t dout·y (each written; nil = not wanted). (dx = dout needs no kernel.)
    /// With `low`: d̃ = low(dout) (the rounded product's gradient), dy = gate·d̃, dgate = Σ_t low(d̃·y) (each term
    /// rounded, as the gradient of torch's bf16 gate expanded over the tokens).
    func gatedResidualBackward(gate: Buffer, _ y: Buffer, _ dout: Buffer, dy: Buffer?, dgate: Buffer?,
                               batch: Int, tokens: Int, cols: Int, low: DType?)
    /// y = geluTanh(x + bias[j]) over [rows, cols]; bias: [cols]. geluTanh(u) = u/2·(1 + tanh(√(2/π)(u + 0.044715u³))).
    func biasGeluTanhForward(_ x: Buffer, bias: Buffer, _ y: Buffer, rows: Int, cols: Int)
    /// dx = dy·geluTanh′(x + bias), dbias[j] = Σ_rows dx (written; nil = not wanted; fixed chunks, chunk order).
    func biasGeluTanhBackward(_ x: Buffer, bias: Buffer, _ dy: Buffer, dx: Buffer, dbias: Buffer?, rows: Int, cols: Int)
    /// True where the kernels above also take the branch side of an Autocast bf16 half-block as bfloat16 buffers
    /// (`autocastAdaLNBranch`): modulatedLayerNorm's y and its backward's dy, gatedResidual's y (with `low`
    /// bf16) and its backward's dy output (rounded to nearest even as it is stored). The same values as on float32
    /// carriers of those bf16 values. Default false (the CPU).
    var fusedBranchesInBF16: Bool { get }
    /// True where `layerNormForward` (LayerNormKernels) also writes a bfloat16 y of `cols` columns (rounded to nearest
    /// even as it is stored: the float32 output's values narrowed) and `gatedResidualForward` without `low` reads a
    /// bfloat16 y (`autocastLayerScaledBranch`). Default false (the CPU).
    func layerNormWritesBF16(cols: Int) -> Bool
}

extension FusedKernels {
    /// scale as given (no rounding).
    public func modulatedLayerNormForward(_ x: Buffer, shift: Buffer, scale: Buffer, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                          batch: Int, tokens: Int, cols: Int, eps: Double) {
        modulatedLayerNormForward(x, shift: shift, scale: scale, y, mean: mean, rstd: rstd, batch: batch, tokens: tokens, cols: cols,
                                  eps: eps, roundedScale: nil)
    }
    /// dscale as computed (no rounding).
    public func modulatedLayerNormBackward(_ x: Buffer, scale: Buffer, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                           residual: Buffer?, dshift: Buffer?, dscale: Buffer?, batch: Int, tokens: Int, cols: Int) {
        modulatedLayerNormBackward(x, scale: scale, mean: mean, rstd: rstd, dy, dx: dx, residual: residual, dshift: dshift,
                                   dscale: dscale, batch: batch, tokens: tokens, cols: cols, dscaleLow: nil)
    }
    public var fusedBranchesInBF16: Bool { false }
    public func layerNormWritesBF16(cols: Int) -> Bool { false }
}

extension Tensor {
    /// adaLN's `modulate(layerNorm(x), shift, scale)` in one op: LayerNorm without affine over the last axis of
    /// x [N, T, D], then x̂·(1 + scale) + shift with shift, scale [N, D] broadcast over the T tokens.
    /// torch: `F.layer_norm(x, (D,), eps=eps) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)`. Under `Autocast`
    /// (Ops/Precision.swift) shift and scale are what they are in torch, an adaLN Linear's bf16 output, so
    /// `1 + scale` is a bf16 op there: it is rounded here too (the statistics and the rest stay float32).
    public func modulatedLayerNorm(shift: Tensor, scale: Tensor, eps: Double) -> Tensor {
        if let low = Autocast.lowering(dtype) {   // 1 + (round(1 + scale) − 1) = round(1 + scale) exactly
            let rounded = Autocast.core { ((scale + 1).rounded(to: low) - 1) }
            return Autocast.core { modulatedLayerNorm(shift: shift, scale: rounded, eps: eps) }
        }
        require(dtype.isComputeFloat, "modulatedLayerNorm: needs float32 or float64, got \(dtype) \(shape)")
        require(rank == 3 && shape[2] > 0, "modulatedLayerNorm: input \(shape) must be [N, T, D] with D > 0")
        let (n, t, d) = (shape[0], shape[1], shape[2])
        for (name, p) in [("shift", shift), ("scale", scale)] {
            require(p.shape == [n, d], "modulatedLayerNorm: \(name) \(p.shape) does not match input \(shape) (need [\(n), \(d)])")
            require(p.dtype == dtype && p.device == device,
                    "modulatedLayerNorm: \(name) is \(p.dtype) on \(p.device), input \(shape) is \(dtype) on \(device)")
        }
        let x = contiguous(), sh = shift.contiguous(), sc = scale.contiguous()
        let y = Tensor.empty(like: x)
        let mean = Tensor.empty([n * t], dtype: dtype, device: device), rstd = Tensor.empty(like: mean)
        if n * t > 0 {
            backend.modulatedLayerNormForward(x.buffer, shift: sh.buffer, scale: sc.buffer, y.buffer, mean: mean.buffer,
                                              rstd: rstd.buffer, batch: n, tokens: t, cols: d, eps: eps)
        }
        return y.recorded(ModulatedLayerNormBackward(x: x, shift: sh, scale: sc, mean: mean, rstd: rstd))
    }

    /// adaLN-Zero's gated residual `x + gate.unsqueeze(1) * y` in one op: x, y [N, T, D], gate [N, D]. Under
    /// `Autocast` gate and y are bf16 tensors in torch (Linear outputs), so their product is rounded (unfused),
    /// and so is each element of the gate's gradient before the sum over tokens (a product of bf16 tensors).
    public func gatedResidual(gate: Tensor, _ y: Tensor) -> Tensor {
        if let low = Autocast.lowering(dtype), rank == 3 {
            // A GPU in bf16: the composite's values in one pass each way (dgate's sum over tokens in the fused
            // kernels' order), instead of its 3 forward and 4 backward tensors of [N, T, D]. The CPU keeps the composite.
            if low == .bfloat16 && device != .cpu { return Autocast.core { fusedGatedResidual(gate: gate, y, low: low) } }
            return Autocast.core {
                self + (gate.reshaped([shape[0], 1, shape[2]]).expanded(shape).gradientRounded(to: low) * y).rounded(to: low)
            }
        }
        return fusedGatedResidual(gate: gate, y, low: nil)
    }

    /// LayerScale's residual `self + y·gamma` (DINOv2: x, y [..., D], gamma [D]) as one fused gated residual over
    /// every row. Unlike `gatedResidual`, the product is never rounded under Autocast: torch multiplies the bf16
    /// branch output by the float32 gamma parameter in float32 (type promotion), and adds it to the float32 stream;
    /// the gradients likewise (y's is rounded by the bf16 op that made y, as torch casts it to y's dtype).
    public func layerScaledResidual(gamma: Tensor, _ y: Tensor) -> Tensor {
        require(rank >= 1 && gamma.shape == [shape[rank - 1]] && y.shape == shape,
                "layerScaledResidual: input \(shape), gamma \(gamma.shape), branch \(y.shape) (need gamma [D] and the branch shaped as the input)")
        let d = shape[rank - 1], rows = d == 0 ? 0 : count / d
        return reshaped([1, rows, d]).fusedGatedResidual(gate: gamma.reshaped([1, d]), y.reshaped([1, rows, d]), low: nil)
            .reshaped(shape)
    }

    /// The fused kernels, float32/float64 or (`low`) on Autocast's carriers.
    func fusedGatedResidual(gate: Tensor, _ y: Tensor, low: DType?) -> Tensor {
        require(dtype.isComputeFloat, "gatedResidual: needs float32 or float64, got \(dtype) \(shape)")
        require(rank == 3, "gatedResidual: input \(shape) must be [N, T, D]")
        let (n, t, d) = (shape[0], shape[1], shape[2])
        require(y.shape == shape, "gatedResidual: branch \(y.shape) does not match input \(shape)")
        require(gate.shape == [n, d], "gatedResidual: gate \(gate.shape) does not match input \(shape) (need [\(n), \(d)])")
        for (name, p) in [("gate", gate), ("branch", y)] {
            require(p.dtype == dtype && p.device == device,
                    "gatedResidual: \(name) is \(p.dtype) on \(p.device), input \(shape) is \(dtype) on \(device)")
        }
        let x = contiguous(), g = gate.contiguous(), yc = y.contiguous()
        let out = Tensor.empty(like: x)
        if count > 0 {
            backend.gatedResidualForward(x.buffer, gate: g.buffer, yc.buffer, out.buffer, batch: n, tokens: t, cols: d, low: low)
        }
        return out.recorded(GatedResidualBackward(x: x, gate: g, y: yc, low: low))
    }

    /// `linear(weight).biasGeluTanh(bias)` as one GEMM with GELU(tanh) in its epilogue
    /// (`MatmulKernels.linearBiasGeluTanh`), for operands none of which is tracked (sampling, a frozen model); nil
    /// where that does not apply or the backend has no such GEMM (the caller runs the two ops). On CUDA: bf16, or
    /// float32 where TF32 is allowed (the GEMM in TF32, as the plain one; GELU in the epilogue's own float32
    /// arithmetic, within the TF32 rows' error class: selftest "linear + GELU(tanh) (inference, TF32)").
    public func linearBiasGeluTanhUntracked(_ weight: Tensor, _ bias: Tensor) -> Tensor? {
        guard ![self, weight, bias].contains(where: \.isTracked) else { return nil }
        return linearBiasGeluTanhEpilogue(weight, bias, keepsPreActivation: false)?.y
    }

    /// y = geluTanh(self·weightᵀ + bias) by the backend's GEMM with GELU in its epilogue, no autograd, and with
    /// `keepsPreActivation` the pre-activation rounded to y's dtype (what its backward reads); nil where the backend
    /// has no such GEMM for these operands (nothing written).
    func linearBiasGeluTanhEpilogue(_ weight: Tensor, _ bias: Tensor, keepsPreActivation: Bool) -> (preActivation: Tensor?, y: Tensor)? {
        guard backend.gemmEpilogues.contains(.geluTanh), rank >= 1, weight.rank == 2, shape[rank - 1] == weight.shape[1],
              bias.shape == [weight.shape[0]], dtype == weight.dtype, dtype == bias.dtype, device == weight.device,
              device == bias.device, count > 0 else { return nil }
        let x = contiguous(), w = weight.contiguous(), b = bias.contiguous()
        let inF = weight.shape[1], outF = weight.shape[0], shape = Array(shape.dropLast()) + [outF]
        let y = Tensor.empty(shape, dtype: dtype, device: device)
        let h = keepsPreActivation ? Tensor.empty(shape, dtype: dtype, device: device) : nil
        guard backend.linearBiasGeluTanh(rows: count / inF, inF: inF, outF: outF, x: x.buffer, weight: w.buffer, bias: b.buffer,
                                         preActivation: h?.buffer, y: y.buffer) else { return nil }
        return (h, y)
    }

    /// `(x + bias).geluTanh()` in one op, x [..., D], bias [D]: the epilogue of a bias-free `linear`.
    /// torch: `F.gelu(x + bias, approximate="tanh")`.
    public func biasGeluTanh(_ bias: Tensor) -> Tensor {
        require(dtype.isComputeFloat, "biasGeluTanh: needs float32 or float64, got \(dtype) \(shape)")
        require(rank >= 1 && shape[rank - 1] > 0, "biasGeluTanh: input \(shape) needs a non-empty last axis")
        let d = shape[rank - 1]
        require(bias.shape == [d], "biasGeluTanh: bias \(bias.shape) does not match input \(shape) (need [\(d)])")
        require(bias.dtype == dtype && bias.device == device,
                "biasGeluTanh: bias is \(bias.dtype) on \(bias.device), input \(shape) is \(dtype) on \(device)")
        let x = contiguous(), b = bias.contiguous()
        let y = Tensor.empty(like: x)
        if count > 0 { backend.biasGeluTanhForward(x.buffer, bias: b.buffer, y.buffer, rows: count / d, cols: d) }
        return y.recorded(BiasGeluTanhBackward(x: x, bias: b))
    }
}

/// Saves the contiguous input, shift (only as an edge), scale and the per-row statistics.
struct ModulatedLayerNormBackward: Backward {
    let x: Tensor, shift: Tensor, scale: Tensor, mean: Tensor, rstd: Tensor
    var inputs: [Tensor] { [x, shift, scale] }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let dx = Tensor.empty(like: x)
        let dshift = shift.isTracked ? Tensor.empty(like: shift) : nil
        let dscale = scale.isTracked ? Tensor.empty(like: scale) : nil
        if n * t > 0 {
            x.backend.modulatedLayerNormBackward(x.buffer, scale: scale.buffer, mean: mean.buffer, rstd: rstd.buffer,
                                                 dy.contiguous().buffer, dx: dx.buffer, residual: nil, dshift: dshift?.buffer,
                                                 dscale: dscale?.buffer, batch: n, tokens: t, cols: d)
        } else {
            for g in [dshift, dscale] { if let g, g.count > 0 { g.backend.fill(g.buffer, count: g.count, value: 0) } }
        }
        return [x.isTracked ? dx : nil, dshift, dscale]
    }
}

/// Saves gate and the branch y; dx = dout passes through.
struct GatedResidualBackward: Backward {
    let x: Tensor, gate: Tensor, y: Tensor, low: DType?
    var inputs: [Tensor] { [x, gate, y] }

    func gradients(_ dout: Tensor) -> [Tensor?] {
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let dy = y.isTracked ? Tensor.empty(like: y) : nil
        let dgate = gate.isTracked ? Tensor.empty(like: gate) : nil
        if dy != nil || dgate != nil {
            if n * t > 0 && d > 0 {
                x.backend.gatedResidualBackward(gate: gate.buffer, y.buffer, dout.contiguous().buffer, dy: dy?.buffer,
                                                dgate: dgate?.buffer, batch: n, tokens: t, cols: d, low: low)
            } else if let dgate, dgate.count > 0 {
                dgate.backend.fill(dgate.buffer, count: dgate.count, value: 0)
            }
        }
        return [x.isTracked ? dout : nil, dgate, dy]
    }
}

/// Saves the pre-bias input and the bias; the backward recomputes u = x + bias.
struct BiasGeluTanhBackward: Backward {
    let x: Tensor, bias: Tensor
    var inputs: [Tensor] { [x, bias] }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let d = x.shape[x.rank - 1]
        let dx = Tensor.empty(like: x)
        let db = bias.isTracked ? Tensor.empty(like: bias) : nil
        if x.count > 0 {
            x.backend.biasGeluTanhBackward(x.buffer, bias: bias.buffer, dy.contiguous().buffer, dx: dx.buffer,
                                           dbias: db?.buffer, rows: x.count / d, cols: d)
        } else if let db {
            db.backend.fill(db.buffer, count: db.count, value: 0)
        }
        return [x.isTracked ? dx : nil, db]
    }
}
