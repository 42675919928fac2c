import Foundation
import HasteTensor

/// How this process was started: alone (`haste train …`), or as one rank of a job started by `mpirun -np N` or
/// by Slurm's `srun` (through Open MPI's PMIx support). Only a launcher's environment makes haste load MPI, so
/// a single process runs exactly as it does without MPI installed (issue #13).
public enum Launch {
    /// What the environment says about the job: the rank count when the launcher tells it, and who launched.
    struct Announcement: Equatable {
        let size: Int?
        let launcher: String
    }

    static func announcement(_ env: [String: String]) throws -> Announcement? {
        let slurmTasks = (env["SLURM_STEP_NUM_TASKS"] ?? env["SLURM_NTASKS"]).flatMap { Int($0) }
        if let s = env["OMPI_COMM_WORLD_SIZE"] { return Announcement(size: Int(s), launcher: "mpirun") }
        if env["PMIX_RANK"] != nil { return Announcement(size: slurmTasks, launcher: "a PMIx launcher (srun --mpi=pmix)") }
        if env["PMI_RANK"] != nil { return Announcement(size: env["PMI_SIZE"].flatMap { Int($0) } ?? slurmTasks, launcher: "a PMI launcher") }
        if env["SLURM_PROCID"] != nil && env["SLURM_STEP_ID"] != nil, let n = env["SLURM_STEP_NUM_TASKS"].flatMap({ Int($0) }), n > 1 {
            throw HasteError.unsupported("srun started \(n) tasks without MPI wire-up, so each would train alone.\n"
                                         + "hint: srun --mpi=pmix haste … (see `srun --mpi=list`), or mpirun -np \(n) haste … inside the allocation")
        }
        return nil
    }

    /// For `haste doctor`: whether MPI can be loaded, and which (MPI_Get_library_version may precede MPI_Init).
    public static func mpiDescription() -> String {
        do {
            let mpi = try MPILibrary()
            return "\(mpi.path) loads (\(mpi.versionString)); mpirun/srun ranks can run data-parallel"
        } catch {
            return "\(MPILibrary.defaultPath) not loadable: one process only (install openmpi-bin, or set HASTE_MPI_LIB)"
        }
    }

    /// The communicator of this process: `SingleProcess` unless a launcher started several ranks, then MPI's.
    public static func communicator(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Communicator {
        guard let job = try announcement(environment), job.size != 1 else { return SingleProcess() }
        let mpi = try MPILibrary()
        return MPICommunicator(mpi)
    }
}
