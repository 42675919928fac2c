import Foundation
import HasteTensor
import Testing
@testable import HasteCUDA

/// The staging ring's bookkeeping: reservations in order on 256-byte boundaries, a wrap to 0, one wait on the newest
/// copy in flight whose bytes a reservation overlaps (older ones released with it), copies already ended released
/// without a wait, the cap on copies in flight, and `drain`.
@Test func theStagingRingWaitsOnlyForCopiesWhoseBytesItReuses() {
    var ring = StagingRing<Int>(capacity: 4096, maxInFlight: 8)
    var waits: [Int] = []
    func reserve(_ n: Int, done: Set<Int> = []) -> (Int, [Int]) {
        let r = ring.reserve(n, isDone: { done.contains($0) }, wait: { waits.append($0) })
        return (r.offset, r.released)
    }
    var (offset, released) = reserve(1000)
    #expect(offset == 0 && released.isEmpty)
    ring.commit(offset: 0, count: 1000, token: 1)
    (offset, released) = reserve(1000)
    #expect(offset == 1024 && released.isEmpty, "the next 256-byte boundary")
    ring.commit(offset: offset, count: 1000, token: 2)
    (offset, released) = reserve(2000)
    #expect(offset == 2048 && released.isEmpty && waits.isEmpty)
    ring.commit(offset: offset, count: 2000, token: 3)
    // 1 500 bytes do not fit after 4 048: back to 0, over copies 1 and 2: one wait, on 2 (1 ended before it)
    (offset, released) = reserve(1500)
    #expect(offset == 0 && waits == [2] && released == [1, 2])
    ring.commit(offset: 0, count: 1500, token: 4)
    #expect(ring.inFlight.map(\.token) == [3, 4])
    // copy 3 reported ended: released without a wait; the bytes after 1 500 are free
    (offset, released) = reserve(500, done: [3])
    #expect(offset == 1536 && released == [3] && waits == [2])
    ring.commit(offset: offset, count: 500, token: 5)
    let mark = ring.commits                              // a wait for the stream begins here …
    ring.commit(offset: 2048, count: 100, token: 14)    // … while another thread queues a copy
    #expect(ring.drain(before: mark) == [4, 5] && ring.inFlight.map(\.token) == [14], "the copy queued during the wait stays")
    #expect(ring.drain() == [14] && ring.inFlight.isEmpty)
    (offset, _) = reserve(100)
    #expect(offset == 0, "nothing in flight: from the start")
    ring.commit(offset: 0, count: 100, token: 6)
    for t in 7...13 {                                   // 8 copies in flight: the cap
        let (o, _) = reserve(100)
        ring.commit(offset: o, count: 100, token: t)
    }
    waits = []
    (offset, released) = reserve(100)
    #expect(waits == [9] && released == [6, 7, 8, 9], "the older half waited for: \(waits), \(released)")
    #expect(offset == 8 * 256)
}

/// The staged uploads over the stand-in driver, which defers copies from the staging ring as a GPU would: values
/// arrive intact though the host buffer is overwritten at once and the ring wraps many times (uploads from 4 bytes to
/// 2.5 rings), no upload waits for the stream, the host waited for events only where the ring wrapped onto queued
/// copies, and queued copies were still pending when the uploads returned. `HASTE_CUDA_STAGING_MB=0` and a failed
/// pinned allocation wait for the stream at each upload, as before, with the same values.
@Suite(.serialized) struct PinnedUploadsOverTheStandIn {
    static let fake: FakeCUDA? = { do { return try FakeCUDA.fresh() } catch { Issue.record("fake CUDA: \(error)"); return nil } }()

    func driver(_ fake: FakeCUDA, stagingBytes: Int) throws -> CUDADriver {
        try CUDADriver(api: fake.libs.api, blas: fake.libs.blas, compiler: KernelCompiler(nvrtc: fake.libs.nvrtc, cacheDirectory: nil),
                       index: 0, allowTF32: false, stagingBytes: stagingBytes)
    }

    /// Uploads `sizes` floats each from one host buffer refilled before each upload, then reads them all back.
    func roundTrip(_ driver: CUDADriver, sizes: [Int], afterUploads: () -> Void = {}) throws -> Bool {
        var host = [Float](repeating: 0, count: sizes.max()!)
        var targets: [(DevicePointer, [Float])] = []
        for (i, n) in sizes.enumerated() {
            for j in 0..<n { host[j] = Float(i * 100_000 + j) }
            let p = try #require(driver.allocate(byteCount: n * 4))
            host.withUnsafeBytes { driver.copy(fromHost: $0.baseAddress!, to: p, byteCount: n * 4) }
            targets.append((p, Array(host[0..<n])))
        }
        host = host.map { _ in -1 }
        afterUploads()
        var intact = true
        for (p, expected) in targets {
            var out = [Float](repeating: 0, count: expected.count)
            out.withUnsafeMutableBytes { driver.copy(from: p, toHost: $0.baseAddress!, byteCount: expected.count * 4) }
            intact = intact && out == expected
            driver.free(p)
        }
        try driver.synchronize()
        return intact
    }

    @Test func stagedUploadsArriveIntactWithoutWaitingForTheStream() throws {
        guard let fake = Self.fake else { return }
        let driver = try driver(fake, stagingBytes: 64 << 10)                 // 64 KiB: 16 KiB pieces
        let staging = try #require(driver.staging)
        #expect(driver.stagingNote == "asynchronous, through 64 KiB of pinned staging")
        #expect(staging.pieceBytes == 16 << 10 && fake.global("fake_host_alloc_flags", UInt32.self).pointee == 1)
        fake.global("fake_defer_from", UnsafeRawPointer?.self).pointee = UnsafeRawPointer(staging.base)
        fake.global("fake_defer_bytes", Int.self).pointee = staging.capacity
        defer { fake.global("fake_defer_from", UnsafeRawPointer?.self).pointee = nil }
        let syncs = fake.global("fake_stream_syncs", Int32.self), waits = fake.global("fake_event_waits", Int32.self)
        let (syncs0, waits0) = (syncs.pointee, waits.pointee)
        fake.global("fake_deferred_peak", Int32.self).pointee = 0
        let sizes = [1, 100, 5000, 4096, 40_000, 3, 12_000, 7, 16_384, 2]      // floats: 4 B … 160 KB (2.5 rings)
        var (pending, syncsAfterUploads) = (0, Int32(0))
        let intact = try roundTrip(driver, sizes: sizes) { (pending, syncsAfterUploads) = (staging.inFlight, syncs.pointee) }
        #expect(syncsAfterUploads == syncs0, "an upload waited for the stream")
        #expect(intact, "a staged copy read staging bytes written again before it ran")
        #expect(waits.pointee > waits0, "the ring wrapped onto queued copies: the host waited for their events")
        #expect(pending > 0 && fake.global("fake_deferred_peak", Int32.self).pointee >= 4)
        #expect(staging.inFlight == 0, "a device → host copy waits for the stream: every staged copy has ended")
    }

    @Test func withoutStagingEachUploadWaitsForTheStream() throws {
        guard let fake = Self.fake else { return }
        let off = try driver(fake, stagingBytes: 0)
        #expect(off.staging == nil && off.stagingNote == "each waits for the GPU (HASTE_CUDA_STAGING_MB=0)")
        let syncs = fake.global("fake_stream_syncs", Int32.self)
        let before = syncs.pointee
        var during = Int32(0)
        #expect(try roundTrip(off, sizes: [10, 3000]) { during = syncs.pointee })
        #expect(during == before + 2)
        fake.global("fake_fail_host_alloc", Int32.self).pointee = 1
        defer { fake.global("fake_fail_host_alloc", Int32.self).pointee = 0 }
        let failed = try driver(fake, stagingBytes: 1 << 20)
        #expect(failed.staging == nil && failed.stagingNote.hasPrefix("each waits for the GPU: no pinned staging (cuMemHostAlloc(1 MiB) failed: CUDA_ERROR_FAKE (2)"),
                "\(failed.stagingNote)")
        let mid = syncs.pointee
        #expect(try roundTrip(failed, sizes: [5]) { during = syncs.pointee })
        #expect(during == mid + 1)
        #expect(failed.report(steps: 1).contains("host → device copies: each waits for the GPU: no pinned staging"))
    }

    @Test func theStagingSizeComesFromTheEnvironment() {
        #expect(PinnedUploads.configuredBytes(nil) == 64 << 20 && PinnedUploads.configuredBytes("") == 64 << 20)
        #expect(PinnedUploads.configuredBytes("0") == 0 && PinnedUploads.configuredBytes("16") == 16 << 20)
        #expect(PinnedUploads.configuredBytes("lots") == 64 << 20 && PinnedUploads.configuredBytes("5000") == 64 << 20)
    }
}
