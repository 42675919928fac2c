import HasteTensor

/// The one conversion between hub checkpoints and our teacher (STYLE §2.6): HASTE's load-time
/// position-embedding resample (spec/dinov2.md §3), and the teacher's image preprocessing (§4).
extension DINOv2 {
    /// [1, 1 + M², D] → [1, 1 + g², D]: class entry kept, the M×M grid resized with ANTIALIASED bicubic
    /// (torch `interpolate(mode="bicubic", antialias=True, align_corners=False)`, A = −0.5) in float32.
    public static func resamplePosEmbed(_ pos: Tensor, to grid: Int) -> Tensor {
        let d = pos.shape[2], m = Int(Double(pos.shape[1] - 1).squareRoot())
        require(pos.rank == 3 && m * m == pos.shape[1] - 1, "resamplePosEmbed: \(pos.shape) is not [1, 1 + M², D]")
        if m == grid { return pos }
        let cls = pos.narrowed(1, start: 0, length: 1)
        let g = pos.narrowed(1, start: 1, length: m * m).reshaped([1, m, m, d]).permuted([0, 3, 1, 2])  // (1, D, M, M)
        let r = g.resizeBicubic(height: grid, width: grid, antialias: true)                            // (1, D, g, g)
        return Tensor.cat([cls, r.permuted([0, 2, 3, 1]).reshaped([1, grid * grid, d])], axis: 1)
    }

    /// Converts a hub state dict for this model: resamples `pos_embed` when its grid differs.
    public func adapt(_ state: [String: Tensor]) -> [String: Tensor] {
        var s = state
        if let pos = s["pos_embed"], pos.rank == 3, pos.shape[1] != 1 + config.tokens {
            s["pos_embed"] = DINOv2.resamplePosEmbed(pos.to(.float32), to: config.grid)
        }
        return s
    }

    /// uint8 (or float 0…255) images [B, 3, R, R] → /255 → ImageNet mean/std → plain bicubic resize to
    /// `size` (A = −0.75, no antialias). Order: normalise THEN resize (spec/dinov2.md §4).
    public static func preprocess(_ images: Tensor, size: Int) -> Tensor {
        require(images.rank == 4 && images.shape[1] == 3, "DINOv2.preprocess: images \(images.shape), expected [B, 3, H, W]")
        let device = images.device
        let x = images.to(.float32) / Tensor.scalar(255, device: device)      // torch: x.float() / 255 (a true division)
        let mean = Tensor([Float(0.485), 0.456, 0.406], shape: [1, 3, 1, 1], device: device)
        let std = Tensor([Float(0.229), 0.224, 0.225], shape: [1, 3, 1, 1], device: device)
        let normed = (x - mean) / std
        if images.shape[2] == size && images.shape[3] == size { return normed }
        return normed.resizeBicubic(height: size, width: size, antialias: false)
    }
}
