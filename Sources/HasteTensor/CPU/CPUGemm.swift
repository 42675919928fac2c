import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// GEMM through OpenBLAS, one cblas call per batch item (Debian's 0.3.21 has no sgemm_batch); float32 on AVX-512F
/// CPUs through haste's own kernel instead (CPUSgemm.swift; `HASTE_CPU_KERNELS=portable` keeps OpenBLAS).
///
/// Batches of small items (attention heads: 256×256×64) run items in parallel on single-threaded BLAS:
/// OpenBLAS splits one small GEMM across its threads poorly (measured: 48 GEMMs of 256×256×64 take 2.85 ms
/// with 2 BLAS threads, 2.38 ms as 2 parallel items on 1 BLAS thread each). BLAS is switched to one thread
/// for the duration, so no threaded BLAS call ever runs inside our pool (STYLE §4.9). OpenBLAS partitions
/// M and N, never K, so every output element sums in the same order either way: results are identical.
extension CPUBackend {
    /// Items up to this many multiply-adds count as small.
    static let smallGemmMACs = 1 << 23

    nonisolated(unsafe) static let gemmMutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// Runs `body`, which calls OpenBLAS or LAPACK directly (FID statistics, precision/recall), under the GEMM mutex.
    /// Every OpenBLAS call must hold it: `OpenBLASSpin.configure` stops OpenBLAS's pool under it, and a threaded
    /// OpenBLAS call finishing on a worker at that moment overwrites the worker's exit signal (the worker goes back
    /// to sleep and the shutdown's join never returns: a test run hung so, FID statistics beside the spin test).
    /// Not reentrant: `body` must not run tensor GEMMs.
    public static func withGemmMutex<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(gemmMutex); defer { pthread_mutex_unlock(gemmMutex) }
        return try body()
    }

    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                     a: Buffer, lda: Int, strideA: Int, b: Buffer, ldb: Int, strideB: Int,
                     beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        if m == 0 || n == 0 || batch == 0 { return }
        if k == 0 || alpha == 0 {   // BLAS: C = β·C, A and B never read (as torch for k = 0)
            // Done here, not by cblas_sgemm: OpenBLAS's small-matrix kernels (AVX-512 Intel, no OPENBLAS_CORETYPE)
            // compute 0·NaN = NaN from A and B.
            return scaleC(c, m: m, n: n, ldc: ldc, strideC: strideC, batch: batch, beta: beta)
        }
        if a.dtype == .bfloat16 || b.dtype == .bfloat16 || c.dtype == .bfloat16 {
            return widenedGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, strideA: strideA,
                               b: b, ldb: ldb, strideB: strideB, beta: beta, c: c, ldc: ldc, strideC: strideC, batch: batch)
        }
        let item = GemmCall(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, strideA: strideA,
                            b: b, ldb: ldb, strideB: strideB, beta: beta, c: c, ldc: ldc, strideC: strideC, batch: batch)
        // OpenBLAS's thread count is process-wide: callers on several threads (tests, library users) take turns, so
        // no GEMM runs while another has switched BLAS to one thread.
        CPUBackend.withGemmMutex {
            let threads = Parallel.threads
            if c.dtype == .float32 && CPUKernels.level == 2 {
                return AVX512Sgemm.runBatch(batch, macs: m * n * k) { item.avx512($0) }
            }
            if batch > 1 && threads > 1 && m * n * k <= CPUBackend.smallGemmMACs {
                openblas_set_num_threads(1)
                defer { openblas_set_num_threads(Int32(threads)) }
                Parallel.forEach(batch) { item.run($0) }
            } else {
                for i in 0..<batch { item.run(i) }
            }
        }
    }
}

extension CPUBackend {
    /// float32 on AVX-512F: the bias added by the GEMM's first K block (the composite's bits, one pass less).
    public func linearWithBias(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer, y: Buffer) {
        guard CPUKernels.level == 2, rows > 0, inF > 0, outF > 0,
              [x.dtype, weight.dtype, bias.dtype, y.dtype].allSatisfy({ $0 == .float32 }) else {
            return linearWithBiasComposite(rows: rows, inF: inF, outF: outF, x: x, weight: weight, bias: bias, y: y)
        }
        var product = AVX512Sgemm(transA: false, transB: true, m: rows, n: outF, k: inF, alpha: 1, a: x.pointer(Float.self),
                                  lda: inF, b: weight.pointer(Float.self), ldb: inF, beta: 0, c: y.pointer(Float.self), ldc: outF)
        product.bias = UnsafePointer(bias.pointer(Float.self))
        CPUBackend.withGemmMutex { AVX512Sgemm.runBatch(1, macs: rows * outF * inF) { _ in product } }   // as `gemm` runs it
    }

    /// Two large float32 products at once on AVX-512F CPUs, each on half of the threads (one thread each on two),
    /// with its own packing buffers; anything else one after the other through `gemm`. Each product's result is
    /// what `gemm` gives (K is never split), so bitwise the same either way. Measured (2 threads, Xeon Ice Lake,
    /// two 1024×2304×768 products): two single-threaded products at once ~125 GFLOP/s each, one product split
    /// over both threads ~190 — each thread keeps its own packed B in its own L2.
    public func gemmPair(_ first: GemmCall, _ second: GemmCall) {
        let threads = Parallel.threads
        func eligible(_ g: GemmCall) -> Bool {
            g.batch == 1 && g.m > 0 && g.n > 0 && g.k > 0 && g.alpha != 0 && g.m * g.n * g.k >= AVX512Sgemm.parallelMACs
                && g.a.dtype == .float32 && g.b.dtype == .float32 && g.c.dtype == .float32
        }
        guard threads >= 2, CPUKernels.level == 2, eligible(first), eligible(second) else {
            gemm(first)
            gemm(second)
            return
        }
        let products = [first.avx512(0), second.avx512(0)]
        CPUBackend.withGemmMutex {
            Parallel.forEach(2) { i in products[i].run(parts: i == 0 ? threads / 2 : threads - threads / 2, slot: i) }
        }
    }

    /// C = β·C over the m × n windows (ldc apart, strideC per batch item): β = 0 writes zeros without reading C (NaN
    /// there is dropped, as BLAS does), β = 1 leaves C alone; a bfloat16 C is scaled in float32 and rounded once.
    private func scaleC(_ c: Buffer, m: Int, n: Int, ldc: Int, strideC: Int, batch: Int, beta: Double) {
        if beta == 1 { return }
        func scale<T: BinaryFloatingPoint>(_ p: UnsafeMutablePointer<T>) {
            let b = T(beta)
            for i in 0..<batch { for row in 0..<m {
                let r = p + i * strideC + row * ldc
                if beta == 0 { r.update(repeating: 0, count: n) } else { for j in 0..<n { r[j] *= b } }
            } }
        }
        switch c.dtype {
        case .float32: scale(c.pointer(Float.self))
        case .float64: scale(c.pointer(Double.self))
        case .bfloat16:
            let wide = Buffer(storage: Storage(byteCount: n * 4, device: .cpu), offset: 0, dtype: .float32)
            for i in 0..<batch { for row in 0..<m {
                let window = Buffer(storage: c.storage, offset: c.offset + i * strideC + row * ldc, dtype: .bfloat16)
                if beta == 0 { fill(window, count: n, value: 0); continue }
                cast(from: window, to: wide, count: n)
                let w = wide.pointer(Float.self), b = Float(beta)
                for j in 0..<n { w[j] *= b }
                cast(from: wide, to: window, count: n)
            } }
        default: fatalError("gemm: unsupported dtype \(c.dtype)")
        }
    }

    /// bfloat16 × bfloat16 → float32 or bfloat16, as cuBLAS `GemmEx` with float32 compute: the operands widen to
    /// float32 exactly, sgemm accumulates in float32, a bf16 C (read widened when beta ≠ 0) is rounded to nearest
    /// even once. So CPU and CUDA agree up to float32 summation order.
    private func widenedGemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                             a: Buffer, lda: Int, strideA: Int, b: Buffer, ldb: Int, strideB: Int,
                             beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        require(a.dtype == .bfloat16 && b.dtype == .bfloat16 && (c.dtype == .float32 || c.dtype == .bfloat16),
                "gemm: \(a.dtype) × \(b.dtype) → \(c.dtype) (mixed GEMMs take bfloat16 operands and a float32 or bfloat16 C)")
        /// Elements from the buffer's offset to the last one the GEMM touches (row-major rows × cols, ld apart).
        func extent(_ rows: Int, _ cols: Int, _ ld: Int, _ stride: Int) -> Int {
            rows == 0 || cols == 0 ? 0 : (batch - 1) * stride + (rows - 1) * ld + cols
        }
        func widened(_ x: Buffer, _ count: Int, read: Bool = true) -> Buffer {
            let w = Buffer(storage: Storage(byteCount: Swift.max(count, 1) * 4, device: .cpu), offset: 0, dtype: .float32)
            if read && count > 0 { cast(from: x, to: w, count: count) }
            return w
        }
        let wa = widened(a, extent(transA ? k : m, transA ? m : k, lda, strideA))
        let wb = widened(b, extent(transB ? n : k, transB ? k : n, ldb, strideB))
        let cCount = extent(m, n, ldc, strideC)
        let wc = c.dtype == .float32 ? c : widened(c, cCount, read: beta != 0)
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: wa, lda: lda, strideA: strideA,
             b: wb, ldb: ldb, strideB: strideB, beta: beta, c: wc, ldc: ldc, strideC: strideC, batch: batch)
        guard c.dtype == .bfloat16 else { return }
        for i in 0..<batch { for row in 0..<m {   // only C's elements: gaps between rows keep their bits
            let at = i * strideC + row * ldc
            cast(from: Buffer(storage: wc.storage, offset: at, dtype: .float32),
                 to: Buffer(storage: c.storage, offset: c.offset + at, dtype: .bfloat16), count: n)
        } }
    }
}

/// One GEMM call's batch items: `run(i)` multiplies item i through OpenBLAS, `avx512(i)` is it for haste's kernel.
extension GemmCall {
    /// Item i for haste's AVX-512 sgemm (float32 only).
    func avx512(_ i: Int) -> AVX512Sgemm {
        AVX512Sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha),
                    a: a.pointer(Float.self) + i * strideA, lda: lda, b: b.pointer(Float.self) + i * strideB, ldb: ldb,
                    beta: Float(beta), c: c.pointer(Float.self) + i * strideC, ldc: ldc)
    }

    func run(_ i: Int) {
        let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
        switch c.dtype {
        case .float32:
            cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), Float(alpha),
                        a.pointer(Float.self) + i * strideA, Int32(lda), b.pointer(Float.self) + i * strideB, Int32(ldb),
                        Float(beta), c.pointer(Float.self) + i * strideC, Int32(ldc))
        case .float64:
            cblas_dgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), alpha,
                        a.pointer(Double.self) + i * strideA, Int32(lda), b.pointer(Double.self) + i * strideB, Int32(ldb),
                        beta, c.pointer(Double.self) + i * strideC, Int32(ldc))
        default: fatalError("gemm: unsupported dtype \(c.dtype)")
        }
    }
}
