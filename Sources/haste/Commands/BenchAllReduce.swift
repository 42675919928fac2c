import ArgumentParser
import Foundation
import HasteDistributed
import HasteModels
import HasteTraining

/// `mpirun -np N haste bench allreduce`: the gradient sum of one data-parallel step alone — the trainer's buckets
/// over a model's whole gradient arena, all started after the backward pass (no overlap: the worst case) — to
/// set against `haste bench train`'s step time of the same model (issue #13's "all-reduce share of a step").
/// On CUDA ranks the sum is NCCL's (`--dist-backend`); `--dist-backend nccl` also times one GPU's 1-rank NCCL
/// path. `--layout` prints the buckets alone (no ranks needed): the sizes the README's scaling estimate uses.
struct BenchAllReduceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce", abstract: "Time the gradient sum of a model across MPI ranks (start it with mpirun -np N).")

    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var distributed: DistributedOptions
    @Option(help: "Model whose gradient arena is summed.") var model = "SiT-B/2"
    @Option(help: "Timed sums (the median is reported).") var reps = 5
    @Option(help: "Untimed warm-up sums.") var warmup = 1
    @Flag(help: "Print the model's gradient buckets (count and sizes) and exit; runs in one process.") var layout = false

    func validate() throws {
        guard reps >= 1, warmup >= 0 else { throw ValidationError("--reps must be ≥ 1 and --warmup ≥ 0") }
    }

    func run() throws {
        let (comm, device) = try runtime.openJob()
        try Job.run(comm) { job in
            let collectives = layout ? nil : try distributed.collectives(comm, device, job)
            let (_, resolved) = try TrainBenchmarks.config(model: model, batch: 1, align: false, seed: runtime.seed)
            let sit = try SiT(try resolved.student.sitConfig(for: "this benchmark"), seed: runtime.seed)
            if layout {
                let buckets = GradientReducer(store: sit.store, comm: SingleProcess()).buckets.map(\.count)
                let count = buckets.reduce(0, +)
                if comm.isWriter {
                    print(String(format: "%@ gradients: %d floats (%.1f MB float32) in %d buckets (launch order, floats): %@", model, count,
                                 Double(count * 4) / 1e6, buckets.count, buckets.map(String.init).joined(separator: " ")))
                }
                return
            }
            sit.store.move(to: device)                                   // off the CPU: NCCL, or MPI through host copies
            guard comm.size > 1 || collectives != nil else {
                throw ValidationError("one process has nothing to sum: start it as ranks, e.g. mpirun -np 2 haste bench allreduce "
                                      + "(or time one GPU's NCCL path with --device cuda --dist-backend nccl)")
            }
            let reducer = GradientReducer(store: sit.store, comm: comm, collectives: collectives)
            let count = reducer.buckets.map(\.count).reduce(0, +)
            var times: [Double] = []
            for i in 0..<(warmup + reps) {
                comm.barrier()
                let start = Date()
                try reducer.finish()
                var t = [Date().timeIntervalSince(start)]
                comm.allReduceSum(&t)                                    // the ranks' mean
                if i >= warmup { times.append(t[0] / Double(comm.size)) }
            }
            guard comm.isWriter else { return }
            let median = times.sorted()[times.count / 2], bytes = Double(count * 4)
            let how = collectives.map(\.summary) ?? (device == .cpu ? "MPI" : "MPI through host memory")
            print("haste bench allreduce: \(device), \(comm.size) ranks (\(comm.localSize) on this node), \(runtime.threads) threads each; \(how)")
            print(String(format: "%@ gradients: %d floats (%.1f MB) in %d buckets: median %.1f ms, min %.1f ms of %d; "
                         + "bus bandwidth %.2f GB/s (2(N−1)/N · bytes / time)", model, count, bytes / 1e6, reducer.buckets.count,
                         median * 1e3, times.min()! * 1e3, reps, 2 * Double(comm.size - 1) / Double(comm.size) * bytes / median / 1e9))
        }
    }
}
