import Foundation
import HasteTensor

/// Fixed embeddings shared by the DiT family (reference `models/sit.py`).
public enum Embeddings {
    /// 2-D sin-cos table [grid², dim] in float64 math, stored float32 (spec/sit.md §3): for token
    /// n = row·grid + col, concat(sin(col·ω), cos(col·ω), sin(row·ω), cos(row·ω)), ω_k = 10000^(−k/Q), Q = dim/4.
    /// The COLUMN coordinate fills the first half.
    public static func sincos2D(dim: Int, grid: Int) -> Tensor {
        require(dim % 4 == 0, "sincos2D: dim \(dim) is not divisible by 4")
        let q = dim / 4
        let omega = (0..<q).map { 1.0 / Foundation.pow(10000.0, Double($0) / Double(q)) }
        var table = [Float](repeating: 0, count: grid * grid * dim)
        for n in 0..<(grid * grid) {
            let row = Double(n / grid), col = Double(n % grid)
            for k in 0..<q {
                let a = col * omega[k], b = row * omega[k]
                table[n * dim + k] = Float(Foundation.sin(a))
                table[n * dim + q + k] = Float(Foundation.cos(a))
                table[n * dim + 2 * q + k] = Float(Foundation.sin(b))
                table[n * dim + 3 * q + k] = Float(Foundation.cos(b))
            }
        }
        return Tensor(table, shape: [grid * grid, dim])
    }

    /// Sinusoidal timestep features [N, dim] = concat(cos(t·f), sin(t·f)), f_i = exp(−ln(10000)·i/half) in
    /// float32 (spec/sit.md §4: t as given in [0, 1], no ×1000; cos block first).
    public static func timestep(_ t: Tensor, dim: Int) -> Tensor {
        let half = dim / 2
        let c = Float(-Foundation.log(10000.0))                                // torch: float32 arange × python scalar
        let freqs = (0..<half).map { Foundation.exp(c * Float($0) / Float(half)) }
        let f = Tensor(freqs, shape: [1, half]).to(t.dtype).to(t.device)
        let args = t.reshaped([t.count, 1]) * f                                   // (N, half)
        var parts = [args.cos(), args.sin()]
        if dim % 2 == 1 { parts.append(Tensor.zeros([t.count, 1], dtype: t.dtype, device: t.device)) }
        return Tensor.cat(parts, axis: -1)                                        // (N, dim)
    }
}
