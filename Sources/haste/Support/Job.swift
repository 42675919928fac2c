import Foundation
import HasteDistributed

/// Runs a command's work on every rank of a job. Alone, errors reach ArgumentParser as always. With several
/// ranks, a rank whose work throws prints its message (naming itself) and ends the whole job through
/// MPI_Abort, so no other rank waits in a collective until a timeout (issue #13); a rank that traps dies, and
/// mpirun/srun end the others. Success leaves MPI cleanly. What the work opened for the job (NCCL's
/// communicator, in `Resources`) is destroyed on success and aborted on failure, before MPI ends.
enum Job {
    /// Opened by a command's work, closed with the job.
    final class Resources {
        var collectives: DeviceCollectives?
    }

    static func run(_ comm: Communicator, _ body: () throws -> Void) throws {
        try run(comm) { (_: Resources) in try body() }
    }

    static func run(_ comm: Communicator, _ body: (Resources) throws -> Void) throws {
        let job = Resources()
        do {
            try body(job)
            job.collectives?.close(abort: false)
            if comm.size > 1 { comm.finish() }
        } catch {
            job.collectives?.close(abort: true)
            guard comm.size > 1 else { throw error }
            FileHandle.standardError.write(Data("Error (rank \(comm.rank) of \(comm.size)): \(error)\n".utf8))
            comm.abort(code: 1)
        }
    }
}
