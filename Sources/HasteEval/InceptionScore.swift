import Foundation
import HasteTensor

/// Inception Score as ADM's evaluator computes it (spec/evaluation.md §2.3; openai/improved-gan): class
/// probabilities p = softmax(logits) split into consecutive chunks of `splitSize` rows (ADM: 5 000, i.e. 10
/// chunks for 50 000 samples; a shorter last chunk is scored as it is); per chunk exp(mean_i KL(p_i ‖ mean_j p_j));
/// the score is the mean over chunks. Computed in float64; **[robust]** 0·log 0 counts as 0 (numpy gives NaN).
public enum InceptionScore {
    public static let admSplitSize = 5000

    /// logits [N, classes] (FIDInceptionV3's, no bias) → the score.
    public static func compute(logits: Tensor, splitSize: Int = admSplitSize) -> Double {
        require(logits.rank == 2 && logits.shape[0] >= 1 && splitSize >= 1,
                "InceptionScore: logits \(logits.shape) with split size \(splitSize)")
        let n = logits.shape[0], k = logits.shape[1]
        let p = logits.to(.cpu).to(.float64).softmax(axis: -1).scalars(as: Double.self)
        var scores: [Double] = []
        for start in stride(from: 0, to: n, by: splitSize) {
            scores.append(chunkScore(p, rows: start..<min(start + splitSize, n), classes: k))
        }
        return scores.reduce(0, +) / Double(scores.count)
    }

    private static func chunkScore(_ p: [Double], rows: Range<Int>, classes k: Int) -> Double {
        var marginal = [Double](repeating: 0, count: k)
        for i in rows { for j in 0..<k { marginal[j] += p[i * k + j] } }
        for j in 0..<k { marginal[j] /= Double(rows.count) }
        var kl = 0.0
        for i in rows {
            for j in 0..<k where p[i * k + j] > 0 {
                kl += p[i * k + j] * (Foundation.log(p[i * k + j]) - Foundation.log(marginal[j]))
            }
        }
        return Foundation.exp(kl / Double(rows.count))
    }
}
