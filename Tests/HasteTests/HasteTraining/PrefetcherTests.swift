import Foundation
import Testing
@testable import HasteTensor
@testable import HasteTraining

/// A dataset whose batch encodes the indices it was asked for, records every read, and fails on one batch.
private final class RecordingDataset: TrainingDataset, @unchecked Sendable {
    let count = 101, numClasses = 3, sampleShape = [1, 2, 2], hasImages = false, hasLatents = false
    let lock = NSLock()
    var reads: [[Int]] = []
    var failing: [Int] = []
    func batch(_ indices: [Int]) throws -> Batch {
        lock.lock(); reads.append(indices); lock.unlock()
        if indices == failing { throw HasteError.unsupported("unreadable item") }
        return Batch(images: nil, x0: Tensor(indices.map(Float.init), shape: [indices.count]), moments: false,
                     labels: Tensor(indices.map { Int64($0 % 3) }, shape: [indices.count]))
    }
}

/// The prefetcher hands out exactly the batches a direct read gives, in order, across an epoch boundary and
/// after a jump (a resume); it reads each position once, ahead only the next one, and a failed read surfaces
/// when that batch is asked for.
@Test func prefetchedBatchesEqualDirectReads() throws {
    let data = RecordingDataset()
    let order = EpochOrder(count: data.count, batchSize: 4, seed: 5)   // 25 batches per epoch
    data.failing = order.indices(epoch: 1, batch: 0)
    let p = BatchPrefetcher(dataset: data, order: order)
    let walk = [(0, 0), (0, 1), (0, 23), (0, 24), (1, 0), (1, 1), (1, 2), (3, 2), (3, 3)]
    for (e, b) in walk {
        let want = order.indices(epoch: e, batch: b)
        if (e, b) == (1, 0) {
            #expect(throws: HasteError.self) { _ = try p.batch(epoch: e, batch: b) }
            continue
        }
        let got = try p.batch(epoch: e, batch: b)
        #expect(got.x0.scalars(as: Float.self) == want.map(Float.init), "epoch \(e) batch \(b)")
    }
    p.drain()
    // Read once each: every walked position, and the read-aheads nobody asked for: after (0, 1), (1, 2) and
    // (3, 3). None after the failed (1, 0): (1, 1) is read in the foreground.
    for (e, b) in walk + [(0, 2), (1, 3), (3, 4)] {
        let idx = order.indices(epoch: e, batch: b)
        #expect(data.reads.filter { $0 == idx }.count == 1, "position (\(e), \(b)) read \(data.reads.filter { $0 == idx }.count)×")
    }
    #expect(data.reads.count == walk.count + 3)
}
