import Foundation
import HasteTensor

/// Reads the next training batch on a background thread while the current step computes (the reference's
/// DataLoader workers). Batches are a pure function of (epoch, batch), so what the trainer gets is identical with
/// or without prefetching; a request for any other position (after a resume) is read in the foreground.
/// A rank of a data-parallel run reads only its `share` of each batch (positions within the batch).
final class BatchPrefetcher: @unchecked Sendable {
    private let dataset: TrainingDataset
    private let order: EpochOrder
    private let share: Range<Int>
    private let queue = DispatchQueue(label: "haste.prefetch")
    private let lock = NSLock()
    private var pending: (key: Position, group: DispatchGroup)?
    private var ready: (key: Position, result: Result<Batch, Error>)?

    struct Position: Equatable { let epoch: Int, batch: Int }

    init(dataset: TrainingDataset, order: EpochOrder, share: Range<Int>? = nil) {
        (self.dataset, self.order, self.share) = (dataset, order, share ?? 0..<order.batchSize)
    }

    /// The batch at (epoch, batch), then starts reading the one after it.
    func batch(epoch: Int, batch: Int) throws -> Batch {
        let key = Position(epoch: epoch, batch: batch)
        var result: Result<Batch, Error>?
        if let p = pending, p.key == key {
            p.group.wait()
            lock.lock(); if ready?.key == key { result = ready!.result }; ready = nil; lock.unlock()
        }
        pending = nil
        let current = try result?.get() ?? dataset.batch(Array(order.indices(epoch: epoch, batch: batch)[share]), epoch: epoch)
        let next = batch + 1 >= order.batchesPerEpoch ? Position(epoch: epoch + 1, batch: 0) : Position(epoch: epoch, batch: batch + 1)
        let group = DispatchGroup()
        pending = (next, group)
        let (dataset, order, share) = (self.dataset, self.order, self.share)
        queue.async(group: group) { [weak self] in
            let r = Result { try dataset.batch(Array(order.indices(epoch: next.epoch, batch: next.batch)[share]), epoch: next.epoch) }
            guard let self else { return }
            self.lock.lock(); self.ready = (next, r); self.lock.unlock()
        }
        return current
    }

    /// Waits for a read in flight (before the trainer returns, so no thread outlives it).
    func drain() { pending?.group.wait(); pending = nil }
}
