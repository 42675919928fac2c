import ArgumentParser
import Foundation
import HasteCUDA
import HasteDistributed
import HasteTensor

extension DistributedBackend: ExpressibleByArgument {}

/// `--dist-backend`: how CUDA ranks sum gradients (train, bench allreduce).
struct DistributedOptions: ParsableArguments {
    @Option(name: .customLong("dist-backend"),
            help: ArgumentHelp("How GPU ranks sum gradients: auto (NCCL when every rank finds libnccl.so.2, else MPI through host memory, "
                               + "said once), nccl (required; also alone, to exercise it), mpi. CPU ranks always use MPI.",
                               valueName: "auto|nccl|mpi"))
    var distBackend: DistributedBackend = .auto

    /// NCCL for this job on `device`, registered with `job` for teardown; nil where gradients go through MPI.
    func collectives(_ comm: Communicator, _ device: Device, _ job: Job.Resources) throws -> DeviceCollectives? {
        let c = try NCCL.collectives(distBackend, comm: comm, device: device) { FlagCheck.note($0) }
        job.collectives = c
        return c
    }
}
