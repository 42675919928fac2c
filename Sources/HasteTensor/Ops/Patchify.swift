/// Patch layouts of SiT (reference `models/sit.py`, `SiT.unpatchify`). Composites of views and one copy:
/// no kernels or backward of their own (STYLE §2.4).
extension Tensor {
    /// torch (SiT.unpatchify): `x.reshape(N, h, w, p, p, C)`, `einsum('nhwpqc->nchpwq')`,
    /// `reshape(N, C, h*p, w*p)`. [N, T, p·p·C] → [N, C, h·p, w·p] with h = w = √T: token hi·w + wi, feature
    /// (pi·p + qi)·C + ch becomes pixel (ch, hi·p + pi, wi·p + qi). The final linear emits (p, p, C) per token.
    public func unpatchify(patch p: Int, channels c: Int) -> Tensor {
        require(rank == 3 && p > 0 && c > 0 && shape[2] == p * p * c,
                     "unpatchify: shape \(shape) is not [N, T, p·p·C] with p = \(p), C = \(c)")
        let n = shape[0], t = shape[1]
        var h = 0
        while (h + 1) * (h + 1) <= t { h += 1 }
        require(h * h == t, "unpatchify: \(t) tokens in \(shape) do not form a square grid")
        return reshaped([n, h, h, p, p, c])      // n h w p q c
            .permuted([0, 5, 1, 3, 2, 4])        // n c h p w q
            .contiguous()
            .reshaped([n, c, h * p, h * p])
    }
}
