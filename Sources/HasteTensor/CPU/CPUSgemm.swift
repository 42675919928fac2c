import CKernels

/// haste's own float32 GEMM for AVX-512F CPUs (CKernels/sgemm.c), threaded on haste's pool.
///
/// Why: this image pins OpenBLAS to its Haswell (AVX2) kernels (OPENBLAS_CORETYPE, which we must not override),
/// half the FMA width of a CPU that runs 512-bit FMAs at full rate. The C side packs op(B) in KC × NR panels and
/// op(A) in MR × KC panels and runs an 8 × 48 register tile; here B (all of K, up to `packedFloats`) is packed by all
/// threads (disjoint panels), then the rows (or, for short products, the columns) of C are split between threads;
/// products of more than 512 rows split rows or columns with each thread packing its own B (`runRows`, `runColumns`). K is
/// never split and its blocks depend on K alone (haste_sgemm_kc_step), so every element of C sums in one order: bitwise the same result for any
/// thread count (STYLE R13).
struct AVX512Sgemm {
    static let nr = Int(HASTE_SGEMM_NR), nc = Int(HASTE_SGEMM_NC)
    /// Below this many multiply-adds a product runs on the calling thread (splitting costs more than it saves).
    static let parallelMACs = 1 << 20
    /// Most floats of packed B held at once (8 MiB: in L3 beside A's blocks; K × NC shrinks NC to fit).
    static let packedFloats = 1 << 21
    /// One piece per thread. Measured on 2 threads (SiT-B/2 GEMM shapes, quiet machine): 1 piece per thread
    /// 320–370 GFLOP/s every run; 2 or 4 pieces per thread often only ~205 (one thread doing the work).
    static func parts(threads: Int) -> Int { Swift.max(1, threads) }
    /// Products of at most this many rows with enough columns split their columns between threads, each thread
    /// packing its own B `columnBlock` columns (10 panels of 48) at a time (L2-resident), with no meeting between
    /// packing and use.
    /// Measured with the 8-row tile and the vectorized A packing (2 threads, Xeon Ice Lake, `haste bench ops` conv
    /// rows, median of 4 interleaved runs against the row split with B shared through L3): conv3x3 128→128 at 256²
    /// 107 → 143 GFLOP/s, 512→512 at 32² 124 → 150, stride-2 128→128 99 → 117, 1×1 256→128 91 → 98.
    static let columnSplitRows = 512, columnBlock = 480
    /// Products of more rows and more than twice as many columns as rows (else `runRows`) split their columns too
    /// when each thread gets at least this many panels: each thread packs its own B one KC block at a time (NC
    /// columns) just before using it, so B̃ comes from L2, not from L3 as it does when all of K is packed up front
    /// and shared. Measured (2 threads, Xeon Ice Lake, 1024×2304×768 and
    /// 1024×768×2304, C harness, median of 20 interleaved runs): 165–167 GFLOP/s split by rows (14 × 32 kernel),
    /// 176–184 split by columns (8 × 48).
    static let columnSplitPanels = 4
    /// Whether this CPU can run the kernel (AVX-512F), whatever HASTE_CPU_KERNELS says.
    static var available: Bool { CPUKernels.hardware == 2 }

    /// Packed B shared by the threads of one product, one per slot (CPUBackend.gemmPair runs two products at once);
    /// grown on demand. Only touched under CPUBackend.gemmMutex, each slot by one product at a time.
    /// (Raw slots, not a Swift array: the two products of a pair write their own slot at the same time.)
    private static let packedB: UnsafeMutablePointer<UnsafeMutablePointer<Float>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<Float>?>.allocate(capacity: 2)
        p.initialize(repeating: nil, count: 2)
        return p
    }()
    private static let packedBCount: UnsafeMutablePointer<Int> = {
        let p = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        p.initialize(repeating: 0, count: 2)
        return p
    }()

    private static func packBuffer(_ floats: Int, slot: Int) -> UnsafeMutablePointer<Float> {
        if packedBCount[slot] < floats {
            packedB[slot].map { UnsafeMutableRawPointer($0).deallocate() }
            packedB[slot] = UnsafeMutableRawPointer.allocate(byteCount: floats * 4, alignment: 64).bindMemory(to: Float.self, capacity: floats)
            packedBCount[slot] = floats
        }
        return packedB[slot]!
    }

    let transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float
    let a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int
    let beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    /// Implicit-GEMM conv2d (CPUConv.swift): op(B) is im2col of the image `b` with this geometry, packed straight
    /// from b (convpack.c); then transA and transB are false, alpha 1, lda = k, ldb = ldc = n.
    var conv: haste_conv_geometry? = nil
    /// A row vector of n floats added to every row of C by the first K block (a linear layer's bias; beta is 0):
    /// the bits of beta = 1 on a C prefilled with it, without the prefill pass.
    var bias: UnsafePointer<Float>? = nil

    /// Products item(0..<batch) of `macs` multiply-adds each: small ones (CPUBackend.smallGemmMACs) one per thread in
    /// parallel, others one after another, each split between the threads. The caller holds CPUBackend.gemmMutex.
    /// Conv products (a batch of images) run whole images per thread when the images split evenly (or there are
    /// many): no meeting per image, each thread's packed B in its L2 (Inception's 17² and 8² layers: too few
    /// columns for the column split).
    static func runBatch(_ batch: Int, macs: Int, _ item: (Int) -> AVX512Sgemm) {
        let threads = Parallel.threads
        let evenImages = item(0).conv != nil && batch >= threads && (batch % threads == 0 || batch >= 4 * threads)
        if batch > 1 && threads > 1 && (macs <= CPUBackend.smallGemmMACs || evenImages) {
            Parallel.forEach(batch) { item($0).runSerial() }
        } else {
            for i in 0..<batch { item(i).run(parts: parts(threads: threads)) }
        }
    }

    /// Products item(0..<batch) of m × k row-major A (lda = k) times a B̃ (k × n) already in `run`'s shared packed
    /// layout (KC block p0 of haste_sgemm_kc_step(k) rows at p0 · width, width = n rounded up to NR; Winograd's V),
    /// into C (m × n, ldc = n): small ones one per thread in parallel, others one after another split between the
    /// threads, as `runBatch`; no packing of B. The same K blocks and kernel as every other path, so the bits of
    /// `run` on the unpacked B. The caller holds CPUBackend.gemmMutex.
    static func runBatchPacked(_ batch: Int, m: Int, n: Int, k: Int,
                               _ item: (Int) -> (a: UnsafePointer<Float>, packed: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>)) {
        func product(_ i: Int) -> AVX512Sgemm {
            let (a, packed, c) = item(i)
            return AVX512Sgemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: packed, ldb: n,
                               beta: 0, c: c, ldc: n)
        }
        if batch > 1 && Parallel.threads > 1 && m * n * k <= CPUBackend.smallGemmMACs {
            Parallel.forEach(batch) { product($0).runOnPackedB(parts: 1) }
        } else {
            for i in 0..<batch { product(i).runOnPackedB() }
        }
    }

    /// The product with `b` already a whole B̃ in `runPacked`'s shared layout (ldb unused), nothing packed: split
    /// between the threads (`parts`, by default all of them where the product is large enough to pay for it).
    /// The caller holds CPUBackend.gemmMutex.
    private func runOnPackedB(parts: Int? = nil) {
        let parts = parts ?? (m * n * k < AVX512Sgemm.parallelMACs ? 1 : AVX512Sgemm.parts(threads: Parallel.threads))
        runPacked(SendablePointer(UnsafeMutablePointer(mutating: b)), j0: 0, j1: n, parts: parts)
    }

    /// The product on the calling thread alone (items of a batch run in parallel this way).
    /// Products of up to `columnSplitRows` rows pack B `columnBlock` columns at a time (L2-resident), others NC.
    func runSerial() {
        columns(0, n, block: m <= AVX512Sgemm.columnSplitRows ? AVX512Sgemm.columnBlock : AVX512Sgemm.nc)
    }

    /// Columns [j0, j1) of C on the calling thread, B packed `block` columns at a time (haste_sgemm_columns).
    private func columns(_ j0: Int, _ j1: Int, block: Int) {
        if var g = conv { return haste_sgemm_columns(0, 0, &g, m, k, 1, a, k, b, n, beta, c, n, j0, j1, block, nil) }
        haste_sgemm_columns(transA ? 1 : 0, transB ? 1 : 0, nil, m, k, alpha, a, lda, b, ldb, beta, c, ldc, j0, j1, block, bias)
    }

    /// The product split by columns into `parts` pieces (whole NR panels), each thread packing its own B `block`
    /// columns at a time.
    private func runColumns(parts: Int, block: Int) {
        let nr = AVX512Sgemm.nr, per = ((n + nr - 1) / nr + parts - 1) / parts * nr
        Parallel.forEach(parts) { part in
            let j0 = part * per, j1 = Swift.min(n, j0 + per)
            if j0 < j1 { columns(j0, j1, block: block) }
        }
    }

    /// The product split by rows into `parts` pieces (whole HASTE_SGEMM_MR tiles), each thread packing all of B for
    /// itself, `nc` columns at a time, and only its own rows of A. A column split packs all of A on every thread and
    /// half of B: per thread K·(M + N/t) floats packed against K·(M/t + N) here, less wherever N < M. Measured
    /// (`Scripts/bench_gemm_paired.py`, 2 threads, AMD EPYC Zen 4, median GFLOP/s column split → row split):
    /// 4096×384×384 144 → 193, 4096×384×1536 170 → 188, 4096×1536×384 188 → 216, 4096×384×1152 167 → 198,
    /// 4112×768×3072 190 → 209, 4112×2304×768 206 → 215, 1024×2304×768 201 → 200; the column split stays for
    /// N > 2M (768×3072×4096: 207 → 207) and for convolutions (B is the im2col of the image: packing it all on
    /// every thread would repeat the im2col).
    private func runRows(parts: Int) {
        let mr = Int(HASTE_SGEMM_MR), tiles = (m + mr - 1) / mr, rowsPer = (tiles + parts - 1) / parts * mr
        let pieces = (m + rowsPer - 1) / rowsPer
        Parallel.forEach(pieces) { part in
            let i0 = part * rowsPer, i1 = Swift.min(m, i0 + rowsPer)
            let rowsOfA = transA ? a + i0 : a + i0 * lda
            haste_sgemm_columns(transA ? 1 : 0, transB ? 1 : 0, nil, i1 - i0, k, alpha, rowsOfA, lda, b, ldb, beta,
                                c + i0 * ldc, ldc, 0, n, AVX512Sgemm.nc, bias)
        }
    }

    /// C (m × n) = A (m × k, rows contiguous) · Wᵀ + bias with Wᵀ already packed whole (PackedLinearWeight: K block
    /// p0 of haste_sgemm_kc_step(k) rows at p0 · n, n a multiple of NR: `run`'s shared layout): `run`'s split of C
    /// between the threads over that B̃, without packing it. The same K blocks and order, so `run`'s bits.
    static func runPrepacked(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, packed: UnsafePointer<Float>,
                             bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>) {
        var product = AVX512Sgemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: packed, ldb: k,
                                  beta: 0, c: c, ldc: n)
        product.bias = bias
        CPUBackend.withGemmMutex { product.runOnPackedB() }
    }

    /// The product split into `parts` pieces run on the pool. The caller holds CPUBackend.gemmMutex (packed B is shared).
    /// All of K is packed at once (for up to `packedFloats` of B), so the threads meet twice per product, not twice
    /// per KC block: on a shared machine every meeting waits for the slowest thread.
    func run(parts: Int, slot: Int = 0) {
        if parts <= 1 || m * n * k < AVX512Sgemm.parallelMACs { return runSerial() }
        let nr = AVX512Sgemm.nr, allPanels = (n + nr - 1) / nr, blockPanels = AVX512Sgemm.columnBlock / nr
        if m <= AVX512Sgemm.columnSplitRows && allPanels >= parts * 2 * blockPanels {
            return runColumns(parts: parts, block: AVX512Sgemm.columnBlock)
        }
        if m > AVX512Sgemm.columnSplitRows && conv == nil && n <= 2 * m {
            return runRows(parts: parts)
        }
        if m > AVX512Sgemm.columnSplitRows && allPanels >= parts * AVX512Sgemm.columnSplitPanels {
            return runColumns(parts: parts, block: AVX512Sgemm.nc)
        }
        let kcStep = haste_sgemm_kc_step(k)
        let ncMax = Swift.max(nr, Swift.min(AVX512Sgemm.nc, AVX512Sgemm.packedFloats / k / nr * nr))
        let packed = SendablePointer(AVX512Sgemm.packBuffer(k * Int(haste_sgemm_packed_b_floats(1, Swift.min(n, ncMax))), slot: slot))
        let bp = SendablePointer(UnsafeMutablePointer(mutating: b))
        let tb: Int32 = transB ? 1 : 0, conv = conv
        for j0 in stride(from: 0, to: n, by: ncMax) {
            let j1 = Swift.min(n, j0 + ncMax), panels = (j1 - j0 + nr - 1) / nr, width = panels * nr
            let packParts = Swift.min(parts, panels), packPer = (panels + packParts - 1) / packParts
            // KC block p0 of B̃ starts at p0 · width; panel q of a block of kc rows at q · kc · NR within it.
            Parallel.forEach(packParts) { part in
                let first = part * packPer, last = Swift.min(panels, first + packPer)
                guard first < last else { return }
                for p0 in stride(from: 0, to: k, by: kcStep) {
                    let kc = Swift.min(kcStep, k - p0)
                    let dst = packed.base + p0 * width + first * kc * nr, end = Swift.min(j1, j0 + last * nr)
                    if var g = conv { haste_conv_pack_b(&g, bp.base, p0, kc, j0 + first * nr, end, dst) }
                    else { haste_sgemm_pack_b(tb, bp.base, ldb, p0, kc, j0 + first * nr, end, dst) }
                }
            }
            runPacked(packed, j0: j0, j1: j1, parts: parts)
        }
    }

    /// Columns [j0, j1) of C from B̃ packed whole for them (KC block p0 at p0 · width, width = their panels · NR):
    /// the rows of C in pieces of whole tiles (HASTE_SGEMM_MR rows) between `parts` threads; with too few rows, the
    /// columns too, in pieces of whole NR panels. The caller holds CPUBackend.gemmMutex.
    private func runPacked(_ packed: SendablePointer<Float>, j0: Int, j1: Int, parts: Int) {
        let nr = AVX512Sgemm.nr, mr = Int(HASTE_SGEMM_MR), kcStep = haste_sgemm_kc_step(k)
        let panels = (j1 - j0 + nr - 1) / nr, width = panels * nr, tiles = (m + mr - 1) / mr
        let rowParts = Swift.min(parts, tiles), colParts = rowParts >= parts ? 1 : Swift.min(parts / rowParts, panels)
        let rowsPer = (tiles + rowParts - 1) / rowParts * mr, panelsPer = (panels + colParts - 1) / colParts
        let cp = SendablePointer(c), ap = SendablePointer(UnsafeMutablePointer(mutating: a))
        let ta: Int32 = transA ? 1 : 0, alpha = alpha, beta = beta, lda = lda, ldc = ldc, k = k, m = m
        let biasPointer = bias.map { SendablePointer(UnsafeMutablePointer(mutating: $0)) }
        Parallel.forEach(rowParts * colParts) { part in
            let i0 = (part / colParts) * rowsPer, firstPanel = (part % colParts) * panelsPer
            let i1 = Swift.min(m, i0 + rowsPer), lastPanel = Swift.min(panels, firstPanel + panelsPer)
            guard i0 < i1, firstPanel < lastPanel else { return }
            for p0 in stride(from: 0, to: k, by: kcStep) {
                let kc = Swift.min(kcStep, k - p0)
                haste_sgemm_block(ta, ap.base, lda, p0, kc, i0, i1, packed.base + p0 * width + firstPanel * kc * nr,
                                  j0 + firstPanel * nr, Swift.min(j1, j0 + lastPanel * nr), alpha, p0 == 0 ? beta : 1,
                                  cp.base, ldc, p0 == 0 ? biasPointer.map { UnsafePointer($0.base) } : nil)
            }
        }
    }
}
