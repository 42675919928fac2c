import HasteDistributed
import HasteTensor

/// Data parallelism as DDP does it (issue #13): every rank holds the whole model and computes its share of
/// each global batch (`--batch-size` stays the global batch); losses are means over a rank's samples weighed by
/// its share, so summing the ranks' gradients gives the gradient of the global mean; clipping, AdamW and EMA
/// then run identically everywhere. Per-sample draws depend on (seed, micro-batch, global sample index) only
/// (`Objective.draw`), so the losses do not depend on the rank count. Rank 0 alone writes.
extension Trainer {
    /// Whether the backward walk feeds the reducer: with several ranks, or with device collectives even alone
    /// (`--dist-backend nccl` on one GPU runs the whole NCCL path over a 1-rank communicator).
    var sumsGradients: Bool { comm.size > 1 || collectives != nil }

    /// Every rank needs at least one sample of each batch.
    static func checkShares(batchSize: Int, ranks: Int) throws {
        guard batchSize >= ranks else {
            throw HasteError.config(key: "batch-size", detail: "the global batch \(batchSize) is smaller than the \(ranks) ranks sharing it; "
                                    + "raise batch-size to at least \(ranks), or start fewer ranks")
        }
    }

    /// Rank 0's choice of checkpoint, on every rank (ranks could otherwise list a directory mid-write apart);
    /// a rank that cannot read that file then fails with its path (a run directory every node must see).
    func agreeOnCheckpoint(_ found: (step: Int, path: String)?) -> (step: Int, path: String)? {
        guard comm.size > 1 else { return found }
        let text = comm.broadcast(found.map { "\($0.step)\n\($0.path)" } ?? "")
        let parts = text.split(separator: "\n", maxSplits: 1)
        guard parts.count == 2, let step = Int(parts[0]) else { return nil }
        return (step, String(parts[1]))
    }

    /// Finishes the gradient sum the backward walk started and sums the (already weighed) loss terms.
    func sumAcrossRanks(_ local: (Double, Double, Double, Double)) throws -> (total: Double, denoise: Double, projection: Double, attention: Double) {
        guard sumsGradients else { return local }
        try reducer.finish()
        var v = [local.0, local.1, local.2, local.3]
        comm.allReduceSum(&v)
        return (v[0], v[1], v[2], v[3])
    }
}
