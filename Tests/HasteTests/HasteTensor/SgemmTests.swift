import Glibc
import Testing
import CKernels
@testable import HasteTensor

/// float32 GEMMs through CPUBackend.gemm (haste's AVX-512 kernel on CPUs that have it, OpenBLAS elsewhere) against
/// float64 OpenBLAS: every element within (k + 2)·2⁻²⁴·(|α|Σ|a||b| + |β||c|) of the exact product (the bound of
/// any float32 summation order), elements between rows and batch items untouched, beta 0 ignoring NaN in C.
private func checkSgemm(_ ta: Bool, _ tb: Bool, m: Int, n: Int, k: Int, pad: Int, alpha: Double, beta: Double,
                        batch: Int = 1, seed: UInt64) {
    let lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad
    let sa = (ta ? k : m) * lda + pad, sb = (tb ? n : k) * ldb + pad, sc = m * ldc + pad
    let a = Tensor.randn([batch * sa], seed: seed), b = Tensor.randn([batch * sb], seed: seed + 1)
    let c0 = beta == 0 ? Tensor([Float](repeating: .nan, count: batch * sc)) : Tensor.randn([batch * sc], seed: seed + 2)
    let c = Tensor(c0.scalars(as: Float.self))
    CPUBackend.shared.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: a.buffer, lda: lda, strideA: sa,
                           b: b.buffer, ldb: ldb, strideB: sb, beta: beta, c: c.buffer, ldc: ldc, strideC: sc, batch: batch)
    // float64 reference and magnitude: α·A·B + β·C and |α|·|A|·|B| + |β|·|C| (C's NaNs are never read when β = 0)
    func wide(_ t: Tensor, abs: Bool = false) -> Tensor {
        Tensor(t.scalars(as: Float.self).map { x in x.isNaN ? 0 : abs ? Double(Swift.abs(x)) : Double(x) })
    }
    let ref = wide(c0), mag = wide(c0, abs: true)
    CPUBackend.shared.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: wide(a).buffer, lda: lda, strideA: sa,
                           b: wide(b).buffer, ldb: ldb, strideB: sb, beta: beta, c: ref.buffer, ldc: ldc, strideC: sc, batch: batch)
    CPUBackend.shared.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: Swift.abs(alpha), a: wide(a, abs: true).buffer,
                           lda: lda, strideA: sa, b: wide(b, abs: true).buffer, ldb: ldb, strideB: sb, beta: Swift.abs(beta),
                           c: mag.buffer, ldc: ldc, strideC: sc, batch: batch)
    let got = c.scalars(as: Float.self), before = c0.scalars(as: Float.self)
    let want = ref.scalars(as: Double.self), size = mag.scalars(as: Double.self)
    var bad = 0, gaps = 0
    for i in 0..<(batch * sc) {
        let (item, r) = (i / sc, i % sc), (row, col) = (r / ldc, r % ldc)
        guard item < batch, row < m, col < n else {
            if got[i].bitPattern != before[i].bitPattern { gaps += 1 }
            continue
        }
        let bound = Double(k + 2) * 0x1p-24 * size[i] + Double(Float.leastNonzeroMagnitude)
        if !(Swift.abs(Double(got[i]) - want[i]) <= bound) { bad += 1 }
    }
    let what = "ta \(ta) tb \(tb) m \(m) n \(n) k \(k) pad \(pad) α \(alpha) β \(beta) batch \(batch)"
    #expect(bad == 0, "\(what): \(bad) elements beyond the float32 bound")
    #expect(gaps == 0, "\(what): \(gaps) elements outside C changed")
}

@Test func sgemmMatchesFloat64OnOddSizesTransposesAndStrides() {
    let sizes = [1, 7, 13, 17, 33, 100, 257], ks = [1, 13, 33, 257, 300, 513]
    let scales: [(Double, Double)] = [(1, 0), (0.5, 1), (-2, 0.25), (1, 1)]
    var seed: UInt64 = 10
    for (i, m) in sizes.enumerated() { for (j, n) in sizes.enumerated() {
        for ta in [false, true] { for tb in [false, true] {
            let (alpha, beta) = scales[(i + j + (ta ? 1 : 0)) % scales.count]
            checkSgemm(ta, tb, m: m, n: n, k: ks[(i + 2 * j) % ks.count], pad: (i + j) % 3 == 0 ? 0 : 3,
                       alpha: alpha, beta: beta, seed: seed)
            seed += 3
        } }
    } }
}

/// Sizes past 1000 in each dimension (several KC blocks, many MR tiles and NR panels), parallel and batched.
@Test func sgemmMatchesFloat64OnLargeAndBatchedProducts() {
    var seed: UInt64 = 500
    // (128, 2100, 300) and (200, 4200, 70): columns split between threads
    for (m, n, k) in [(1030, 33, 17), (13, 1100, 100), (7, 17, 1500), (257, 100, 1030), (130, 1090, 260),
                      (128, 2100, 300), (200, 4200, 70)] {
        for ta in [false, true] { for tb in [false, true] {
            checkSgemm(ta, tb, m: m, n: n, k: k, pad: 2, alpha: 1, beta: 0, seed: seed)
            seed += 3
        } }
    }
    for (m, n, k) in [(37, 19, 23), (64, 64, 64), (300, 300, 40)] {      // item-parallel and one-by-one batches
        checkSgemm(false, true, m: m, n: n, k: k, pad: 1, alpha: 0.125, beta: 0, batch: 5, seed: seed)
        checkSgemm(true, false, m: m, n: n, k: k, pad: 0, alpha: 1, beta: -1, batch: 3, seed: seed + 1)
        seed += 3
    }
}

/// α = 0: C = β·C without reading A or B (NaN there must not spread), as BLAS.
@Test func sgemmWithZeroAlphaOnlyScalesC() {
    let a = Tensor([Float](repeating: .nan, count: 12)), b = Tensor([Float](repeating: .infinity, count: 12))
    let c = Tensor((0..<9).map { Float($0) })
    CPUBackend.shared.gemm(transA: false, transB: false, m: 3, n: 3, k: 4, alpha: 0, a: a.buffer, lda: 4, strideA: 0,
                           b: b.buffer, ldb: 3, strideB: 0, beta: 2, c: c.buffer, ldc: 3, strideC: 0, batch: 1)
    #expect(c.scalars(as: Float.self) == (0..<9).map { Float(2 * $0) })
}

/// k = 0 or α = 0 on a bfloat16 C: C = β·C (scaled in float32, rounded once), NaN in A and B never read.
@Test func emptyOrZeroAlphaProductsScaleABFloat16C() {
    for (k, alpha) in [(0, 1.0), (2, 0.0)] {
        let a = Tensor([Float](repeating: .nan, count: 4)).to(.bfloat16), b = Tensor([Float](repeating: .nan, count: 6)).to(.bfloat16)
        let c = Tensor((0..<6).map { Float($0) + 0.25 }).to(.bfloat16)
        CPUBackend.shared.gemm(transA: false, transB: false, m: 2, n: 3, k: k, alpha: alpha, a: a.buffer, lda: Swift.max(k, 1),
                               strideA: 0, b: b.buffer, ldb: 3, strideB: 0, beta: 0.5, c: c.buffer, ldc: 3, strideC: 0, batch: 1)
        #expect(c.to(.float32).scalars(as: Float.self) == (0..<6).map { (Float($0) + 0.25) * 0.5 }, "k \(k) alpha \(alpha)")
    }
}

/// haste's AVX-512 kernel gives the same bits for every split of M and N between threads, the serial entry and
/// repeats (K is never split). Runs where the CPU has AVX-512F.
@Test func avx512SgemmIsBitwiseIdenticalForEveryThreadSplit() {
    guard AVX512Sgemm.available else { return }
    // Row splits with shared packed B; column splits (m ≤ 512, n ≥ 4 column blocks per piece) for 2–4 pieces of the
    // 128- and 200-row products.
    // More than 512 rows and n ≤ 2m: rows split, each piece packing all of B for itself and only its rows of A
    // ((600, 500, 260) with A transposed: a piece's rows are columns of the stored A; a last panel of 20 columns, the
    // 8 × 32 tile, and k blocks of 144 and 116, the second panel by panel, kc ≤ 128; (1030, 700, 384) untransposed,
    // a last tile of 6 rows). More than 512 rows and n > 2m: columns split, each piece packing its own B a k block
    // at a time (520, 1500, 260). k = 700 runs as 240 + 240 + 220 on every path: a path blocking K otherwise would
    // break the equality.
    for (ta, tb, m, n, k) in [(false, true, 300, 520, 700), (true, false, 5, 1000, 300), (false, false, 1000, 40, 600),
                              (true, true, 45, 4200, 9), (false, false, 128, 2100, 520), (false, true, 200, 4200, 70),
                              (true, false, 600, 500, 260), (false, true, 1030, 700, 384), (true, true, 520, 1500, 260)] {
        let lda = ta ? m : k, ldb = tb ? k : n
        let a = Tensor.randn([m * k], seed: 7).scalars(as: Float.self), b = Tensor.randn([k * n], seed: 8).scalars(as: Float.self)
        var results: [[UInt32]] = []
        for parts in [0, 1, 2, 3, 4, 8, 2] {            // 0: the serial entry
            var c = [Float](repeating: .nan, count: m * n)
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                let g = AVX512Sgemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 1.5, a: ap.baseAddress!, lda: lda,
                                    b: bp.baseAddress!, ldb: ldb, beta: 0, c: cp.baseAddress!, ldc: n)
                CPUBackend.withGemmMutex { if parts == 0 { g.runSerial() } else { g.run(parts: parts, slot: parts % 2) } }
            } } }
            results.append(c.map(\.bitPattern))
        }
        #expect(results.allSatisfy { $0 == results[0] }, "\(m)×\(n)×\(k): results differ between thread splits")
        #expect(!results[0].contains { Float(bitPattern: $0).isNaN }, "\(m)×\(n)×\(k): C not fully written")
    }
}

/// K splits into equal blocks of at most HASTE_SGEMM_KC (256), rounded up to 16 rows (384 → 192 + 192, 257 → 144 + 113).
@Test func sgemmKBlocksAreEvenAndCoverK() {
    let kc = Int(HASTE_SGEMM_KC)
    #expect([1, 9, 256, 257, 384, 700, 768, 1152, 1536].map { haste_sgemm_kc_step($0) } == [1, 9, 256, 144, 192, 240, 256, 240, 256])
    for k in 1...3000 {
        let step = haste_sgemm_kc_step(k), blocks = (k + step - 1) / step
        #expect(step >= 1 && step <= kc && (k <= kc ? step == k : step % 16 == 0), "k \(k): step \(step)")
        #expect(blocks == (k + kc - 1) / kc, "k \(k): \(blocks) blocks of \(step), not the fewest")
    }
}

/// CPUBackend.gemmPair (a linear layer's dX and dW at once, each on half of the threads) gives each product bit for
/// bit what `gemm` gives alone, and writes nothing else; pairs it cannot run at once (a small product, float64) run
/// one after the other, as two `gemm` calls.
@Test func gemmPairGivesEachProductBitForBitWhatGemmGives() {
    for (rows, inF, outF, wide) in [(600, 520, 300, false), (1030, 100, 64, false), (1024, 384, 1536, false), (7, 9, 5, false),
                                    (300, 200, 100, true)] {
        func tensor(_ count: Int, _ seed: UInt64) -> Tensor {
            let t = Tensor.randn([count], seed: seed)
            return wide ? Tensor(t.scalars(as: Float.self).map(Double.init)) : t
        }
        let dy = tensor(rows * outF, 1), w = tensor(outF * inF, 2), x = tensor(rows * inF, 3)
        func calls(_ dx: Tensor, _ dw: Tensor) -> (GemmCall, GemmCall) {
            (GemmCall(transA: false, transB: false, m: rows, n: inF, k: outF, alpha: 1, a: dy.buffer, lda: outF, strideA: 0,
                      b: w.buffer, ldb: inF, strideB: 0, beta: 0, c: dx.buffer, ldc: inF, strideC: 0, batch: 1),
             GemmCall(transA: true, transB: false, m: outF, n: inF, k: rows, alpha: 1, a: dy.buffer, lda: outF, strideA: 0,
                      b: x.buffer, ldb: inF, strideB: 0, beta: 0, c: dw.buffer, ldc: inF, strideC: 0, batch: 1))
        }
        func nans(_ count: Int) -> Tensor {     // one spare element past the product: never written
            wide ? Tensor([Double](repeating: .nan, count: count + 1)) : Tensor([Float](repeating: .nan, count: count + 1))
        }
        func bits(_ t: Tensor) -> [UInt64] {
            wide ? t.scalars(as: Double.self).map(\.bitPattern) : t.scalars(as: Float.self).map { UInt64($0.bitPattern) }
        }
        let (pdx, pdw) = (nans(rows * inF), nans(outF * inF)), (sdx, sdw) = (nans(rows * inF), nans(outF * inF))
        let (p1, p2) = calls(pdx, pdw), (s1, s2) = calls(sdx, sdw)
        CPUBackend.shared.gemmPair(p1, p2)
        CPUBackend.shared.gemm(s1)
        CPUBackend.shared.gemm(s2)
        #expect(bits(pdx) == bits(sdx) && bits(pdw) == bits(sdw), "\(rows)×\(inF)×\(outF): the pair differs from two gemms")
        func values(_ t: Tensor) -> [Double] { wide ? t.scalars(as: Double.self) : t.scalars(as: Float.self).map(Double.init) }
        for (name, t) in [("dX", pdx), ("dW", pdw)] {
            let v = values(t)
            #expect(v.last!.isNaN, "\(rows)×\(inF)×\(outF): \(name) written past the product")
            #expect(!v.dropLast().contains { $0.isNaN }, "\(rows)×\(inF)×\(outF): \(name) not fully written")
        }
    }
}

/// A linear layer's forward with its bias (`linearWithBias`: the CPU's AVX-512 GEMM adds the bias as it stores its first
/// K block) gives bit for bit the composite: the bias copied into every row, then the GEMM with beta 1. Shapes for
/// every path of AVX512Sgemm: serial (small), columns split with ≤ 512 rows and with more (n > 2m), rows split with
/// B packed by each piece (more than 512 rows, n ≤ 2m) and with B shared (few panels);
/// last panels of 4, 20 and 33 columns (each tile width), one and several K blocks; float64 takes the composite.
@Test func linearWithBiasIsTheCompositeBitForBit() {
    for (rows, inF, outF, wide) in [(5, 9, 20, false), (300, 520, 2100, false), (1030, 700, 4100, false),
                                    (1030, 600, 100, false), (600, 1, 33, false), (4112, 768, 2304, false), (200, 64, 300, false),
                                    (70, 40, 52, true)] {
        func tensor(_ count: Int, _ seed: UInt64) -> Tensor {
            let t = Tensor.randn([count], seed: seed)
            return wide ? Tensor(t.scalars(as: Float.self).map(Double.init)) : t
        }
        func nans(_ count: Int) -> Tensor {     // one spare element past the product: never written
            wide ? Tensor([Double](repeating: .nan, count: count + 1)) : Tensor([Float](repeating: .nan, count: count + 1))
        }
        func bits(_ t: Tensor) -> [UInt64] {
            wide ? t.scalars(as: Double.self).map(\.bitPattern) : t.scalars(as: Float.self).map { UInt64($0.bitPattern) }
        }
        let x = tensor(rows * inF, 11), w = tensor(outF * inF, 12), bias = tensor(outF, 13)
        let fused = nans(rows * outF), composite = nans(rows * outF)
        CPUBackend.shared.linearWithBias(rows: rows, inF: inF, outF: outF, x: x.buffer, weight: w.buffer, bias: bias.buffer,
                                         y: fused.buffer)
        CPUBackend.shared.linearWithBiasComposite(rows: rows, inF: inF, outF: outF, x: x.buffer, weight: w.buffer,
                                                  bias: bias.buffer, y: composite.buffer)
        let c = bits(composite), differing = zip(bits(fused), c).filter { $0 != $1 }.count
        #expect(differing == 0, "\(rows)×\(inF)×\(outF): \(differing) elements differ from the composite")
        let spare = wide ? fused.scalars(as: Double.self).last! : Double(fused.scalars(as: Float.self).last!)
        #expect(spare.isNaN, "\(rows)×\(inF)×\(outF): written past y")
        #expect(!c.dropLast().contains { wide ? Double(bitPattern: $0).isNaN : Float(bitPattern: UInt32($0)).isNaN })
    }
}
