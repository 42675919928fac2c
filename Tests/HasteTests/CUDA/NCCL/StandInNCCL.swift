import Foundation
import Testing
import HasteDistributed
@testable import HasteCUDA

/// A stand-in `libnccl.so.2`, compiled from C at test time: every function `NCCLAPI` resolves, with nccl.h's C
/// signatures (ncclUniqueId by value), for ranks that are threads of this process. Communicators that share a
/// unique id form one job; ncclCommInitRank waits for all of its ranks, ncclAllReduce waits for every rank's
/// buffer and writes the sum (in rank order) to each, as NCCL's collectives do. Device memory is host memory
/// (the emulator's and the stand-in libcuda's). `fake_nccl_log` records every call with its arguments, so a test
/// checks the exact sequence the real loader path makes; `fake_nccl_fail` injects failures.
let standInNCCLSource = #"""
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct Job { char id[128]; int nranks, joined, arrived, generation; float* bufs[16]; size_t count;
                     pthread_mutex_t m; pthread_cond_t c; } Job;
typedef struct Comm { Job* job; int rank; } Comm;
static Job jobs[16];
static int njobs = 0, ids = 0;
static pthread_mutex_t reg = PTHREAD_MUTEX_INITIALIZER;
char fake_nccl_log[1 << 16];
/* 1: ncclAllReduce returns ncclUnhandledCudaError; 2: ncclCommInitRank returns ncclSystemError;
   3: ncclCommGetAsyncError reports ncclRemoteError. */
int fake_nccl_fail = 0;
static void note(const char* fmt, ...) {
    pthread_mutex_lock(&reg);
    size_t n = strlen(fake_nccl_log);
    va_list ap; va_start(ap, fmt);
    vsnprintf(fake_nccl_log + n, sizeof fake_nccl_log - n, fmt, ap);
    va_end(ap);
    n = strlen(fake_nccl_log);
    if (n + 1 < sizeof fake_nccl_log) { fake_nccl_log[n] = '\n'; fake_nccl_log[n + 1] = 0; }
    pthread_mutex_unlock(&reg);
}
int ncclGetVersion(int* v) { *v = 22105; return 0; }
int ncclGetUniqueId(ncclUniqueId* id) {
    memset(id, 0, sizeof *id);
    pthread_mutex_lock(&reg); int k = ++ids; pthread_mutex_unlock(&reg);
    snprintf(id->internal, sizeof id->internal, "stand-in-id-%d", k);
    note("ncclGetUniqueId -> %s", id->internal);
    return 0;
}
int ncclCommInitRank(Comm** comm, int nranks, ncclUniqueId id, int rank) {
    note("ncclCommInitRank(nranks %d, id %s, rank %d)", nranks, id.internal, rank);
    if (fake_nccl_fail == 2) return 2;
    if (strncmp(id.internal, "stand-in-id-", 12) != 0 || nranks < 1 || nranks > 16 || rank < 0 || rank >= nranks) return 4;
    pthread_mutex_lock(&reg);
    Job* job = 0;
    for (int i = 0; i < njobs; i++) if (memcmp(jobs[i].id, id.internal, 128) == 0) job = &jobs[i];
    if (!job) {
        if (njobs == 16) { pthread_mutex_unlock(&reg); return 3; }
        job = &jobs[njobs++];
        memset(job, 0, sizeof *job);
        memcpy(job->id, id.internal, 128);
        job->nranks = nranks;
        pthread_mutex_init(&job->m, 0); pthread_cond_init(&job->c, 0);
    }
    pthread_mutex_unlock(&reg);
    if (job->nranks != nranks) return 4;
    pthread_mutex_lock(&job->m);
    job->joined++;
    pthread_cond_broadcast(&job->c);
    while (job->joined < job->nranks) pthread_cond_wait(&job->c, &job->m);
    pthread_mutex_unlock(&job->m);
    Comm* c = malloc(sizeof *c); c->job = job; c->rank = rank; *comm = c;
    return 0;
}
int ncclAllReduce(const void* send, void* recv, size_t count, int datatype, int op, Comm* comm, void* stream) {
    note("ncclAllReduce(rank %d, buffer %p, count %zu, datatype %d, op %d, %s, stream %p)", comm ? comm->rank : -1, recv, count,
         datatype, op, send == recv ? "in place" : "out of place", stream);
    if (fake_nccl_fail == 1) return 1;
    if (!comm || datatype != 7 || op != 0 || send != recv) return 4;
    Job* job = comm->job;
    pthread_mutex_lock(&job->m);
    int generation = job->generation;
    job->bufs[comm->rank] = recv;
    job->count = count;
    if (++job->arrived == job->nranks) {
        for (size_t i = 0; i < count; i++) {
            float s = job->bufs[0][i];
            for (int r = 1; r < job->nranks; r++) s += job->bufs[r][i];
            for (int r = 0; r < job->nranks; r++) job->bufs[r][i] = s;
        }
        job->arrived = 0; job->generation++;
        pthread_cond_broadcast(&job->c);
    } else {
        while (generation == job->generation) pthread_cond_wait(&job->c, &job->m);
    }
    pthread_mutex_unlock(&job->m);
    return 0;
}
int ncclCommGetAsyncError(Comm* comm, int* error) { *error = fake_nccl_fail == 3 ? 6 : 0; return 0; }
int ncclCommAbort(Comm* comm) { note("ncclCommAbort(rank %d)", comm->rank); free(comm); return 0; }
int ncclCommDestroy(Comm* comm) { note("ncclCommDestroy(rank %d)", comm->rank); free(comm); return 0; }
const char* ncclGetErrorString(int r) {
    switch (r) {
    case 1: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case 2: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case 4: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case 6: return "remote process exited or there was a network error";
    default: return "stand-in error";
    }
}
"""#

/// The stand-in, built into a fresh folder (with a copy lacking ncclCommAbort, for the missing-symbol error);
/// nil (and a warning) without a C compiler.
enum StandInNCCL {
    static let folder: String? = build(standInNCCLSource, tag: "ncclstandin")
    /// The same library without ncclCommAbort, as an NCCL older than haste needs would lack a function.
    static let withoutAbort: String? = build(standInNCCLSource.replacingOccurrences(of: "int ncclCommAbort(", with: "int renamedCommAbort("),
                                             tag: "ncclold")

    static func build(_ source: String, tag: String) -> String? {
        let dir = RuntimeTestSupport.temporaryFolder(tag)
        return (try? compileStandIn("libnccl.so.2", source, in: dir)) == true ? dir : nil
    }

    /// The stand-in's API, through the real loader (folder search, symbols by name).
    static func api() throws -> NCCLAPI? {
        guard let folder else { return nil }
        return try NCCLAPI.load(search: .standard(environment: ["HASTE_CUDA_LIB_DIR": folder, "PATH": "/nonexistent"]))
    }

    /// The calls logged so far, one per line; cleared with the injected failure by `reset`.
    static func log(_ api: NCCLAPI) -> [String] {
        String(cString: dlsym(api.library.handle, "fake_nccl_log")!.assumingMemoryBound(to: CChar.self)).split(separator: "\n").map(String.init)
    }

    static func reset(_ api: NCCLAPI, fail: Int32 = 0) {
        dlsym(api.library.handle, "fake_nccl_log")!.assumingMemoryBound(to: CChar.self).pointee = 0
        dlsym(api.library.handle, "fake_nccl_fail")!.assumingMemoryBound(to: Int32.self).pointee = fail
    }
}

/// Ranks that are threads of this process: `size` `ThreadRank`s over one `Hub`, each used from its own thread.
/// Every collective is an exchange of bytes through the hub (sums add in rank order, as the stand-in NCCL does).
final class Hub: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var slots: [[UInt8]?]
    private var results: [[UInt8]] = []
    private var generation = 0

    init(size: Int) { self.size = size; slots = Array(repeating: nil, count: size) }

    /// Every rank's bytes, once every rank has given its own; a rank left waiting 300 s is a test failure.
    func exchange(_ rank: Int, _ bytes: [UInt8]) -> [[UInt8]] {
        condition.lock(); defer { condition.unlock() }
        let mine = generation
        slots[rank] = bytes
        if slots.allSatisfy({ $0 != nil }) {
            results = slots.map { $0! }
            slots = Array(repeating: nil, count: size)
            generation += 1
            condition.broadcast()
            return results
        }
        let deadline = Date().addingTimeInterval(300)
        while generation == mine {
            if !condition.wait(until: deadline) { fatalError("Hub: rank \(rank) waited 300 s for the others (a hang)") }
        }
        return results
    }

    /// One communicator per rank.
    func ranks() -> [ThreadRank] { (0..<size).map { ThreadRank(hub: self, rank: $0) } }
}

final class ThreadRank: Communicator {
    let hub: Hub
    let rank: Int, localRank: Int
    var size: Int { hub.size }
    var localSize: Int { hub.size }
    init(hub: Hub, rank: Int) { (self.hub, self.rank, self.localRank) = (hub, rank, rank) }

    private func sum<T: AdditiveArithmetic>(_ data: UnsafeMutableBufferPointer<T>) {
        let all = hub.exchange(rank, Array(UnsafeRawBufferPointer(data)))
        for i in data.indices {
            data[i] = all.map { $0.withUnsafeBytes { $0.load(fromByteOffset: i * MemoryLayout<T>.stride, as: T.self) } }.reduce(.zero, +)
        }
    }
    func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) { sum(UnsafeMutableBufferPointer(start: data, count: count)) }
    func allReduceSum(_ values: inout [Double]) { values.withUnsafeMutableBufferPointer { sum($0) } }
    func startAllReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) -> Reduction {
        allReduceSum(data, count: count)
        return SingleProcess().startAllReduceSum(data, count: count)
    }
    func broadcast(_ bytes: inout [UInt8], root: Int) { bytes = hub.exchange(rank, bytes)[root] }
    func barrier() { _ = hub.exchange(rank, []) }
    func abort(code: Int32) -> Never { fatalError("rank \(rank) aborted with \(code)") }
    func finish() {}
}

/// Runs `body(rank)` on one thread per rank and returns what each returned (or threw), in rank order.
func onThreads<T>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) -> [Result<T, Error>] {
    let box = ResultsBox<T>(count), group = DispatchGroup(), lock = NSLock()
    for r in 0..<count {
        let thread = Thread {
            let out = Result { try body(r) }
            lock.lock(); box.results[r] = out; lock.unlock()
            group.leave()
        }
        thread.stackSize = 64 << 20
        group.enter()
        thread.start()
    }
    group.wait()
    return box.results.map { $0! }
}

private final class ResultsBox<T>: @unchecked Sendable {
    var results: [Result<T, Error>?]
    init(_ count: Int) { results = Array(repeating: nil, count: count) }
}
