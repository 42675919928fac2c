import Foundation
import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// Column-major reference: C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i].
private func referenceGemm(_ g: GemmDescriptor, a: [Float], b: [Float], c: [Float]) -> [Float] {
    var out = c
    for p in 0..<g.batch {
        for j in 0..<g.n {
            for i in 0..<g.m {
                var acc = 0.0
                for l in 0..<g.k {
                    let x = g.transA ? a[p * g.strideA + l + i * g.lda] : a[p * g.strideA + i + l * g.lda]
                    let y = g.transB ? b[p * g.strideB + j + l * g.ldb] : b[p * g.strideB + l + j * g.ldb]
                    acc += Double(x) * Double(y)
                }
                let index = p * g.strideC + i + j * g.ldc
                out[index] = Float(Double(g.alpha) * acc + (g.beta == 0 ? 0 : Double(g.beta) * Double(c[index])))
            }
        }
    }
    return out
}

@Suite struct EmulatorGemmTests {
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func stridedBatchedGemm(transA: Bool, transB: Bool) throws {
        let d = EmulatedDriver.forTests()
        let m = 5, n = 7, k = 3, batch = 3
        let (rowsA, colsA) = transA ? (k, m) : (m, k)
        let (rowsB, colsB) = transB ? (n, k) : (k, n)
        let lda = rowsA + 2, ldb = rowsB + 1, ldc = m + 3
        let strideA = lda * colsA + 5, strideB = ldb * colsB, strideC = ldc * n + 1
        let a = (0..<strideA * batch).map { Float(($0 * 31) % 17) / 8 - 1 }
        let b = (0..<strideB * batch).map { Float(($0 * 13) % 11) / 4 - 1.25 }
        let c = (0..<strideC * batch).map { Float(($0 * 7) % 5) - 2 }
        for (alpha, beta) in [(Float(1), Float(0)), (Float(0.5), Float(-2))] {
            let pa = d.upload(a), pb = d.upload(b), pc = d.upload(c)
            let g = GemmDescriptor(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
                                   a: pa, lda: lda, strideA: strideA, b: pb, ldb: ldb, strideB: strideB,
                                   c: pc, ldc: ldc, strideC: strideC, batch: batch)
            d.gemm(g)
            try d.synchronize()
            let result = d.download(pc, c.count, as: Float.self), expected = referenceGemm(g, a: a, b: b, c: c)
            for i in c.indices {
                #expect(abs(result[i] - expected[i]) <= 1e-5, "alpha \(alpha) beta \(beta), element \(i): \(result[i]) vs \(expected[i])")
            }
        }
    }

    @Test func betaZeroNeverReadsC() throws {
        let d = EmulatedDriver.forTests()
        let pa = d.upload([Float](repeating: 1, count: 4)), pb = d.upload([Float](repeating: 2, count: 4))
        let pc = d.allocate(byteCount: 16)!   // poisoned: NaN
        d.gemm(GemmDescriptor(transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, beta: 0, a: pa, lda: 2, strideA: 0,
                              b: pb, ldb: 2, strideB: 0, c: pc, ldc: 2, strideC: 0, batch: 1))
        try d.synchronize()
        #expect(d.download(pc, 4, as: Float.self) == [4, 4, 4, 4])
    }

    @Test func operandsOutsideTheirAllocationAreRejected() {
        let d = EmulatedDriver.forTests()
        let pa = d.upload([Float](repeating: 1, count: 6)), pb = d.upload([Float](repeating: 2, count: 6))
        let pc = d.allocate(byteCount: 16)!
        d.gemm(GemmDescriptor(transA: false, transB: false, m: 2, n: 2, k: 3, alpha: 1, beta: 0, a: pa, lda: 2, strideA: 6,
                              b: pb, ldb: 3, strideB: 0, c: pc, ldc: 2, strideC: 4, batch: 2))
        #expect(d.takeError().contains("operand A"))
        d.gemm(GemmDescriptor(transA: false, transB: false, m: 2, n: 2, k: 3, alpha: 1, beta: 0, a: pa, lda: 1, strideA: 0,
                              b: pb, ldb: 3, strideB: 0, c: pc, ldc: 2, strideC: 0, batch: 1))
        #expect(d.takeError().contains("lda 1 < 2"))
    }
}

@Suite struct EmulatedBackendTests {
    @Test func tensorsRoundTripThroughTheDevice() {
        let values = (0..<1000).map { Float($0) * 0.25 - 7 }
        let x = Tensor(values, shape: [10, 100])
        let y = x.to(EmulatedCUDA.device)
        #expect(y.device == EmulatedCUDA.device)
        #expect(y.to(.cpu).scalars(as: Float.self) == values)
        let ints = Tensor((0..<17).map { Int32($0 * 3) }, shape: [17], device: EmulatedCUDA.device)
        #expect(ints.to(.cpu).scalars(as: Int32.self) == (0..<17).map { Int32($0 * 3) })
    }

    @Test func backendCopies() {
        let b = EmulatedCUDA.backend
        let n = 300
        let src = Storage(byteCount: 4 * n, device: EmulatedCUDA.device), dst = Storage(byteCount: 4 * n, device: EmulatedCUDA.device)
        let values = (0..<n).map { Float($0) - 150 }
        values.withUnsafeBytes { b.copyFromHost($0.baseAddress!, to: Buffer(storage: src, offset: 0, dtype: .float32), byteCount: 4 * n) }
        b.copy(from: Buffer(storage: src, offset: 100, dtype: .float32), to: Buffer(storage: dst, offset: 0, dtype: .float32),
               byteCount: 4 * 200)
        var out = [Float](repeating: 0, count: 200)
        out.withUnsafeMutableBytes { b.copyToHost(Buffer(storage: dst, offset: 0, dtype: .float32), $0.baseAddress!, byteCount: 800) }
        #expect(out == Array(values[100...]))
    }

    @Test func cachingAllocatorReusesBlocks() {
        let d = EmulatedDriver.forTests()
        let allocator = CachingAllocator(driver: d, device: .cuda(7))
        func cycle() {
            let blocks = [100, 5000, 3 << 20, 100].map { allocator.allocate(byteCount: $0) }
            for (p, bytes) in zip(blocks, [100, 5000, 3 << 20, 100]) { allocator.release(p, byteCount: bytes) }
        }
        cycle()
        let after = allocator.driverAllocations
        #expect(after == 4)
        for _ in 0..<5 { cycle() }
        #expect(allocator.driverAllocations == after)
        #expect(allocator.inUse == 0 && allocator.held == 512 + 5120 + (4 << 20) + 512)
        allocator.emptyCache()
        #expect(allocator.held == 0 && d.allocatedBytes == 0)
    }

    /// A request of ≥ 1 MiB with no cached block of its size takes a cached block up to `fit` times larger, whole, and
    /// gives it back under its own size; a larger block, a small request, or `fit` 1 asks the driver.
    @Test func cachingAllocatorFitsALargerCachedBlock() {
        for fit in [1.5, 1] {
            let d = EmulatedDriver.forTests(), mib = 1 << 20
            let allocator = CachingAllocator(driver: d, device: .cuda(7), fit: fit)
            let four = allocator.allocate(byteCount: 4 * mib), six = allocator.allocate(byteCount: 6 * mib)
            allocator.release(four, byteCount: 4 * mib)
            allocator.release(six, byteCount: 6 * mib)
            let kept = allocator.allocate(byteCount: 4 * mib - 5)        // rounds to 4 MiB: the cached block, exactly
            #expect(kept == four && allocator.driverAllocations == 2)
            let fitted = allocator.allocate(byteCount: 4 * mib)         // none of 4 MiB left: the 6 MiB one (1.5×), whole
            #expect((fitted == six) == (fit > 1) && allocator.driverAllocations == (fit > 1 ? 2 : 3), "fit \(fit)")
            #expect(allocator.inUse == (fit > 1 ? 10 : 8) * mib, "fit \(fit)")
            allocator.release(fitted, byteCount: 4 * mib)
            let small = allocator.allocate(byteCount: 2 * mib)          // the cached blocks are ≥ 2× larger: the driver
            #expect(small != six && allocator.driverAllocations == (fit > 1 ? 3 : 4), "fit \(fit)")
            allocator.release(small, byteCount: 2 * mib)
            allocator.release(kept, byteCount: 4 * mib - 5)
            #expect(allocator.inUse == 0, "fit \(fit)")
            let sixAgain = allocator.allocate(byteCount: 6 * mib)       // the fitted block went back under its own size
            #expect(sixAgain == six && allocator.driverAllocations == (fit > 1 ? 3 : 4), "fit \(fit)")
            allocator.release(sixAgain, byteCount: 6 * mib)
            allocator.emptyCache()
            #expect(allocator.held == 0 && d.allocatedBytes == 0)
        }
    }

    /// `haste bench train`'s per-row peak on CUDA: `resetPeak` starts it at the bytes in use (torch
    /// `reset_peak_memory_stats`), so a row's peak is what it held at once, in rounded block sizes.
    @Test func cachingAllocatorPeakResetsToTheBytesInUse() {
        let allocator = CachingAllocator(driver: EmulatedDriver.forTests(), device: .cuda(7))
        let kept = allocator.allocate(byteCount: 100)
        let big = allocator.allocate(byteCount: 3 << 20)
        allocator.release(big, byteCount: 3 << 20)
        #expect(allocator.peakInUse == 512 + (4 << 20))
        allocator.resetPeak()
        #expect(allocator.peakInUse == 512)
        let row = [5000, 5000].map { allocator.allocate(byteCount: $0) }
        for p in row { allocator.release(p, byteCount: 5000) }
        #expect(allocator.peakInUse == 512 + 2 * 5120 && allocator.inUse == 512)
        allocator.release(kept, byteCount: 100)
    }

    @Test func outOfMemoryRetriesAfterEmptyingTheCache() {
        let d = EmulatedDriver.forTests(totalMemory: 8192)
        let allocator = CachingAllocator(driver: d, device: .cuda(7))
        let a = allocator.allocate(byteCount: 4096), b = allocator.allocate(byteCount: 2048)
        allocator.release(a, byteCount: 4096)
        allocator.release(b, byteCount: 2048)
        #expect(d.allocate(byteCount: 4096) == nil)   // the cache holds 6 KiB of the 8
        let c = allocator.allocate(byteCount: 8000)    // fits only once the cache is returned to the driver
        #expect(allocator.held == 8192 && allocator.driverAllocations == 3)
        allocator.release(c, byteCount: 8000)
    }

    @Test func outOfMemoryEndsTheProcessWithWhatWasAsked() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = CachingAllocator(driver: EmulatedDriver(totalMemory: 1 << 20), device: .cuda(7))
            _ = allocator.allocate(byteCount: 600 << 10)
            _ = allocator.allocate(byteCount: 600 << 10)
        }
        let message = trapMessage(result)
        #expect(message.contains("out of memory on cuda:7 (emulated CUDA device (host)): asked for 0.6 MiB, haste holds 0.6 MiB")
                && message.contains("--batch-size"), "\(message)")
    }

    @Test func errorWordIsSetByAKernel() throws {
        let b = EmulatedCUDA.backend
        let d = EmulatedDriver.forTests()
        let word = d.allocate(byteCount: 4)!
        var zero: Int32 = 0
        d.copy(fromHost: &zero, to: word, byteCount: 4)
        let f = try d.load(EmulatorTestKernels.source)
        d.launch(f["set_error"]!, grid: Dim3(3), block: Dim3(32), sharedBytes: 0,
                 arguments: [.pointer(word), .int32(DeviceErrorCode.crossEntropyTarget.rawValue)])
        try d.synchronize()
        #expect(d.download(word, 1, as: Int32.self) == [DeviceErrorCode.crossEntropyTarget.rawValue])
        // The shared backend's word starts clear.
        var code: Int32 = -1
        b.driver.copy(from: b.errorWord, toHost: &code, byteCount: 4)
        #expect(code == 0)
    }

    @Test func backendSynchronizeReportsTheErrorWordAndExits() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let b = EmulatedCUDA.backend
            b.launch(EmulatorTestKernels.source, "set_error", grid: Dim3(2), block: Dim3(32),
                     [.pointer(b.errorWord), .int32(DeviceErrorCode.embeddingIndex.rawValue)])
            b.synchronize()
        }
        let message = trapMessage(result)
        #expect(message.contains("embedding: an index is outside"), "\(message)")
    }
}
