import Foundation
import HasteDistributed

/// Runs a command's work on every rank of a job. Alone, errors reach ArgumentParser as always. With several
/// ranks, a rank whose work throws prints its message (naming itself) and ends the whole job through
/// MPI_Abort, so no other rank waits in a collective until a timeout (issue #13); a rank that traps dies, and
/// mpirun/srun end the others. Success leaves MPI cleanly.
enum Job {
    static func run(_ comm: Communicator, _ body: () throws -> Void) throws {
        guard comm.size > 1 else { return try body() }
        do {
            try body()
            comm.finish()
        } catch {
            FileHandle.standardError.write(Data("Error (rank \(comm.rank) of \(comm.size)): \(error)\n".utf8))
            comm.abort(code: 1)
        }
    }
}
