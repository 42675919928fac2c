import HasteTensor

/// The HASTE objective's three terms (spec/method.md §4, §6, §7), as composites over differentiable ops.
public enum Losses {
    /// Mean over batch of the per-sample mean over (C, H, W) of (pred − v*)², v* = α'(t)·x0 + σ'(t)·ε.
    public static func denoising(prediction: Tensor, x0: Tensor, noise: Tensor, t: Tensor, path: PathType) -> Tensor {
        let c = path.coefficients(t.reshaped([t.count, 1, 1, 1]))
        let target = c.dAlpha * x0 + c.dSigma * noise
        return (prediction - target).square().mean()
    }

    /// −(mean cosine similarity) between each projector output [B, T, z] and its teacher's features [B, T, z],
    /// averaged over teachers, batch and tokens (eps 1e-12 as F.normalize).
    public static func projection(_ projections: [Tensor], _ teacher: [Tensor]) -> Tensor {
        require(projections.count == teacher.count && !projections.isEmpty,
                     "projection loss: \(projections.count) projectors for \(teacher.count) teachers")
        var total: Tensor?
        for (z, y) in zip(projections, teacher) {
            require(z.shape == y.shape, "projection loss: projector output \(z.shape) vs teacher features \(y.shape)")
            let cos = z.l2Normalized(axis: -1).sumOfProducts(y.l2Normalized(axis: -1), axis: -1)    // (B, T)
            let term = -cos.mean()
            total = total.map { $0 + term } ?? term
        }
        return total! / Double(projections.count)
    }

    /// Cross-entropy between teacher and student attention rows: for each (student, teacher) layer pair,
    /// P = softmax(teacher logits row), log Q = log_softmax(student row), CE = mean over rows of −Σ P·log Q, using
    /// the first `heads` heads of each; averaged over pairs. Teacher logits carry no gradient.
    public static func attention(student: [Int: Tensor], teacher: [Int: Tensor], pairs: [(student: Int, teacher: Int)],
                                 heads: Int) -> Tensor {
        require(!pairs.isEmpty, "attention loss: no layer pairs")
        var total: Tensor?
        for pair in pairs {
            guard let s = student[pair.student], let t = teacher[pair.teacher] else {
                fatalError("attention loss: logits of student block \(pair.student) or teacher block \(pair.teacher) were not computed")
            }
            require(s.shape[2] == t.shape[2] && s.shape[3] == t.shape[3] && s.shape[0] == t.shape[0],
                         "attention loss: student logits \(s.shape) vs teacher \(t.shape): token counts must agree")
            let ce = s.softCrossEntropy(target: t.detached(), leadingHeads: heads)   // −Σ softmax(t)·logSoftmax(s), first heads, mean over B·H·T rows
            total = total.map { $0 + ce } ?? ce
        }
        return total! / Double(pairs.count)
    }
}
