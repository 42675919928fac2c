import Foundation
import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The host-only device's byte attribution (`HostOnlyDriver.madeBytes`, printed by `haste bench train` under
/// `HASTE_CUDA_HOST_ONLY=1`): the bytes the caching allocator handed out since the previous launch or GEMM are
/// charged to the next one, and the charges add up to what the allocator handed out.
@Test func hostOnlyChargesTheTensorsMadeToTheNextLaunch() {
    let driver = HostOnlyDriver(), be = CUDABackend(driver: driver, device: .cuda(13))
    Backends.register(be, for: .cuda(13))
    driver.resetCounts()
    let start = be.allocator.bytesHandedOut
    let a = Tensor.empty([1000], dtype: .float32, device: .cuda(13))              // 4 000 bytes → 4 096
    be.fill(a.buffer, count: a.count, value: 0)
    let b = Tensor.empty([3, 1 << 20], dtype: .float32, device: .cuda(13))        // 12 MiB
    let c = Tensor.empty([2, 1 << 20], dtype: .float32, device: .cuda(13))        // 8 MiB
    be.fill(b.buffer, count: b.count, value: 0)
    be.fill(c.buffer, count: c.count, value: 0)
    let fill = driver.launches.keys.first { $0.hasPrefix("fill") } ?? "?"
    #expect(driver.madeBytes[fill] == 4096 + (12 << 20) + (8 << 20), "\(driver.madeBytes)")
    #expect(driver.madeBytes.values.reduce(0, +) == be.allocator.bytesHandedOut - start)
    #expect(driver.report(steps: 1).contains("GB of tensors made per step, charged to the kernel or GEMM launched next:"))
    driver.resetCounts()
    #expect(driver.madeBytes.isEmpty)
}

/// Host ↔ device copies are counted with their bytes, and the host's time from a copy that waits for the stream on a
/// GPU (a device → host copy; uploads go through pinned staging) to its next launch — the GPU's idle stretch — is
/// summed: one stretch per run of copies, ended by the next launch or GEMM, none for a launch without a copy before
/// it; `resetCounts` clears them.
@Test func hostOnlyCountsCopiesAndTheIdleStretchesAfterThem() throws {
    let driver = HostOnlyDriver(), be = CUDABackend(driver: driver, device: .cuda(14))
    Backends.register(be, for: .cuda(14))
    let a = Tensor.empty([256], dtype: .float32, device: .cuda(14))
    be.fill(a.buffer, count: a.count, value: 0)
    driver.resetCounts()
    be.fill(a.buffer, count: a.count, value: 0)                                       // no copy before it: no stretch
    let host = Tensor.zeros([256])
    let up = host.to(.cuda(14)), _ = up.to(.cpu)                                     // the read begins one stretch
    let pause = ContinuousClock().measure { usleep(20_000) }
    be.fill(a.buffer, count: a.count, value: 0)
    #expect(driver.uploads == (1, 1024) && driver.downloads.count >= 1 && driver.downloads.bytes >= 1024, "\(driver.uploads), \(driver.downloads)")
    #expect(driver.idleAfterWaits.count == 1, "\(driver.idleAfterWaits)")
    #expect(driver.idleAfterWaits.seconds >= pause.seconds, "the stretch spans the pause: \(driver.idleAfterWaits.seconds) s")
    #expect(driver.report(steps: 1).contains("copies per step: 1.0 host → device (0.001 MB, not waited for: pinned staging)"),
            "\(driver.report(steps: 1))")
    driver.resetCounts()
    #expect(driver.uploads == (0, 0) && driver.downloads == (0, 0) && driver.idleAfterWaits == (0, 0.0))
}

/// An upload waits for the stream only without pinned staging (`HASTE_CUDA_STAGING_MB=0`): only then does it begin
/// an idle stretch, as a device → host copy always does.
@Test func hostOnlyUploadsBeginAnIdleStretchOnlyWithoutStaging() throws {
    for (id, staged) in [(15, true), (16, false)] {
        let driver = HostOnlyDriver(asynchronousUploads: staged), be = CUDABackend(driver: driver, device: .cuda(id))
        Backends.register(be, for: .cuda(id))
        let a = Tensor.empty([256], dtype: .float32, device: .cuda(id))
        driver.resetCounts()
        _ = Tensor.zeros([256]).to(.cuda(id))
        be.fill(a.buffer, count: a.count, value: 0)
        #expect(driver.uploads.count == 1 && driver.idleAfterWaits.count == (staged ? 0 : 1), "staged \(staged): \(driver.idleAfterWaits)")
        #expect(driver.report(steps: 1).contains(staged ? "not waited for: pinned staging" : "each waited for"))
    }
}

/// `HASTE_HOST_ONLY_TRACE=FILE` (`tracePath`): each launch and GEMM in order with the bytes charged to it, the copies
/// and the counts' resets, as lines; a file that cannot be written leaves the driver without a trace.
@Test func hostOnlyTracesEachLaunchInOrder() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("haste-trace-\(getpid()).tsv").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    do {
        let driver = HostOnlyDriver(tracePath: path), be = CUDABackend(driver: driver, device: .cuda(19))
        Backends.register(be, for: .cuda(19))
        driver.resetCounts()
        let a = Tensor.empty([3, 1 << 20], dtype: .float32, device: .cuda(19))         // 12 MiB
        be.fill(a.buffer, count: a.count, value: 0)
        let b = Tensor.zeros([256]).to(.cuda(19))                                       // an upload into 1 KiB made now
        be.fill(a.buffer, count: a.count, value: 1)                                     // charged with b's 1 KiB
        _ = b.to(.cpu)
        let x = Tensor.empty([64, 64], dtype: .bfloat16, device: .cuda(19)), w = Tensor.empty([64, 64], dtype: .bfloat16, device: .cuda(19))
        _ = x.matmul(w)
        let fill = driver.launches.keys.first { $0.hasPrefix("fill") } ?? "?", gemm = driver.gemms.keys.first ?? "?"
        withExtendedLifetime((a, b, x, w)) {}
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        // (b.to(.cpu) reads the 4-byte error word first, as every synchronize does.)
        let expected = ["# reset", "\(fill)\t\(12 << 20)", "upload\t1024", "\(fill)\t1024", "download\t4", "download\t1024",
                        "GEMM \(gemm)\t\(3 * 8192)"]
        #expect(Array(lines.drop { $0 != "# reset" }) == expected, "\(lines)")
    }
    // A trace file that cannot be made: the driver goes on without one, counting as before.
    let unwritable = HostOnlyDriver(tracePath: "/nonexistent-dir/trace.tsv")
    let k = try unwritable.load(KernelSource(family: "t", kernels: ["k"], code: ""))["k"]!
    unwritable.launch(k, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [])
    #expect(unwritable.launches == ["k": 1] && !FileManager.default.fileExists(atPath: "/nonexistent-dir/trace.tsv"))
}
