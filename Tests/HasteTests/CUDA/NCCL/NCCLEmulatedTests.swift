import Foundation
import Testing
import HasteDistributed
import HasteModels
import HasteNN
import HasteTensor
@testable import HasteCUDA
@testable import HasteTraining

/// NCCL for CUDA ranks (issue #13), without a GPU: two ranks are two threads sharing the emulated CUDA device,
/// their host collectives go through `Hub`, their gradient sums through the stand-in libnccl.so.2 (the real
/// `NCCLAPI`/`NCCLCollectives` code). Serialized: the stand-in keeps one call log.
@Suite(.serialized, .enabled(if: StandInNCCL.folder != nil, "no C compiler for the stand-in libnccl.so.2"))
struct NCCLSuite {
    /// The tiny SiT's gradients for samples `share` of a 4-sample global batch, weighed by the share (as the
    /// trainer weighs a rank's mean) and summed through `reducer`; returns the gradients on the host.
    static func rankGradients(_ share: Range<Int>, reducer make: ((ParameterStore) -> GradientReducer)?) throws -> [Tensor] {
        var c = tinyRunConfig(temporaryDirectory())
        (c.encType, c.projCoeff, c.attnCoeff) = ("none", 0, 0)
        let models = try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3)
        let sit = try SiT(try models.student.sitConfig(for: "this test"), seed: 1), objective = Objective(config: c, models: models)
        sit.store.move(to: EmulatedCUDA.device)
        let batch = try SyntheticDataset().batch(Array(share)).to(EmulatedCUDA.device)
        let draws = objective.draw(batch, generator: RandomGenerator(seed: 2), globalBatch: 4, first: share.lowerBound)
        let loss = objective.loss(student: sit, batch: batch, draws: draws, teacher: nil, alignmentActive: false).total
        let reducer = make?(sit.store)
        sit.store.zeroGrad()
        (loss * (Double(share.count) / 4)).backward(observer: reducer)
        try reducer?.finish()
        return sit.store.parameters.map { $0.tensor.grad!.to(.cpu).clone() }
    }

    /// The id is made once (rank 0) and reaches rank 1 through the host communicator; both ranks queue the
    /// reducer's buckets in its one fixed order at the arena's addresses; the summed gradients equal one process's
    /// gradients of the whole batch; each rank destroys its communicator.
    @Test func twoRanksSumTheBucketsInTheReducersOrder() throws {
        guard let api = try StandInNCCL.api() else { return }
        StandInNCCL.reset(api)
        let whole = try Self.rankGradients(0..<4, reducer: nil)
        let ranks = Hub(size: 2).ranks()
        let results = onThreads(2) { r -> (grads: [Tensor], buckets: [Range<Int>], base: UInt64) in
            let nccl = try NCCLCollectives(api: api, backend: EmulatedCUDA.backend, comm: ranks[r])
            var made: GradientReducer?, base: UInt64 = 0
            let grads = try Self.rankGradients(ranks[r].share(of: 4)) { store in
                base = EmulatedCUDA.backend.address(store.gradientArena.buffer)
                made = GradientReducer(store: store, comm: ranks[r], collectives: nccl, bucketElements: 2000)
                return made!
            }
            nccl.close(abort: false)
            return (grads, made!.buckets, base)
        }
        let out = try results.map { try $0.get() }
        let log = StandInNCCL.log(api)
        let ids = log.filter { $0.hasPrefix("ncclGetUniqueId") }
        #expect(ids.count == 1, "one unique id, made by rank 0: \(log)")
        let id = ids.first?.components(separatedBy: " -> ").last ?? "?"
        for r in 0..<2 {
            #expect(log.contains("ncclCommInitRank(nranks 2, id \(id), rank \(r))") && log.contains("ncclCommDestroy(rank \(r))"))
            let sums = log.filter { $0.hasPrefix("ncclAllReduce(rank \(r),") }
            let expected = out[r].buckets.filter { !$0.isEmpty }.map {
                "ncclAllReduce(rank \(r), buffer 0x\(String(out[r].base + UInt64(4 * $0.lowerBound), radix: 16)), count \($0.count), "
                    + "datatype 7, op 0, in place, stream (nil))"
            }
            #expect(out[r].buckets.count > 3 && sums == expected, "rank \(r) queues the buckets in order at their addresses")
        }
        #expect(out[0].buckets == out[1].buckets)
        for (k, g) in whole.enumerated() {
            expectClose(out[0].grads[k], g, atol: 1e-6, rtol: 1e-5, "rank 0, parameter \(k)")
            #expect(out[0].grads[k].scalars(as: Float.self) == out[1].grads[k].scalars(as: Float.self), "both ranks hold the same sum")
        }
    }

    /// `--dist-backend`: auto with two ranks uses NCCL when found and otherwise says so once (rank 0) and sums
    /// through MPI; nccl off CUDA is refused; mpi never opens NCCL; one process under auto needs none.
    @Test func theBackendChoiceFallsBackToMPIOnceAndRefusesNCCLOffCUDA() throws {
        guard let api = try StandInNCCL.api(), let folder = StandInNCCL.folder else { return }
        let empty = RuntimeTestSupport.temporaryFolder("nonccl")
        let device = EmulatedCUDA.device
        if case .failure = CUDALibrarySearch.standard(environment: ["HASTE_CUDA_LIB_DIR": empty]).load(["libnccl.so.2"]) {
            let ranks = Hub(size: 2).ranks()
            let notes = onThreads(2) { r -> [String] in
                var said: [String] = []
                let c = try NCCL.collectives(.auto, comm: ranks[r], device: device, environment: ["HASTE_CUDA_LIB_DIR": empty, "PATH": "/nonexistent"]) { said.append($0) }
                #expect(c == nil)
                return said
            }
            let said = try notes.map { try $0.get() }
            #expect(said[1].isEmpty && said[0].count == 1, "said once, by rank 0: \(said)")
            #expect(said[0].first?.contains("NCCL is not available: libnccl.so.2 not found") == true
                    && said[0].first?.contains("through host memory with MPI") == true
                    && said[0].first?.contains("pip install nvidia-nccl-cu12") == true, "\(said)")
        }
        StandInNCCL.reset(api)
        let ranks = Hub(size: 2).ranks()
        let found = onThreads(2) { r -> String? in
            let c = try NCCL.collectives(.auto, comm: ranks[r], device: device, environment: ["HASTE_CUDA_LIB_DIR": folder]) { _ in Issue.record("a note with NCCL found") }
            defer { c?.close(abort: false) }
            return c?.summary
        }
        #expect(try found.map { try $0.get() } == Array(repeating: "NCCL 2.21.5 (\(folder)/libnccl.so.2), 2 ranks", count: 2))
        #expect(StandInNCCL.log(api).filter { $0.hasPrefix("ncclGetUniqueId") }.count == 1)
        do {
            _ = try NCCL.collectives(.nccl, comm: SingleProcess(), device: .cpu) { _ in }
            Issue.record("--dist-backend nccl on the CPU was accepted")
        } catch { #expect("\(error)".contains("--dist-backend nccl sums gradients on GPUs: it needs --device cuda"), "\(error)") }
        #expect(try NCCL.collectives(.mpi, comm: SingleProcess(), device: device) { _ in } == nil)
        #expect(try NCCL.collectives(.auto, comm: SingleProcess(), device: device) { _ in } == nil)
        #expect(try NCCL.collectives(.auto, comm: SingleProcess(), device: .cpu) { _ in } == nil)
    }

    /// Issue #13's CI figure for NCCL: the tiny SiT trained 3 steps at global batch 4 by two ranks on the
    /// emulated device summing through NCCL gives one process's losses and gradient norms within 1e-5 relative;
    /// only rank 0 writes; one bucket sum per bucket per step per rank, then teardown.
    @Test func twoRanksWithNCCLTrainLikeOneProcess() throws {
        guard let api = try StandInNCCL.api() else { return }
        StandInNCCL.reset(api)
        let dir = temporaryDirectory()
        var c = tinyRunConfig(dir)
        (c.encType, c.projCoeff, c.attnCoeff, c.maxTrainSteps, c.checkpointingSteps) = ("none", 0, 0, 3, 3)
        c.expName = "one"
        try Trainer(config: c, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train()
        c.expName = "two"
        let ranks = Hub(size: 2).ranks()
        let config = c
        let runs = onThreads(2) { r -> Int in
            let nccl = try NCCLCollectives(api: api, backend: EmulatedCUDA.backend, comm: ranks[r])
            defer { nccl.close(abort: false) }
            let trainer = try Trainer(config: config, dataset: SyntheticDataset(), comm: ranks[r], device: EmulatedCUDA.device, collectives: nccl)
            try trainer.train()
            return trainer.reducer.buckets.filter { !$0.isEmpty }.count
        }
        let buckets = try runs.map { try $0.get() }
        let one = try metricLosses("\(dir)/one"), two = try metricLosses("\(dir)/two")
        #expect(one.count == 3 && two.count == 3, "one metrics line per step, written once")
        for (a, b) in zip(one, two) {
            for key in ["loss", "grad_norm"] {
                let x = a[key]!, y = b[key]!
                #expect(abs(x - y) <= 1e-5 * abs(x), "step \(a["step"]!) \(key): 1 process \(x), 2 ranks \(y)")
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/two/checkpoints") == ["0000003.safetensors"])
        let log = StandInNCCL.log(api)
        for r in 0..<2 {
            #expect(log.filter { $0.hasPrefix("ncclAllReduce(rank \(r),") }.count == 3 * buckets[r], "rank \(r): \(log)")
            #expect(log.last { $0.hasSuffix("(rank \(r))") } == "ncclCommDestroy(rank \(r))")
        }
    }
}
