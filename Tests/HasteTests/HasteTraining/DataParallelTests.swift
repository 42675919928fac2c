import Foundation
import Testing
import HasteDistributed
import HasteModels
import HasteNN
import HasteTensor
import HasteTraining

/// Splitting a global batch across ranks (issue #13): shares, per-sample draws and bucketed gradient sums,
/// checked in one process; DataParallelMPITests runs real ranks.

@Test func sharesCoverTheBatchInRankOrder() {
    final class Rank: Communicator {
        let rank: Int, size: Int, localRank = 0, localSize = 1
        init(_ r: Int, _ s: Int) { (rank, size) = (r, s) }
        func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) {}
        func allReduceSum(_ values: inout [Double]) {}
        func startAllReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) -> Reduction { SingleProcess().startAllReduceSum(data, count: count) }
        func broadcast(_ bytes: inout [UInt8], root: Int) {}
        func barrier() {}
        func abort(code: Int32) -> Never { fatalError("abort \(code)") }
        func finish() {}
    }
    for (batch, ranks) in [(8, 2), (10, 3), (3, 3), (256, 7)] {
        let shares = (0..<ranks).map { Rank($0, ranks).share(of: batch) }
        #expect(shares.first!.lowerBound == 0 && shares.last!.upperBound == batch, "\(batch) over \(ranks)")
        #expect(zip(shares, shares.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        #expect(shares.map(\.count).max()! - shares.map(\.count).min()! <= 1)
    }
}

/// A sample's draws depend on its index in the global batch, not on which slice of the batch is drawn at once.
@Test func perSampleDrawsDoNotDependOnTheSplit() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.encType, c.cfgProb) = ("none", 0.5)
    let models = try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3)
    let objective = Objective(config: c, models: models)
    let data = SyntheticDataset()
    let whole = try data.batch(Array(0..<6)), front = try data.batch([0, 1, 2, 3]), back = try data.batch([4, 5])
    let g1 = RandomGenerator(seed: 3, offset: 400), g2 = RandomGenerator(seed: 3, offset: 400), g3 = RandomGenerator(seed: 3, offset: 400)
    let all = objective.draw(whole, generator: g1)
    let a = objective.draw(front, generator: g2, globalBatch: 6, first: 0)
    let b = objective.draw(back, generator: g3, globalBatch: 6, first: 4)
    #expect(g1.offset == g2.offset && g2.offset == g3.offset && g1.offset == 400 + UInt64(6 * objective.drawStride(whole)))
    expectClose(Tensor.cat([a.t, b.t], axis: 0), all.t, atol: 0, rtol: 0, "t")
    expectClose(Tensor.cat([a.noise, b.noise], axis: 0), all.noise, atol: 0, rtol: 0, "noise")
    #expect(a.dropMask + b.dropMask == all.dropMask)
    #expect(Set(all.dropMask).count == 2, "cfg-prob 0.5 over 6 samples drops some labels and keeps some")
    // The next micro-batch draws afresh.
    #expect((objective.draw(whole, generator: g1).noise - all.noise).abs().max().item() > 0)
}

/// Stands for N ranks holding identical gradients: a sum multiplies by N. Records when buckets start.
final class MultiplyingCommunicator: Communicator {
    let rank = 0, size: Int, localRank = 0, localSize = 1
    var launches: [Range<Int>] = [], base: UnsafeMutablePointer<Float>?
    init(size: Int) { self.size = size }
    func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) { for i in 0..<count { data[i] *= Float(size) } }
    func allReduceSum(_ values: inout [Double]) { values = values.map { $0 * Double(size) } }
    func startAllReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) -> Reduction {
        let start = base.map { data - $0 } ?? 0
        launches.append(start..<(start + count))
        allReduceSum(data, count: count)
        return SingleProcess().startAllReduceSum(data, count: count)
    }
    func broadcast(_ bytes: inout [UInt8], root: Int) {}
    func barrier() {}
    func abort(code: Int32) -> Never { fatalError("abort \(code)") }
    func finish() {}
}

@Test func bucketsStartDuringTheBackwardWalkAndSumEveryGradientOnce() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.encType, c.projCoeff, c.attnCoeff) = ("none", 0, 0)
    let models = try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3)
    let sit = try SiT(models.student.sitConfig(for: "this test"), seed: 1), objective = Objective(config: c, models: models)
    let batch = try SyntheticDataset().batch([0, 1, 2, 3])
    let draws = objective.draw(batch, generator: RandomGenerator(seed: 2))
    func loss() -> Tensor { objective.loss(student: sit, batch: batch, draws: draws, teacher: nil, alignmentActive: false).total }
    // A few AdamW steps first: the zero-initialised gates (adaLN-Zero) would leave most gradients 0.
    let adam = AdamW(store: sit.store, lr: 0.05, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0)
    for _ in 0..<3 {
        sit.store.zeroGrad()
        loss().backward()
        adam.step()
    }
    sit.store.zeroGrad()
    loss().backward()
    let plain = sit.store.parameters.map { Tensor($0.tensor.grad!.scalars(as: Float.self), shape: $0.tensor.shape) }
    #expect(plain.filter { $0.abs().max().item() > 0 }.count > plain.count / 2)

    let comm = MultiplyingCommunicator(size: 2)
    let reducer = GradientReducer(store: sit.store, comm: comm, bucketElements: 2000)
    comm.base = sit.store.gradientArena.buffer.pointer(Float.self)
    #expect(reducer.buckets.count > 3)
    #expect(reducer.buckets.map(\.count).reduce(0, +) == sit.store.gradientArena.count, "buckets cover the arena")
    sit.store.zeroGrad()
    let counter = LeafCounter(reducer, comm)
    loss().backward(observer: counter)
    try reducer.finish()
    // The first bucket starts while most gradients are still to come.
    #expect(counter.leavesAtFirstLaunch ?? .max < counter.leaves / 2, "first bucket started after \(counter.leavesAtFirstLaunch ?? -1) of \(counter.leaves) leaves")
    #expect(comm.launches == reducer.buckets, "buckets start in their fixed order")
    for ((name, p), g) in zip(sit.store.parameters, plain) { expectClose(p.grad!, g * 2.0, atol: 0, rtol: 0, name) }
}

/// Counts finished leaves and notes how many there were when the first bucket started.
final class LeafCounter: LeafGradientObserver {
    let inner: LeafGradientObserver, comm: MultiplyingCommunicator
    var leaves = 0, leavesAtFirstLaunch: Int?
    init(_ inner: LeafGradientObserver, _ comm: MultiplyingCommunicator) { (self.inner, self.comm) = (inner, comm) }
    func willAccumulate(into leaves: [Tensor]) { inner.willAccumulate(into: leaves) }
    func didAccumulate(_ leaf: Tensor) {
        leaves += 1
        inner.didAccumulate(leaf)
        if leavesAtFirstLaunch == nil && !comm.launches.isEmpty { leavesAtFirstLaunch = leaves }
    }
}

@Test func launchersAreReadFromTheEnvironment() throws {
    #expect(try Launch.communicator(environment: [:]) is SingleProcess)
    #expect(try Launch.communicator(environment: ["OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"]) is SingleProcess)
    // srun without MPI wire-up would start independent copies: refused with the fix.
    let srun = ["SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"]
    var message = ""
    do { _ = try Launch.communicator(environment: srun) } catch { message = "\(error)" }
    #expect(message.contains("srun --mpi=pmix"))
    #expect(try Launch.communicator(environment: ["SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"]) is SingleProcess)
}

/// The draws' normal fills run in parallel over samples: each sample's numbers are its own generator's, drawn in the
/// order posterior noise, t, noise, label drop (what one `RandomGenerator` per sample drawing in turn gives), for
/// latent batches (moments: a posterior noise first) and pixel ones, bit for bit. 37 samples: more than the
/// machine's threads, not a multiple of them.
@Test func parallelDrawsAreEachSamplesOwnStream() throws {
    var c = tinyRunConfig(temporaryDirectory())
    (c.encType, c.cfgProb) = ("none", 0.5)
    let objective = Objective(config: c, models: try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3))
    for moments in [false, true] {
        let b = 37, shape = [3, 8, 8]
        let batch = Batch(images: nil, x0: Tensor.randn([b, moments ? 6 : 3, 8, 8], seed: 1), moments: moments,
                          labels: Tensor((0..<b).map { Int64($0 % 3) }, shape: [b]))
        let generator = RandomGenerator(seed: 9, offset: 40), stride = objective.drawStride(batch)
        let d = objective.draw(batch, generator: generator)
        #expect(generator.offset == 40 + UInt64(b * stride))
        var latent: [Tensor] = [], ts: [Tensor] = [], noise: [Tensor] = [], drop: [Bool] = []
        for i in 0..<b {                                   // one generator per sample, drawing in turn
            let g = RandomGenerator(seed: 9, offset: 40 + UInt64(i * stride))
            if moments { latent.append(g.normal([1] + shape)) }
            ts.append(c.weighting.sample(1, path: c.pathType, generator: g))
            noise.append(g.normal([1] + shape))
            drop.append(Double(g.uniform([1]).scalars(as: Float.self)[0]) < c.cfgProb)
        }
        let sameNoise = d.noise.shape == [b] + shape && d.noise.scalars(as: Float.self) == Tensor.cat(noise, axis: 0).scalars(as: Float.self)
        let sameT = d.t.scalars(as: Float.self) == Tensor.cat(ts, axis: 0).scalars(as: Float.self)
        let sameLatent = d.latentNoise?.scalars(as: Float.self) == (moments ? Tensor.cat(latent, axis: 0).scalars(as: Float.self) : nil)
        #expect(sameNoise && sameT && d.dropMask == drop && sameLatent, "moments \(moments): noise \(sameNoise), t \(sameT), posterior noise \(sameLatent)")
    }
}
