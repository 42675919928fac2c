#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation

/// Host → device copies without waiting for the stream. A copy from pageable memory must be waited for (the caller
/// may reuse its buffer as soon as the call returns, and the driver may still be reading it), and the wait drains
/// every kernel queued before it: the GPU then sits idle until the host queues more (a training step's batch
/// upload waited for the previous step's AdamW and EMA). Here the host bytes are copied into pinned (page-locked)
/// staging memory, a ring of `HASTE_CUDA_STAGING_MB` MiB (default 64; 0: every upload waits, as before), and an
/// asynchronous copy from there is queued with an event behind it; the host waits only where it must write staging
/// bytes an earlier copy may still be reading (`StagingRing`). Uploads larger than a quarter of the ring go in
/// quarter-ring pieces, so the host fills one piece while the previous one is copied.
final class PinnedUploads {
    typealias Event = OpaquePointer
    static let defaultMiB = 64
    static let environmentKey = "HASTE_CUDA_STAGING_MB"
    private static let portable: UInt32 = 1                // CU_MEMHOSTALLOC_PORTABLE: pinned for every context

    /// `HASTE_CUDA_STAGING_MB`'s staging bytes: unset or empty the default; an integer 0…4096 (MiB; 0 off);
    /// anything else is refused with a message (on stderr) and the default used.
    static func configuredBytes(_ text: String?) -> Int {
        guard let text, !text.isEmpty else { return defaultMiB << 20 }
        if let v = Int(text), (0...4096).contains(v) { return v << 20 }
        fputs("haste: \(environmentKey)=\(text) ignored: give the pinned staging for host → device copies in MiB, "
              + "0 to 4096 (0: every copy waits for the GPU), or unset it (\(defaultMiB))\n", stderr)
        return defaultMiB << 20
    }

    private let hostAlloc: @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> Int32
    private let freeHost: @convention(c) (UnsafeMutableRawPointer?) -> Int32
    private let events: CUDAEvents
    /// A CUresult in the driver's words (`DriverAPI.describe`).
    private let describe: (Int32) -> String
    let base: UnsafeMutableRawPointer
    /// The most bytes one staged copy carries (a quarter of the ring).
    let pieceBytes: Int
    private var ring: StagingRing<Event>
    private var spare: [Event] = []
    private let lock = NSLock()

    /// The staging ring of `bytes` (≥ 64 KiB) from the driver `library`; throws where a symbol is missing or the
    /// pinned allocation fails (the caller then waits for each copy, as without staging).
    init(library: CUDALibrarySearch.Loaded, bytes: Int, describe: @escaping (Int32) -> String = { "CUresult \($0)" }) throws {
        let k = CUDALibraryKind.driver
        self.describe = describe
        hostAlloc = try library.symbol("cuMemHostAlloc", k); freeHost = try library.symbol("cuMemFreeHost", k)
        events = try CUDAEvents(library: library)
        let size = Swift.max(bytes, 64 << 10)
        var p: UnsafeMutableRawPointer?
        let r = hostAlloc(&p, size, PinnedUploads.portable)
        guard r == 0, let p else { throw CUDAError("cuMemHostAlloc(\(size >> 20) MiB) failed: \(describe(r))") }
        base = p
        pieceBytes = size / 4 / StagingRing<Event>.alignment * StagingRing<Event>.alignment
        ring = StagingRing(capacity: size)
    }

    deinit {
        if let last = ring.inFlight.last { _ = events.synchronize(last.token) }
        _ = freeHost(base)
    }

    /// Queues the copy of `byteCount` host bytes to `dst` on `stream` through the ring; `copy` is
    /// cuMemcpyHtoDAsync (dst, staged source, bytes) → CUresult. Returns nil, or the first failure's words (the
    /// driver keeps them for its next synchronize; nothing after a failed piece is queued).
    func upload(_ host: UnsafeRawPointer, to dst: UInt64, byteCount: Int, stream: OpaquePointer,
                copy: (UInt64, UnsafeRawPointer, Int) -> Int32,
                synchronize: () -> Int32) -> String? {
        lock.lock(); defer { lock.unlock() }
        var done = 0
        while done < byteCount {
            let n = Swift.min(pieceBytes, byteCount - done)
            var waitFailure: Int32 = 0
            let (offset, released) = ring.reserve(n, isDone: { events.query($0) != CUDAEvents.notReady }) { e in
                waitFailure = events.synchronize(e)
            }
            spare += released
            if waitFailure != 0 { return "cuEventSynchronize on a staged host → device copy failed: \(describe(waitFailure))" }
            let staged = base + offset
            staged.copyMemory(from: host + done, byteCount: n)
            let r = copy(dst + UInt64(done), UnsafeRawPointer(staged), n)
            if r != 0 { return "cuMemcpyHtoDAsync_v2(\(n) staged bytes) failed: \(describe(r))" }
            let event = nextEvent()
            if let event, events.record(event, stream) == 0 {
                ring.commit(offset: offset, count: n, token: event)
            } else {
                // No event to say when the staging bytes are free again: wait for the copy instead.
                if let event { spare.append(event) }
                let w = synchronize()
                spare += ring.drain()
                if w != 0 { return "cuStreamSynchronize after a staged host → device copy failed: \(describe(w))" }
            }
            done += n
        }
        return nil
    }

    /// Before a wait for the stream: the mark `streamDrained(before:)` takes after it.
    var mark: Int { lock.lock(); defer { lock.unlock() }; return ring.commits }

    /// The stream was waited for (a device → host copy, `synchronize()`), from when `mark` was read: every copy
    /// staged before then has ended (one another thread staged meanwhile may not have).
    func streamDrained(before mark: Int) {
        lock.lock(); defer { lock.unlock() }
        spare += ring.drain(before: mark)
    }

    /// A spare event, or a new one without timing (nil where the driver makes none).
    private func nextEvent() -> Event? {
        if let e = spare.popLast() { return e }
        var e: Event?
        return events.create(&e, CUDAEvents.disableTiming) == 0 ? e : nil
    }

    /// The ring's bytes.
    var capacity: Int { ring.capacity }

    /// How many staged copies are not yet known to have ended (tests, diagnostics).
    var inFlight: Int { lock.lock(); defer { lock.unlock() }; return ring.inFlight.count }
}
