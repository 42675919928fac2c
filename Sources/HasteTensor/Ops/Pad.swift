/// Constant-zero padding of the last two axes. torch: `F.pad(x, (left, right, top, bottom))` (mode
/// "constant", value 0). No kernel of its own: the output is zero-filled and x is copied into its interior
/// with `MemoryKernels.stridedCopy`; the backward is a view of dy's interior.
extension Tensor {
    /// torch: `F.pad(x, (left, right, top, bottom))` for x [..., H, W] (rank ≥ 2) → [..., top + H + bottom,
    /// left + W + right]. The SD-VAE downsampler pads (0, 1, 0, 1) before its stride-2 convolution.
    public func padded(left: Int = 0, right: Int = 0, top: Int = 0, bottom: Int = 0) -> Tensor {
        require(rank >= 2, "padded: input \(shape) needs at least two axes (…, H, W)")
        require(left >= 0 && right >= 0 && top >= 0 && bottom >= 0,
                     "padded: negative padding (left \(left), right \(right), top \(top), bottom \(bottom)) for \(shape); crop with narrowed(_:start:length:)")
        if left == 0 && right == 0 && top == 0 && bottom == 0 { return self }
        let h = shape[rank - 2], w = shape[rank - 1]
        var outShape = shape
        outShape[rank - 2] = top + h + bottom
        outShape[rank - 1] = left + w + right
        let y = Tensor.zeros(outShape, dtype: dtype, device: device)
        if count > 0 {
            // The interior starts at (top, left) of every plane and keeps y's strides.
            let interior = Buffer(storage: y.storage, offset: top * outShape[rank - 1] + left, dtype: dtype)
            backend.stridedCopy(from: stridedBuffer, srcStrides: strides,
                                to: interior, dstStrides: y.strides, shape: shape)
        }
        return y.recorded(PadBackward(x: self, top: top, left: left))
    }
}

/// dx = dy[..., top:top+H, left:left+W]: a view, no copy.
struct PadBackward: Backward {
    let x: Tensor, top: Int, left: Int
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let r = x.rank
        return [dy.narrowed(r - 2, start: top, length: x.shape[r - 2]).narrowed(r - 1, start: left, length: x.shape[r - 1])]
    }
}
