import HasteTensor

/// How images become the FID network's input (spec/evaluation.md §2.2 for ADM, §4 for pytorch-fid).
public enum InceptionInput: String, Sendable, CaseIterable {
    /// ADM's evaluator (TF graph): float 0…255 → TF1 legacy bilinear resize to 299 → (x − 128) / 128.
    case adm
    /// pytorch-fid: x / 255 → torch bilinear (align_corners=False) to 299 → 2x − 1.
    case pytorchFID = "pytorch-fid"

    /// images [N, 3, H, W], uint8 or float in 0…255 → [N, 3, 299, 299] float32 in [-1, 1]. Forward only.
    public func prepare(_ images: Tensor) -> Tensor {
        require(images.rank == 4 && images.shape[1] == 3, "InceptionInput.prepare: images \(images.shape), expected [N, 3, H, W] RGB")
        let size = FIDInceptionV3.inputSize
        let x = images.to(.float32)
        switch self {
        case .adm:
            return (BilinearResize.tfLegacy.apply(x, height: size, width: size) - 128) * (1.0 / 128)
        case .pytorchFID:
            let unit = x / Tensor.scalar(255, device: x.device)                                      // torchvision ToTensor: a true division
            return BilinearResize.torch.apply(unit, height: size, width: size) * 2 - 1
        }
    }
}

/// Bilinear resizing as the two FID pipelines do it, written as matrix products: one axis at a time, y =
/// M·x with M [out, in] holding each output's two taps (an exact zero elsewhere adds nothing). Weights are
/// computed in float32, as both references do. Forward (and backward) come from `matmul`.
public enum BilinearResize: Sendable {
    /// TF1 `ResizeBilinear`, align_corners=False, half_pixel_centers=False (legacy): src = dst·(in/out),
    /// lower = ⌊src⌋, upper = min(⌈src⌉, in − 1), lerp = src − ⌊src⌋ (TF `compute_interpolation_weights`).
    case tfLegacy
    /// torch `F.interpolate(mode="bilinear", align_corners=False)`: src = max((dst + ½)·(in/out) − ½, 0),
    /// i0 = ⌊src⌋, i1 = i0 + 1 unless i0 is the last index, λ = src − i0 (ATen `upsample_bilinear2d`).
    case torch

    /// M [outSize, inSize] float32: row i holds output i's weights.
    public func weights(from inSize: Int, to outSize: Int) -> Tensor {
        require(inSize >= 1 && outSize >= 1, "BilinearResize.weights: sizes \(inSize) → \(outSize)")
        var m = [Float](repeating: 0, count: outSize * inSize)
        let scale = Float(inSize) / Float(outSize)
        for i in 0..<outSize {
            let (lo, hi, lerp) = taps(i, scale: scale, inSize: inSize)
            m[i * inSize + lo] += 1 - lerp
            m[i * inSize + hi] += lerp
        }
        return Tensor(m, shape: [outSize, inSize])
    }

    private func taps(_ i: Int, scale: Float, inSize: Int) -> (Int, Int, Float) {
        switch self {
        case .tfLegacy:
            let src = Float(i) * scale, f = src.rounded(.down)
            return (Swift.max(Int(f), 0), Swift.min(Int(src.rounded(.up)), inSize - 1), src - f)
        case .torch:
            let src = Swift.max(scale * (Float(i) + 0.5) - 0.5, 0)
            let i0 = Swift.min(Int(src), inSize - 1)
            let i1 = i0 < inSize - 1 ? i0 + 1 : i0
            return (i0, i1, Swift.min(Swift.max(src - Float(i0), 0), 1))
        }
    }

    /// x [N, C, H, W] float → [N, C, height, width]: the width pass, then the height pass; an axis whose size
    /// does not change is left alone (both filters are the identity there).
    public func apply(_ x: Tensor, height: Int, width: Int) -> Tensor {
        require(x.rank == 4 && x.dtype.isComputeFloat, "BilinearResize.apply: input \(x.shape) \(x.dtype), expected float NCHW")
        var y = x
        if x.shape[3] != width {
            y = y.matmul(weights(from: x.shape[3], to: width).to(x.dtype).to(x.device).transposed(0, 1))   // (N, C, H, width)
        }
        if x.shape[2] != height {
            y = weights(from: x.shape[2], to: height).to(x.dtype).to(x.device).matmul(y)                   // (N, C, height, width)
        }
        return y
    }
}
