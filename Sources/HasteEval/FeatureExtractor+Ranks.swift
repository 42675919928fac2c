import HasteDistributed
import HasteModels
import HasteTensor

/// `mpirun -np N haste fid …` (issue #13): batch k of a set belongs to rank k mod N. Each rank first runs the
/// network on its own batches, then every batch's outputs go to all ranks in batch order (a broadcast from its
/// owner), so each rank accumulates exactly what one process would, in the same order: the same statistics, bit
/// for bit, whatever the rank count.
extension InceptionFeatureExtractor {
    /// One batch's network outputs (InceptionOutput's rows), here or from another rank.
    struct BatchFeatures { let pool: Tensor, spatial: Tensor, logits: Tensor? }

    /// The network's outputs of batch `k` of `ranges`, on every rank; `progress(done)` counts this rank's batches.
    func outputs(of source: any ImageSource, ranges: [Range<Int>], comm: Communicator,
                 progress: (Int) -> Void) throws -> (Int) throws -> BatchFeatures {
        guard comm.size > 1 else { return { try self.output(source, ranges[$0]) } }
        var own: [Int: BatchFeatures] = [:]
        for k in stride(from: comm.rank, to: ranges.count, by: comm.size) {
            own[k] = try output(source, ranges[k])
            progress(own.count)
        }
        let hasLogits = model.hasLogits
        return { k in
            var bytes: [UInt8] = []
            if let mine = own.removeValue(forKey: k) {
                for t in [mine.pool, mine.spatial] + (mine.logits.map { [$0] } ?? []) {
                    t.to(.cpu).contiguous().scalars(as: Float.self).withUnsafeBytes { bytes += $0 }
                }
            }
            comm.broadcast(&bytes, root: k % comm.size)
            let n = ranges[k].count, widths = [FIDInceptionV3.poolFeatures, FIDInceptionV3.spatialFeatures] + (hasLogits ? [FIDInceptionV3.classes] : [])
            require(bytes.count == n * widths.reduce(0, +) * 4, "fid: batch \(k) arrived with \(bytes.count) bytes for \(n) images")
            let floats = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            var start = 0
            let parts = widths.map { w -> Tensor in
                defer { start += n * w }
                return Tensor(Array(floats[start..<(start + n * w)]), shape: [n, w]).to(self.device)
            }
            return BatchFeatures(pool: parts[0], spatial: parts[1], logits: hasLogits ? parts[2] : nil)
        }
    }

    /// One batch through the network.
    func output(_ source: any ImageSource, _ range: Range<Int>) throws -> BatchFeatures {
        let images = try source.images(range)
        guard images.rank == 4, images.shape[0] == range.count, images.shape[1] == 3 else {
            throw HasteError.unsupported("image batch \(range) has shape \(images.shape), expected [\(range.count), 3, H, W]")
        }
        let out = noGrad { model(input.prepare(images.to(device))) }
        return BatchFeatures(pool: out.pool, spatial: out.spatial, logits: out.logits)
    }
}
