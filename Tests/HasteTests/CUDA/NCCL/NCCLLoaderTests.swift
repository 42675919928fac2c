import Foundation
import Testing
import HasteDistributed
import HasteTensor
@testable import HasteCUDA

/// The real NCCL loader path (`NCCLAPI`, `NCCLCollectives`) over the stand-in libnccl.so.2: found by the folder
/// search, symbols by name, the exact calls and arguments on the stand-in libcuda's stream, and the failures.
/// One stand-in with one call log: NCCL suites run serialized (`NCCLSuite`).
extension NCCLSuite {
    @Test func theStandInIsFoundByTheSearchAndItsVersionRead() throws {
        guard let api = try StandInNCCL.api(), let folder = StandInNCCL.folder else { return }
        #expect(api.library.path == "\(folder)/libnccl.so.2" && api.library.origin == "HASTE_CUDA_LIB_DIR")
        #expect(api.version == "2.21.5")
        #expect(api.describe(1) == "unhandled cuda error (run with NCCL_DEBUG=INFO for details) (1)")
        let line = NCCL.probe(environment: ["HASTE_CUDA_LIB_DIR": folder, "PATH": "/nonexistent"])
        #expect(line == "nccl: \(folder)/libnccl.so.2 (HASTE_CUDA_LIB_DIR), NCCL 2.21.5; GPU ranks sum gradients with it", "\(line)")
    }

    /// Missing: doctor says so with the fix; `--dist-backend nccl` throws where haste looked and the MPI way out.
    @Test func aMissingOrIncompleteLibraryIsAClearError() throws {
        let empty = RuntimeTestSupport.temporaryFolder("nonccl")
        let env = ["HASTE_CUDA_LIB_DIR": empty, "PATH": "/nonexistent"]
        if case .success = CUDALibrarySearch.standard(environment: env).load(["libnccl.so.2"]) {
            print("note: the system loader finds libnccl.so.2 here; the missing-library checks do not apply")
        } else {
            let line = NCCL.probe(environment: env)
            #expect(line.hasPrefix("nccl: not found (libnccl.so.2); to fix: install PyTorch with CUDA (pip install torch) or NCCL alone "
                                   + "(pip install nvidia-nccl-cu12)") && line.hasSuffix("without it GPU ranks sum through host memory with MPI"), "\(line)")
            do { _ = try NCCLAPI.load(search: .standard(environment: env)); Issue.record("loaded NCCL from an empty folder") } catch {
                let text = "\(error)"
                #expect(text.contains("haste could not find NCCL (libnccl.so.2), which --dist-backend nccl needs") && text.contains("\(empty) (HASTE_CUDA_LIB_DIR)")
                        && text.contains("or sum GPU gradients through host memory with --dist-backend mpi"), "\(text)")
            }
        }
        guard let old = StandInNCCL.withoutAbort else { return }
        do {
            _ = try NCCLAPI.load(search: .standard(environment: ["HASTE_CUDA_LIB_DIR": old, "PATH": "/nonexistent"]))
            Issue.record("a libnccl.so.2 without ncclCommAbort loaded")
        } catch {
            #expect("\(error)".contains("NCCL at \(old)/libnccl.so.2 has no function ncclCommAbort") && "\(error)".contains("--dist-backend mpi"), "\(error)")
        }
    }

    /// One rank over the real `CUDADriver` (stand-in libcuda): the unique id, the communicator, each sum in place on
    /// haste's stream (0x5157 in the stand-in) with float32/sum at the bucket's address, then ncclCommDestroy.
    @Test func oneRankQueuesEachSumInPlaceOnHastesStreamThenDestroys() throws {
        guard let api = try StandInNCCL.api(), let fake = FakeCUDA.shared else { return }
        StandInNCCL.reset(api)
        let backend = CUDABackend(driver: fake.driver, device: .cuda(1))     // not registered: addresses and the stream
        let values: [Float] = (0..<8).map { Float($0) + 0.5 }
        let p = try fake.upload(values)
        let arena = Tensor(storage: Storage(borrowing: UnsafeMutableRawPointer(bitPattern: UInt(p))!, byteCount: 32, owner: backend),
                           shape: [8], dtype: .float32)
        let nccl = try NCCLCollectives(api: api, backend: backend, comm: SingleProcess())
        #expect(nccl.summary == "NCCL 2.21.5 (\(api.library.path)), 1 rank")
        nccl.queueSum(arena.narrowed(0, start: 2, length: 4).buffer, count: 4)
        nccl.queueSum(arena.narrowed(0, start: 6, length: 2).buffer, count: 2)
        nccl.queueSum(arena.narrowed(0, start: 0, length: 0).buffer, count: 0)   // an empty bucket is not a call
        try nccl.wait()
        nccl.close(abort: false)
        nccl.close(abort: false)
        let id = try #require(StandInNCCL.log(api).first?.components(separatedBy: " -> ").last)
        func at(_ k: Int) -> String { "0x" + String(p + UInt64(4 * k), radix: 16) }
        #expect(StandInNCCL.log(api) == [
            "ncclGetUniqueId -> \(id)",
            "ncclCommInitRank(nranks 1, id \(id), rank 0)",
            "ncclAllReduce(rank 0, buffer \(at(2)), count 4, datatype 7, op 0, in place, stream 0x5157)",
            "ncclAllReduce(rank 0, buffer \(at(6)), count 2, datatype 7, op 0, in place, stream 0x5157)",
            "ncclCommDestroy(rank 0)",
        ])
        #expect(fake.download(p, count: 8) == values, "one rank's sum is its own gradients")
        fake.driver.free(p)
    }

    /// A failed call is kept until `wait()`, which aborts the communicator (never destroy: that would wait for peers)
    /// and throws the call, NCCL's words and the way out; an asynchronous error and a failed init likewise.
    @Test func failuresAbortTheCommunicatorAndSayWhatFailed() throws {
        guard let api = try StandInNCCL.api(), let fake = FakeCUDA.shared else { return }
        let backend = CUDABackend(driver: fake.driver, device: .cuda(1))
        let p = try fake.upload([1, 2, 3, 4])
        let arena = Tensor(storage: Storage(borrowing: UnsafeMutableRawPointer(bitPattern: UInt(p))!, byteCount: 16, owner: backend),
                           shape: [4], dtype: .float32)
        for (fail, words) in [(Int32(1), "ncclAllReduce(4 floats on cuda:1): unhandled cuda error"),
                              (3, "ncclCommGetAsyncError: remote process exited or there was a network error (6)")] {
            StandInNCCL.reset(api)
            let nccl = try NCCLCollectives(api: api, backend: backend, comm: SingleProcess())
            StandInNCCL.reset(api, fail: fail)
            nccl.queueSum(arena.buffer, count: 4)
            nccl.queueSum(arena.buffer, count: 4)                 // after a failed call: not called (an async error shows later)
            do { try nccl.wait(); Issue.record("failure \(fail) was not thrown") } catch {
                let text = "\(error)"
                #expect(text.contains("rank 0 of 1: NCCL failed: \(words)") && text.contains("NCCL_DEBUG=WARN")
                        && text.contains("--dist-backend mpi"), "\(text)")
            }
            nccl.close(abort: false)                              // already aborted: nothing more
            let log = StandInNCCL.log(api)
            #expect(log.filter { $0.hasPrefix("ncclAllReduce") }.count == (fail == 1 ? 1 : 2) && log.last == "ncclCommAbort(rank 0)", "\(log)")
            #expect(!log.contains("ncclCommDestroy(rank 0)"))
        }
        StandInNCCL.reset(api, fail: 2)
        #expect(throws: CUDAError.self) { try NCCLCollectives(api: api, backend: backend, comm: SingleProcess()) }
        do { _ = try NCCLCollectives(api: api, backend: backend, comm: SingleProcess()) } catch {
            #expect("\(error)".contains("ncclCommInitRank(1 ranks, rank 0, cuda:1) failed: unhandled system error"), "\(error)")
        }
        StandInNCCL.reset(api)
        fake.driver.free(p)
    }
}

/// From the shell: `--dist-backend nccl` without `--device cuda` stops with the reason and exit status 1 (train and
/// bench allreduce), an unknown value lists the choices, and `bench allreduce --layout` prints the buckets alone.
@Test func distBackendFlagsFromTheShell() throws {
    for args in [["train", "--dist-backend", "nccl", "--max-train-steps", "1"], ["bench", "allreduce", "--dist-backend", "nccl", "--model", "SiT-S/2"]] {
        let r = try Launcher.run(args, timeout: 300)
        #expect(r.status == 1 && r.stderr.contains("--dist-backend nccl sums gradients on GPUs: it needs --device cuda"), "\(args): \(r.stderr)")
    }
    let bad = try Launcher.run(["train", "--dist-backend", "gloo"], timeout: 60)
    #expect(bad.status != 0 && bad.stderr.contains("gloo") && bad.stderr.contains("auto|nccl|mpi"), "\(bad.stderr)")
    let layout = try Launcher.run(["bench", "allreduce", "--layout", "--model", "SiT-S/2", "--threads", "1"], timeout: 300)
    #expect(layout.status == 0, "\(layout.stderr)")
    let line = layout.stdout.split(separator: "\n").first.map(String.init) ?? ""
    // "SiT-S/2 gradients: N floats (… MB float32) in K buckets (launch order, floats): n1 n2 …", the sizes adding up to N.
    let total = Int(line.components(separatedBy: " floats (").first?.components(separatedBy: ": ").last ?? "") ?? -1
    let sizes = (line.components(separatedBy: "floats): ").last ?? "").split(separator: " ").compactMap { Int($0) }
    #expect(line.hasPrefix("SiT-S/2 gradients: ") && !sizes.isEmpty && sizes.reduce(0, +) == total && total > 30_000_000, "\(layout.stdout)")
}
