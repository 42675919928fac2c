import HasteDistributed
import HasteNN
import HasteTensor

/// Sums the ranks' gradients as PyTorch's DDP does: the gradient arena is cut into buckets of about
/// `bucketElements` at parameter boundaries, and a bucket's sum starts (non-blocking) as soon as the backward
/// walk has finished every gradient in it, while the walk goes on. Buckets start strictly in one fixed order,
/// the same on every rank (MPI needs collectives in the same order everywhere): the order the backward walk
/// finishes them — parameters registered last first (the final layer), the small bucket(s) of biases last.
/// Parameters the walk cannot reach (projectors after the early stop) count as finished at once; anything
/// still unfinished when the walk ends is summed then (DDP's find_unused_parameters).
/// MPI sums host memory: on a device other than the CPU each bucket is copied to a host mirror of the arena as it
/// starts, and `finish()` copies the sums back (correct but not fast). With `DeviceCollectives` (NCCL on CUDA
/// ranks) each bucket's sum is queued on the device, on the gradients themselves, and `finish()` waits for them.
package final class GradientReducer: LeafGradientObserver {
    let comm: Communicator
    /// Whose gradient arena is summed: its slots no walk reached are still stale (`zeroGrad`) when their bucket starts.
    let store: ParameterStore
    /// Sums on the device (NCCL), when given: then there is no host arena.
    let collectives: DeviceCollectives?
    /// The host floats MPI sums: the gradient arena itself on the CPU, else `staged.host`; nil with `collectives`.
    package let arena: UnsafeMutablePointer<Float>?
    /// Off the CPU: the gradient arena as one tensor, and its host mirror (nil with `collectives`).
    private let staged: (gradients: Tensor, host: Tensor?)?
    /// Element ranges of the arena, in launch order; together they cover it exactly.
    package let buckets: [Range<Int>]
    private let slots: [ObjectIdentifier: (bucket: Int, count: Int)]
    private let bucketCounts: [Int]
    private var remaining: [Int] = []
    private var started: [Reduction] = []

    /// 25 MiB of float32, DDP's default `bucket_cap_mb`.
    static let defaultBucketElements = 25 << 18

    package init(store: ParameterStore, comm: Communicator, collectives: DeviceCollectives? = nil,
                 bucketElements: Int = GradientReducer.defaultBucketElements) {
        require(store.gradientArena.buffer.dtype == .float32, "GradientReducer: float32 gradients only, got \(store.gradientArena.buffer.dtype)")
        require(collectives == nil || store.device != .cpu, "GradientReducer: device collectives sum device memory, the store is on the CPU")
        self.comm = comm
        self.store = store
        self.collectives = collectives
        let (buffer, count) = store.gradientArena
        let gradients = Tensor(storage: buffer.storage, shape: [count], offset: buffer.offset, dtype: .float32)
        if store.device == .cpu {
            arena = buffer.pointer(Float.self)
            staged = nil
        } else if collectives != nil {
            arena = nil
            staged = (gradients, nil)
        } else {
            let host = Tensor.zeros([count])
            arena = host.buffer.pointer(Float.self)
            staged = (gradients, host)
        }
        // Group parameters in arena order; a bucket also ends where registration order jumps back (the
        // decayed → non-decayed region boundary), so each bucket holds neighbours of the network.
        let params = store.gradientSlots.enumerated().map { (index: $0.offset, tensor: $0.element.tensor, range: $0.element.range) }
            .sorted { $0.range.lowerBound < $1.range.lowerBound }
        var groups: [[(index: Int, tensor: Tensor, range: Range<Int>)]] = []
        for p in params {
            if let last = groups.last?.last, p.index > last.index,
               groups[groups.count - 1].reduce(0, { $0 + $1.range.count }) < bucketElements {
                groups[groups.count - 1].append(p)
            } else {
                groups.append([p])
            }
        }
        // Ranges cover the arena: each starts where the previous ended (the padding between slots rides along).
        var ranges: [Range<Int>] = []
        for k in groups.indices {
            let start = k == 0 ? 0 : ranges[k - 1].upperBound
            ranges.append(start..<(k == groups.count - 1 ? count : groups[k + 1][0].range.lowerBound))
        }
        // Launch order: the bucket whose earliest-registered parameter is latest goes first.
        let order = groups.indices.sorted { groups[$0].map(\.index).min()! > groups[$1].map(\.index).min()! }
        buckets = order.map { ranges[$0] }
        var slots: [ObjectIdentifier: (Int, Int)] = [:]
        for (position, g) in order.enumerated() {
            for p in groups[g] { slots[ObjectIdentifier(p.tensor)] = (position, p.range.count) }
        }
        self.slots = slots
        bucketCounts = order.map { groups[$0].reduce(0) { $0 + $1.range.count } }
    }

    /// Before the backward walk of an update's last micro-batch.
    package func willAccumulate(into leaves: [Tensor]) {
        remaining = bucketCounts
        started = []
        var unreached = slots
        for leaf in leaves { unreached.removeValue(forKey: ObjectIdentifier(leaf)) }
        for (_, slot) in unreached { remaining[slot.bucket] -= slot.count }
        launchReady()
    }

    package func didAccumulate(_ leaf: Tensor) {
        guard let slot = slots[ObjectIdentifier(leaf)] else { return }
        remaining[slot.bucket] -= slot.count
        launchReady()
        for r in started { _ = r.test() }            // MPI progresses non-blocking sums only inside MPI calls
    }

    /// Starts every bucket that is finished and whose predecessors have started.
    private func launchReady() {
        while started.count < buckets.count && remaining[started.count] == 0 { launch(started.count) }
    }

    private func launch(_ k: Int) {
        let r = buckets[k]
        store.clearStaleGradients(within: r)                       // unreached slots are zero, not last step's values
        guard let arena else {                                      // on the device, queued on its stream
            collectives!.queueSum(staged!.gradients.narrowed(0, start: r.lowerBound, length: r.count).buffer, count: r.count)
            started.append(Queued())
            return
        }
        if let staged, !r.isEmpty {                                 // device → host mirror, no temporary
            let bucket = staged.gradients.narrowed(0, start: r.lowerBound, length: r.count)
            bucket.backend.copyToHost(bucket.buffer, arena + r.lowerBound, byteCount: r.count * 4)
        }
        started.append(comm.startAllReduceSum(arena + r.lowerBound, count: r.count))
    }

    /// After the walk: starts the buckets left (in order) and waits for all; every rank then holds the sum.
    /// Throws a failed device sum (the communicator is then aborted).
    package func finish() throws {
        if remaining.isEmpty { remaining = bucketCounts }   // no walk was observed (a step without backward)
        while started.count < buckets.count { launch(started.count) }
        for r in started { r.wait() }
        started = []
        remaining = []
        if let collectives { return try collectives.wait() }
        if let g = staged?.gradients, let arena {                    // the sums back to the device
            g.backend.copyFromHost(UnsafeRawPointer(arena), to: g.buffer, byteCount: g.count * 4)
        }
    }

    /// A bucket queued on the device: `finish()` waits for all of them at once.
    private final class Queued: Reduction {
        func test() -> Bool { true }
        func wait() {}
    }
}
