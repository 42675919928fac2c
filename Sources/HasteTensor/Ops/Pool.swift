/// Sliding-window pooling on NCHW tensors (torch: `F.max_pool2d`, `F.avg_pool2d`), for the FID Inception
/// network. **Forward only**: these ops serve evaluation networks and record no backward node; a tracked
/// input while recording is on traps (call them under `noGrad`, or on detached tensors).
///
/// `Backend` (Backend.swift) lists `PoolKernels` among its kernel families.
public protocol PoolKernels: AnyObject {
    /// x [planes, height, width] → y [planes, outHeight, outWidth]: the maximum over each window, padding
    /// counting as −inf (never chosen); NaN propagates as in torch.
    func maxPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry)
    /// x [planes, height, width] → y [planes, outHeight, outWidth]: the window sum, summed row by row in
    /// window order, divided by the window area clipped to the padded input (`countIncludePad`) or by the
    /// number of input pixels it covers (padding excluded: the FID Inception's average pools).
    func avgPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry, countIncludePad: Bool)
}

/// One plane's pooling window: square kernel, equal stride and zero-based symmetric padding on both axes,
/// torch's floor mode (`ceil_mode=False`), dilation 1.
public struct PoolGeometry: Sendable, Equatable {
    public let height: Int, width: Int
    public let kernel: Int, stride: Int, padding: Int

    public init(height: Int, width: Int, kernel: Int, stride: Int, padding: Int) {
        self.height = height; self.width = width
        self.kernel = kernel; self.stride = stride; self.padding = padding
    }

    /// torch: floor((H + 2·padding − kernel) / stride) + 1.
    public var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
}

extension Tensor {
    /// torch: `F.max_pool2d(x, kernel, stride, padding)` on NCHW [N, C, H, W] → [N, C, Ho, Wo]. Forward only.
    public func maxPool2d(kernel: Int, stride: Int, padding: Int = 0) -> Tensor {
        let g = poolGeometry("maxPool2d", kernel: kernel, stride: stride, padding: padding)
        let x = contiguous()
        let y = Tensor.empty([shape[0], shape[1], g.outHeight, g.outWidth], dtype: dtype, device: device)
        if y.count > 0 { backend.maxPool2d(x: x.buffer, y: y.buffer, planes: shape[0] * shape[1], geometry: g) }
        return y
    }

    /// torch: `F.avg_pool2d(x, kernel, stride, padding, count_include_pad=countIncludePad)` on NCHW. Forward only.
    /// The FID Inception averages with `countIncludePad: false` (padded zeros do not dilute border means).
    public func avgPool2d(kernel: Int, stride: Int, padding: Int = 0, countIncludePad: Bool) -> Tensor {
        let g = poolGeometry("avgPool2d", kernel: kernel, stride: stride, padding: padding)
        let x = contiguous()
        let y = Tensor.empty([shape[0], shape[1], g.outHeight, g.outWidth], dtype: dtype, device: device)
        if y.count > 0 {
            backend.avgPool2d(x: x.buffer, y: y.buffer, planes: shape[0] * shape[1], geometry: g, countIncludePad: countIncludePad)
        }
        return y
    }

    /// Validates a pooling call (R3) and returns its geometry.
    private func poolGeometry(_ op: String, kernel: Int, stride: Int, padding: Int) -> PoolGeometry {
        require(!(GradMode.isEnabled && isTracked),
                "\(op): forward only (no backward); input \(shape) is tracked by autograd: call it under noGrad or detach the input")
        require(rank == 4, "\(op): input \(shape) is not NCHW")
        require(dtype.isComputeFloat, "\(op): needs float32 or float64, got \(dtype) \(shape)")
        require(kernel >= 1 && stride >= 1 && padding >= 0 && 2 * padding <= kernel,
                "\(op): kernel \(kernel), stride \(stride), padding \(padding) (need kernel, stride ≥ 1 and 0 ≤ padding ≤ kernel/2, as torch)")
        let g = PoolGeometry(height: shape[2], width: shape[3], kernel: kernel, stride: stride, padding: padding)
        require(g.outHeight >= 1 && g.outWidth >= 1,
                "\(op): kernel \(kernel) with padding \(padding) does not fit input \(shape)")
        return g
    }
}
