import ArgumentParser
import Foundation
import HasteCUDA
import HasteDistributed
import HasteTensor
import HasteTraining

/// Flags every command that computes shares (STYLE §2.8): where, with how many threads, from which seed.
struct RuntimeOptions: ParsableArguments {
    @Option(name: .customLong("threads"), parsing: .unconditional,
            help: "Compute threads: OpenBLAS's pool and haste's own chunked loops (default: this machine's cores, divided among the ranks on it).")
    var threadsOption: Int?

    /// Ranks sharing this machine (mpirun/srun), set by `openJob()`: they split the default thread count.
    nonisolated(unsafe) static var localRanks = 1

    var threads: Int { threadsOption ?? max(1, ProcessInfo.processInfo.activeProcessorCount / RuntimeOptions.localRanks) }

    @Option(help: ArgumentHelp("Device to run on; plain cuda is each rank's own GPU (cuda:<local rank>).", valueName: "cpu|cuda|cuda:N"))
    var device: String = "cpu"

    @Option(name: .customLong("seed"), parsing: .unconditional, help: "Seed for haste's random streams (default 0, as the reference).")
    var seedFlag: Int64?

    /// `--seed`, 0 when not given (validated ≥ 0).
    var seed: UInt64 { UInt64(seedFlag ?? 0) }

    /// More threads than 4 per core only adds contention, and a huge count makes OpenBLAS and Dispatch
    /// allocate a stack per thread: capped here with a message.
    static var maxThreads: Int { min(1024, 4 * ProcessInfo.processInfo.activeProcessorCount) }

    mutating func validate() throws {
        if let s = seedFlag { try FlagCheck.range("seed", s, TrainConfig.ranges["seed"]!) }
        if let t = threadsOption, t < 1 { throw ValidationError("--threads must be at least 1, got \(t)") }
        if let t = threadsOption, t > Self.maxThreads {
            let cores = ProcessInfo.processInfo.activeProcessorCount
            FileHandle.standardError.write(Data("haste: --threads \(threads) is more than 4 per core (\(cores) cores here); using \(Self.maxThreads)\n".utf8))
            threadsOption = Self.maxThreads
        }
        guard DeviceName(device) != nil else {
            throw ValidationError("--device expects cpu, cuda or cuda:N, got '\(device)'")
        }
    }

    /// This process's place in a job (mpirun/srun ranks, or alone), then the device with this rank's threads.
    /// `allowTF32`: float32 GEMMs on CUDA, and float32 attention without a gradient, may use TF32 tensor cores
    /// (train's `--allow-tf32`, generate's `--tf32`).
    func openJob(allowTF32: Bool = false) throws -> (Communicator, Device) {
        let comm = try Launch.communicator()
        RuntimeOptions.localRanks = comm.localSize
        return (comm, try openDevice(allowTF32: allowTF32, localRank: comm.localRank))
    }

    /// Sets OpenBLAS's pool and haste's chunking to `--threads`.
    func applyThreads() { CPUBackend.setThreads(threads) }

    /// Applies the thread count and opens the device; throws when that device's backend is not available (for
    /// CUDA: which library or device is missing, where haste looked, how to fix it). `allowTF32` matters on CUDA only.
    /// A plain `--device cuda` is this rank's GPU, `cuda:<local rank>` (as torchrun/accelerate place ranks);
    /// `cuda:N` pins every rank to GPU N.
    /// `hostOnlyAllowed`: whether `HASTE_CUDA_HOST_ONLY=1` (a CUDA device that computes nothing, HostOnlyDriver)
    /// may stand in; only `haste bench train` measures with it, anything else would write meaningless results.
    func openDevice(allowTF32: Bool = false, localRank: Int = 0, hostOnlyAllowed: Bool = false) throws -> Device {
        applyThreads()
        switch DeviceName(device)! {
        case .cpu: return .cpu
        case .cuda(let index):
            if !hostOnlyAllowed && ProcessInfo.processInfo.environment["HASTE_CUDA_HOST_ONLY"] == "1" {
                throw ValidationError("--device \(device) with HASTE_CUDA_HOST_ONLY=1: that device computes nothing (a diagnostic for "
                                      + "`haste bench train --device cuda` only); unset HASTE_CUDA_HOST_ONLY to use the GPU")
            }
            return try CUDA.open(index: index ?? localRank, allowTF32: allowTF32)
        }
    }
}

/// The spellings `--device` accepts.
enum DeviceName: Equatable {
    case cpu
    /// nil: the rank's own GPU (`cuda:<local rank>`; cuda:0 for one process).
    case cuda(Int?)

    init?(_ text: String) {
        if text == "cpu" { self = .cpu; return }
        if text == "cuda" { self = .cuda(nil); return }
        guard text.hasPrefix("cuda:"), let i = Int(text.dropFirst(5)), i >= 0 else { return nil }
        self = .cuda(i)
    }
}
