/// Image resampling on NCHW tensors. torch: `F.interpolate(x, scale_factor=2, mode="nearest")` and
/// `F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=...)`.
public protocol ResizeKernels: AnyObject {
    /// x [planes, height, width] → y [planes, 2·height, 2·width], each pixel repeated over a 2×2 block.
    func upsampleNearest2x(x: Buffer, y: Buffer, planes: Int, height: Int, width: Int)
    /// dy [planes, 2·height, 2·width] → dx [planes, height, width]: the sum of each 2×2 block
    /// (in torch's order: top-left, top-right, bottom-left, bottom-right).
    func upsampleNearest2xBackward(dy: Buffer, dx: Buffer, planes: Int, height: Int, width: Int)
    /// Resamples one axis: x viewed as [outer, inSize, inner] → y [outer, outSize, inner] with
    /// y[o, i, k] = Σ_t w_t(i)·x[o, index_t(i), k], the taps and weights given by `filter` (see `ResizeFilter`),
    /// summed in tap order. Weights are computed in the buffers' dtype, as torch does.
    func resample(_ filter: ResizeFilter, x: Buffer, y: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int)
    /// The transpose of `resample` with the same weights: dx[o, index_t(i), k] += w_t(i)·dy[o, i, k]. Overwrites dx.
    func resampleBackward(_ filter: ResizeFilter, dy: Buffer, dx: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int)
}

/// One-axis interpolation filters, both with align_corners=False and scale = inSize / outSize.
public enum ResizeFilter: Sendable, Equatable {
    /// torch bicubic, antialias=False: Keys cubic with A = −0.75 at source coordinate (i + 0.5)·scale − 0.5,
    /// four taps whose indices are clamped to the border (edge replicate).
    case bicubic
    /// torch bicubic, antialias=True (`_upsample_bicubic2d_aa`, PIL's filter): Keys cubic with A = −0.5,
    /// support 2·Swift.max(scale, 1) around centre (i + 0.5)·scale, taps limited to the input, weights normalised
    /// to sum 1 per output.
    case bicubicAntialias
}

extension Tensor {
    /// torch: `F.interpolate(x, scale_factor=2, mode="nearest")` on NCHW: [N, C, H, W] → [N, C, 2H, 2W].
    public func upsampleNearest2x() -> Tensor {
        require(rank == 4, "upsampleNearest2x: input \(shape) is not NCHW")
        require(dtype.isComputeFloat, "upsampleNearest2x: needs float32 or float64, got \(dtype) \(shape)")
        let x = contiguous()
        let y = Tensor.empty([shape[0], shape[1], 2 * shape[2], 2 * shape[3]], dtype: dtype, device: device)
        backend.upsampleNearest2x(x: x.buffer, y: y.buffer, planes: shape[0] * shape[1], height: shape[2], width: shape[3])
        return y.recorded(UpsampleNearest2xBackward(x: x))
    }

    /// torch: `F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=antialias)`
    /// on NCHW. Separable like torch: the width pass first, then the height pass; an axis whose size does not
    /// change is skipped (both filters are the identity there). No clamping of the result.
    public func resizeBicubic(height: Int, width: Int, antialias: Bool) -> Tensor {
        require(rank == 4 && height >= 1 && width >= 1 && shape[2] >= 1 && shape[3] >= 1,
                     "resizeBicubic: input \(shape) to \(height)×\(width) (need NCHW and non-empty sizes)")
        require(dtype.isComputeFloat, "resizeBicubic: needs float32 or float64, got \(dtype) \(shape)")
        let filter: ResizeFilter = antialias ? .bicubicAntialias : .bicubic
        let planes = shape[0] * shape[1], h = shape[2], w = shape[3]
        var cur = contiguous()
        let x = cur
        if w != width {   // [planes·H, W] → [planes·H, width]
            let t = Tensor.empty([shape[0], shape[1], h, width], dtype: dtype, device: device)
            backend.resample(filter, x: cur.buffer, y: t.buffer, outer: planes * h, inSize: w, outSize: width, inner: 1)
            cur = t
        }
        if h != height {   // [planes, H, width] → [planes, height, width]
            let t = Tensor.empty([shape[0], shape[1], height, width], dtype: dtype, device: device)
            backend.resample(filter, x: cur.buffer, y: t.buffer, outer: planes, inSize: h, outSize: height, inner: width)
            cur = t
        }
        let y = cur === x ? x.clone() : cur   // torch returns a copy when no axis changes
        return y.recorded(ResizeBicubicBackward(x: x, filter: filter, height: height, width: width))
    }
}

/// Saves only the input (for its shape): dx = the sum of each 2×2 block of dy.
struct UpsampleNearest2xBackward: Backward {
    let x: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dx = Tensor.empty(like: x)
        x.backend.upsampleNearest2xBackward(dy: dy.buffer, dx: dx.buffer, planes: x.shape[0] * x.shape[1],
                                            height: x.shape[2], width: x.shape[3])
        return [dx]
    }
}

/// The resize is linear in x: the backward applies the transposed passes in reverse order (height, then width).
/// Saves the input only for its shape.
struct ResizeBicubicBackward: Backward {
    let x: Tensor, filter: ResizeFilter, height: Int, width: Int
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3], be = dy.backend
        var cur = dy
        if h != height {   // [planes, height, width] → [planes, H, width]
            let t = Tensor.empty([n, c, h, width], dtype: dy.dtype, device: dy.device)
            be.resampleBackward(filter, dy: cur.buffer, dx: t.buffer, outer: n * c, inSize: h, outSize: height, inner: width)
            cur = t
        }
        if w != width {   // [planes·H, width] → [planes·H, W]
            let t = Tensor.empty(x.shape, dtype: dy.dtype, device: dy.device)
            be.resampleBackward(filter, dy: cur.buffer, dx: t.buffer, outer: n * c * h, inSize: w, outSize: width, inner: 1)
            cur = t
        }
        return [cur === dy ? dy.clone() : cur]
    }
}
