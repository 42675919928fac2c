/// Normalisation over the last axis (layerNorm) and over channel groups (groupNorm).
/// torch: `F.layer_norm(x, (D,), weight, bias, eps)`, `F.group_norm(x, groups, weight, bias, eps)`.
public protocol NormKernels: AnyObject {
    /// x, y: [rows, cols] contiguous; weight, bias: [cols] or nil (each optional on its own).
    /// y = (x − mean)·rstd·weight + bias per row, rstd = 1/√(biased var + eps). Saves mean, rstd: [rows].
    func layerNormForward(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, mean: Buffer, rstd: Buffer,
                          rows: Int, cols: Int, eps: Double)
    /// From the saved mean and rstd: dx [rows, cols] = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·weight;
    /// dweight [cols] = Σ_rows dy·x̂, dbias [cols] = Σ_rows dy (written, not accumulated; nil = not wanted).
    func layerNormBackward(_ x: Buffer, weight: Buffer?, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                           dweight: Buffer?, dbias: Buffer?, rows: Int, cols: Int)
    /// Forward-only GroupNorm (+ SiLU) where the backend has a fused kernel for it (CPU float32, spatial a multiple
    /// of 16; CUDA float32): x, y [batch, channels, spatial] contiguous, weight/bias [channels] or nil; y = silu?(((x − mean)·rstd)
    /// ·weight[c] + bias[c]) with the bits of `groupNorm`'s composite. Returns false, touching nothing, elsewhere.
    func groupNormInference(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, batch: Int, channels: Int,
                            groups: Int, spatial: Int, eps: Double, silu: Bool) -> Bool
}

extension NormKernels {
    public func groupNormInference(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, batch: Int, channels: Int,
                                   groups: Int, spatial: Int, eps: Double, silu: Bool) -> Bool { false }
}

extension Tensor {
    /// torch: `F.layer_norm(x, normalized_shape=(x.shape[-1],), weight, bias, eps)`. No default eps on
    /// purpose (STYLE §5: DiT/SiT use 1e-6, PyTorch's default is 1e-5).
    public func layerNorm(weight: Tensor? = nil, bias: Tensor? = nil, eps: Double) -> Tensor {
        require(dtype.isComputeFloat, "layerNorm: needs float32 or float64, got \(dtype) \(shape)")
        require(rank >= 1 && shape[rank - 1] > 0, "layerNorm: input \(shape) needs a non-empty last axis")
        let d = shape[rank - 1]
        for (name, p) in [("weight", weight), ("bias", bias)] {
            guard let p else { continue }
            require(p.shape == [d], "layerNorm: \(name) \(p.shape) does not match input \(shape) (need [\(d)])")
            require(p.dtype == dtype && p.device == device,
                         "layerNorm: \(name) is \(p.dtype) on \(p.device), input \(shape) is \(dtype) on \(device)")
        }
        let x = contiguous(), w = weight?.contiguous(), b = bias?.contiguous()
        let rows = count / d
        let y = Tensor.empty(like: x)
        let mean = Tensor.empty([rows], dtype: dtype, device: device), rstd = Tensor.empty(like: mean)
        if rows > 0 {
            backend.layerNormForward(x.buffer, weight: w?.buffer, bias: b?.buffer, y.buffer, mean: mean.buffer,
                                     rstd: rstd.buffer, rows: rows, cols: d, eps: eps)
        }
        return y.recorded(LayerNormBackward(x: x, weight: w, bias: b, mean: mean, rstd: rstd))
    }

    /// torch: `F.group_norm(x, groups, weight, bias, eps)` for x [N, C, *]; weight, bias [C]; with `silu`,
    /// `F.silu` of that (diffusers' norm → nonlinearity). Composite: the layerNorm kernel over rows
    /// [N·groups, (C/groups)·∏*] (each group is contiguous), then the per-channel affine by broadcasting and the
    /// activation, so autograd derives every gradient from kernels already checked. When nothing records (the VAE,
    /// under noGrad), a backend's fused `groupNormInference` gives the same bits without the three intermediate
    /// tensors where it has one (the CPU's: float32, ∏* a multiple of 16).
    public func groupNorm(groups: Int, weight: Tensor? = nil, bias: Tensor? = nil, eps: Double, silu: Bool = false) -> Tensor {
        require(rank >= 2, "groupNorm: input \(shape) must be [N, C, *]")
        let c = shape[1]
        require(groups > 0 && c % groups == 0, "groupNorm: \(c) channels of \(shape) do not split into \(groups) groups")
        for (name, p) in [("weight", weight), ("bias", bias)] {
            guard let p else { continue }
            require(p.shape == [c], "groupNorm: \(name) \(p.shape) does not match input \(shape) (need [\(c)])")
            require(p.dtype == dtype && p.device == device,
                         "groupNorm: \(name) is \(p.dtype) on \(p.device), input \(shape) is \(dtype) on \(device)")
        }
        require(count > 0, "groupNorm: empty input \(shape)")
        if !(GradMode.isEnabled && [self, weight, bias].contains(where: { $0?.isTracked == true })) {   // nothing records
            let x = contiguous(), y = Tensor.empty(like: x)
            if backend.groupNormInference(x.buffer, weight: weight?.contiguous().buffer, bias: bias?.contiguous().buffer,
                                          y.buffer, batch: shape[0], channels: c, groups: groups,
                                          spatial: count / (shape[0] * c), eps: eps, silu: silu) {
                if !GradMode.isEnabled, let reads = CheckpointReads.current { reads.note([self, weight, bias].compactMap { $0 }) }
                return y
            }
        }
        let normalized = reshaped([shape[0] * groups, -1]).layerNorm(eps: eps).reshaped(shape)   // [N, C, *]
        let perChannel = [c] + [Int](repeating: 1, count: rank - 2)                              // [C, 1, …]
        var y = normalized
        if let weight { y = y * weight.reshaped(perChannel) }
        if let bias { y = y + bias.reshaped(perChannel) }
        return silu ? y.silu() : y
    }
}

/// Saves the contiguous input, the affine parameters and the per-row statistics (mean, rstd).
struct LayerNormBackward: Backward {
    let x: Tensor, weight: Tensor?, bias: Tensor?, mean: Tensor, rstd: Tensor
    var inputs: [Tensor] { [x] + [weight, bias].compactMap { $0 } }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let cols = x.shape[x.rank - 1], rows = x.count / cols
        let dx = Tensor.empty(like: x)
        let dw = weight.map { $0.isTracked ? Tensor.empty(like: $0) : nil } ?? nil
        let db = bias.map { $0.isTracked ? Tensor.empty(like: $0) : nil } ?? nil
        if rows > 0 {
            x.backend.layerNormBackward(x.buffer, weight: weight?.buffer, mean: mean.buffer, rstd: rstd.buffer,
                                        dy.contiguous().buffer, dx: dx.buffer, dweight: dw?.buffer, dbias: db?.buffer,
                                        rows: rows, cols: cols)
        } else {
            for g in [dw, db] { if let g { g.backend.fill(g.buffer, count: g.count, value: 0) } }
        }
        var grads: [Tensor?] = [dx]
        if weight != nil { grads.append(dw) }
        if bias != nil { grads.append(db) }
        return grads
    }
}
