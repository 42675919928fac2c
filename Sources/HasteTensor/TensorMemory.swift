#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Bytes of tensor storage that backends allocated and nobody has freed yet, now and at the peak since the
/// last `resetPeak()`, per kind of memory (host for the CPU backend, device for the others; a caching
/// allocator's idle blocks are not live). Borrowed storage (a mapped file) is not counted. `haste bench train`
/// prints the host peak beside the peak of `hostBlocks.mappedBytes` (live + cached large blocks, page-rounded) and
/// the process's peak RSS: mapped minus tensor peak is the cache's slack, RSS minus mapped is what lives outside
/// large tensors (code, BLAS buffers, small tensors and scratch on the malloc heap). Storage calls
/// `allocated`/`freed`; one uncontended mutex (~20 ns) per call.
public enum TensorMemory {
    public struct Counts: Sendable, Equatable {
        public var liveBytes = 0, peakBytes = 0
    }

    nonisolated(unsafe) private static var host = Counts(), device = Counts()
    nonisolated(unsafe) private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// Host (CPU backend) storage.
    public static var hostCounts: Counts { locked { host } }
    /// Storage of every non-CPU device together.
    public static var deviceCounts: Counts { locked { device } }
    /// The CPU backend's cache of large host blocks (128 KiB and more): live, cached and peak mapped bytes.
    public static var hostBlocks: HostBlockStats { CPUBackend.shared.blocks.statistics }

    /// The storage allocated inside one `measure` body (in its task), wherever it is freed.
    public final class Scope: @unchecked Sendable {
        fileprivate var counts = Counts()
    }
    @TaskLocal static var scope: Scope? = nil

    /// Runs `body` and returns the live and peak bytes of the storage it allocated (host and devices together),
    /// counted from zero: what `body` itself held at its peak and still holds at the end. Unlike the process-wide
    /// counts, other tasks (tests running in parallel) do not enter it, so it is the same on every run of the
    /// same computation. Storage made inside a nested `measure` counts in the innermost only.
    public static func measure<R>(_ body: () throws -> R) rethrows -> (result: R, counts: Counts) {
        let s = Scope()
        let result = try $scope.withValue(s) { try body() }
        return (result, locked { s.counts })
    }

    /// Starts a new peak at the current live bytes (e.g. before one benchmark row).
    public static func resetPeak() {
        locked {
            host.peakBytes = host.liveBytes
            device.peakBytes = device.liveBytes
        }
    }

    static func allocated(_ bytes: Int, on d: Device, scope: Scope?) {
        locked {
            if d == .cpu { add(bytes, to: &host) } else { add(bytes, to: &device) }
            if let scope { add(bytes, to: &scope.counts) }
        }
    }

    static func freed(_ bytes: Int, on d: Device, scope: Scope?) {
        locked {
            if d == .cpu { host.liveBytes -= bytes } else { device.liveBytes -= bytes }
            scope?.counts.liveBytes -= bytes
        }
    }

    private static func add(_ bytes: Int, to c: inout Counts) {
        c.liveBytes += bytes
        c.peakBytes = Swift.max(c.peakBytes, c.liveBytes)
    }

    private static func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}
