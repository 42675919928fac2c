import Foundation
import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// What the emulator reports instead of computing garbage or crashing: deadlocks, bad pointers and arguments, faults,
/// undefined behaviour, launch limits, copies out of range.
@Suite struct EmulatorCheckTests {
    let d = EmulatedDriver.forTests()
    let f: [String: GPUFunction]
    init() throws { f = try d.load(EmulatorTestKernels.source) }

    @Test func barrierSkippedBySomeThreadsIsAnError() throws {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["skips_barrier"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0, arguments: [.pointer(p)])
        let message = d.takeError()
        #expect(message.contains("kernel skips_barrier"))
        #expect(message.contains("__syncthreads() was reached by 16 of the block's 64 threads"))
        // The emulator recovers: the next launch runs normally.
        let n = 1000, px = d.upload([Float](repeating: 2, count: n)), py = d.allocate(byteCount: 4 * n)!
        d.launch(f["scale"]!, grid: Dim3(4), block: Dim3(256), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .float(3), .int64(Int64(n))])
        try d.synchronize()
        #expect(d.download(py, n, as: Float.self) == [Float](repeating: 6, count: n))
    }


    @Test func shuffleInDivergentCodeIsAnError() throws {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["divergent_shuffle"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p)])
        let message = d.takeError()
        #expect(message.contains("kernel divergent_shuffle") && message.contains("warp shuffle"), "\(message)")
    }


    @Test func threadsMustWaitAtTheSameBarrier() {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["divergent_barriers"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p)])
        let message = d.takeError()
        #expect(message.contains("reached __syncthreads() at emulator-tests kernels:6")
                && message.contains("while 16 threads of the block wait at the one at"), "\(message)")
    }


    @Test func pointerArgumentsMustBeLiveDeviceMemory() throws {
        let n = 64
        var host = [Float](repeating: 1, count: n)
        let py = d.allocate(byteCount: 4 * n)!
        let hostAddress = host.withUnsafeMutableBytes { DevicePointer(UInt(bitPattern: $0.baseAddress!)) }
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0,
                 arguments: [.pointer(hostAddress), .pointer(py), .float(1), .int64(Int64(n))])
        let message = d.takeError()
        #expect(message.contains("launch of scale: argument 0") && message.contains("not inside any live device allocation"),
                "\(message)")
        let freed = d.allocate(byteCount: 4 * n)!
        d.free(freed)
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0,
                 arguments: [.pointer(py), .pointer(freed), .float(1), .int64(Int64(n))])
        #expect(d.takeError().contains("argument 1"))
        host[0] = 0
    }


    @Test func argumentKindsMustMatchTheCParameters() throws {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0,
                 arguments: [.pointer(p), .pointer(p), .float(1), .int32(4)])
        #expect(d.takeError().contains("argument 3 (long long): passed as int32(4)"))
        d.launch(f["scale"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .pointer(p), .float(1)])
        #expect(d.takeError().contains("3 arguments for 4 parameters"))
        d.launch(f["read_slot"]!, grid: Dim3(1), block: Dim3(1), sharedBytes: 0, arguments: [.pointer(p + 4), .pointer(p), .int32(0)])
        #expect(d.takeError().contains("not aligned to 8 bytes"))
        let slots = d.upload([UInt64(10), 20, 30, 1 << 40])
        d.launch(f["read_slot"]!, grid: Dim3(1), block: Dim3(1), sharedBytes: 0, arguments: [.pointer(slots), .pointer(p), .int32(3)])
        try d.synchronize()
        #expect(d.download(p, 1, as: UInt64.self) == [1 << 40])
    }


    @Test func invalidMemoryAccessesEndTheLaunchNotTheProcess() throws {
        let p = d.allocate(byteCount: 4096)!
        d.launch(f["write_at"]!, grid: Dim3(2), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int64(1024 + 5)])
        let message = d.takeError()
        #expect(message.contains("kernel write_at, block (0, 0, 0), thread (3, 0, 0): invalid memory access")
                && message.contains("20 bytes past the end of the allocation of 4096 bytes")
                && message.contains("\n  at emulator-tests kernels:59:"), "\(message)")
        d.launch(f["write_at"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(0), .int64(2)])
        #expect(d.takeError().contains("a null pointer (plus 8 bytes)"))
        d.launch(f["divide"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(0)])
        let division = d.takeError()
        #expect(division.contains("undefined behaviour: integer division by zero") && division.contains("emulator-tests kernels:64:"),
                "\(division)")
        d.launch(f["big_stack"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(40000)])
        #expect(d.takeError().contains("stack overflow"))
        // Still usable afterwards.
        d.launch(f["divide"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(7)])
        try d.synchronize()
        #expect(d.download(p, 32, as: Int32.self) == [Int32](repeating: 14, count: 32))
    }


    @Test func undefinedBehaviourTrapsWithItsSourceLine() {
        let p = d.allocate(byteCount: 256)!
        d.launch(f["local_index"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(8)])
        let bounds = d.takeError()
        #expect(bounds.contains("undefined behaviour: index out of bounds of a fixed-size array")
                && bounds.contains("at emulator-tests kernels:80:"), "\(bounds)")
        d.launch(f["local_index"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(p), .int32(-8)])
        #expect(d.takeError().contains("float to integer conversion out of range"))
    }


    @Test func plainWritesOfOneByteFromTwoBlocksAreARace() throws {
        let x = d.upload([Float(1), 2, 3, 4]), total = d.upload([Float(0)])
        d.launch(f["accumulate"]!, grid: Dim3(4), block: Dim3(32), sharedBytes: 0,
                 arguments: [.pointer(x), .pointer(total), .int32(1)])
        try d.synchronize()
        #expect(d.download(total, 1, as: Float.self) == [10])
        d.launch(f["accumulate"]!, grid: Dim3(4), block: Dim3(32), sharedBytes: 0,
                 arguments: [.pointer(x), .pointer(total), .int32(0)])
        let message = d.takeError()
        #expect(message.contains("kernel accumulate, block (1, 0, 0): this block and block (0, 0, 0) both wrote byte")
                && message.contains("without an atomic"), "\(message)")
    }

    @Test func launchLimits() {
        let p = d.allocate(byteCount: 256)!
        for (grid, block) in [(Dim3(1), Dim3(2048)), (Dim3(1), Dim3(32, 32, 2)), (Dim3(0), Dim3(32)), (Dim3(1, 70_000), Dim3(32))] {
            d.launch(f["skips_barrier"]!, grid: grid, block: block, sharedBytes: 0, arguments: [.pointer(p)])
            #expect(d.takeError().contains("launch of skips_barrier with grid \(grid), block \(block)"))
        }
    }


    @Test func newMemoryIsPoisoned() {
        let p = d.allocate(byteCount: 40)!
        let floats = d.download(p, 10, as: Float.self)
        #expect(floats.allSatisfy { $0.isNaN })
        #expect(d.download(p, 10, as: Int32.self) == [Int32](repeating: -1, count: 10))
        #expect(p % 256 == 0)
    }


    @Test func copiesAreChecked() throws {
        let a = d.upload((0..<100).map(Float.init)), b = d.allocate(byteCount: 400)!
        d.copy(from: a + 40, to: b, byteCount: 360)
        try d.synchronize()
        #expect(d.download(b, 90, as: Float.self) == (10..<100).map(Float.init))
        d.copy(from: a + 8, to: b, byteCount: 400)
        #expect(d.takeError().contains("copy device → device: source 0x"))
        d.copy(from: a, to: a + 8, byteCount: 100)
        #expect(d.takeError().contains("overlap"))
        var host = [Float](repeating: 0, count: 200)
        d.copy(from: a, toHost: &host, byteCount: 800)
        #expect(d.takeError().contains("runs past the end of its allocation (400 bytes"))
        d.copy(from: a, toHost: d.hostPointer(b), byteCount: 16)
        let message = d.takeError()
        #expect(message.contains("copy device → host: destination 0x") && message.contains("is device memory"), "\(message)")
    }
}

@Suite struct EmulatorLoadTests {
    /// The portable fiber switch (ucontext: other architectures) gives the same results and findings.
    @Test func ucontextFibers() throws {
        let d = EmulatedDriver(recordsIssues: false, extraFlags: ["-DHASTE_EMU_UCONTEXT"])
        let f = try d.load(EmulatorTestKernels.source)
        let rows = 3, cols = 300
        let x = (0..<rows * cols).map { Float($0 % 13) }
        let px = d.upload(x), py = d.allocate(byteCount: 4 * rows)!
        d.launch(f["row_sum"]!, grid: Dim3(rows), block: Dim3(128), sharedBytes: 0,
                 arguments: [.pointer(px), .pointer(py), .int64(Int64(cols))])
        try d.synchronize()
        #expect(d.download(py, rows, as: Float.self) == (0..<rows).map { r in x[r * cols ..< (r + 1) * cols].reduce(0, +) })
        d.launch(f["skips_barrier"]!, grid: Dim3(1), block: Dim3(64), sharedBytes: 0, arguments: [.pointer(py)])
        #expect(d.takeError().contains("__syncthreads() was reached by 16"))
        d.launch(f["write_at"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0, arguments: [.pointer(py), .int64(64)])   // the guard page after its 256 bytes
        #expect(d.takeError().contains("invalid memory access"))
    }

    @Test func compileErrorsCarryTheCompilerOutput() {
        let bad = KernelSource(family: "broken", kernels: ["k"], code: #"""
        extern "C" __global__ void k(float* y) { y[0] = undefined_name; }
        """#)
        do {
            _ = try EmulatedDriver.forTests().load(bad)
            Issue.record("a kernel that does not compile was loaded")
        } catch {
            #expect("\(error)".contains("undefined_name") && "\(error)".contains("broken kernels:1"), "\(error)")
        }
    }

    @Test func kernelListMustMatchTheEntryPoints() {
        let unlisted = KernelSource(family: "unlisted", kernels: ["a"], code: #"""
        extern "C" __global__ void a(float* y) { y[0] = 1.0f; }
        extern "C" __global__ void b(float* y) { y[0] = 2.0f; }
        """#)
        #expect(throws: EmulatorError.self) { try EmulatedDriver.forTests().load(unlisted) }
        let notExternC = KernelSource(family: "mangled", kernels: ["a"], code: #"""
        __global__ void a(float* y) { y[0] = 1.0f; }
        """#)
        #expect(throws: EmulatorError.self) { try EmulatedDriver.forTests().load(notExternC) }
    }
}
