import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The kernB families (gemm, movement, LayerNorm, attention, conv, pool, resize) on the emulated CUDA device
/// against the CPU backend, kernel by kernel on identical random inputs with odd sizes.
///
/// Exact where both sides compute the same float operations in the same order (gathers, selections, col2im,
/// pools, nearest upsampling, index_add): compared bit for bit (NaN as NaN). Elsewhere the two sides sum in
/// different orders (or contract into FMAs differently), and each comparison uses a first-order bound on
/// |gpu − cpu| derived from the computation: a float32 sum of n terms in any order is within (n − 1)·u·Σ|terms|
/// of the exact sum (u = 2⁻²⁴), so two implementations differ by at most about 2n·u·Σ|terms|, with Σ|terms|
/// computed on the host from the actual inputs (or bounded from their range, [−1, 1) unless stated).
@Suite(.serialized) struct CUDAKernelsBTests {
    // MARK: gemm

    @Test(arguments: [false, true], [false, true])
    func gemmMatchesCPU(transA: Bool, transB: Bool) {
        var rng = TestRNG(seed: 11 + (transA ? 2 : 0) + (transB ? 1 : 0))
        let g = GemmLayout(transA: transA, transB: transB, k: 9)
        let a = rng.floats(g.countA), b = rng.floats(g.countB), c0 = rng.floats(g.countC)
        let alpha = 0.75, beta = 0.5
        let ta = Twin(a), tb = Twin(b), tc = Twin(c0)
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            g.run(backend, alpha: alpha, a: ta[side], b: tb[side], beta: beta, c: tc[side])
        }
        let (want, got) = tc.floats()
        Check.within(got, want, g.reference(a: a, b: b, c0: c0, alpha: alpha, beta: beta).bound, "gemm transA \(transA) transB \(transB)")
    }

    /// k = 0: C = beta·C over the m×n windows, the BLAS definition, on both backends. beta = 0 writes zeros (C held
    /// NaN, which must not leak through), beta = 1 leaves C alone; the padding between windows is never written.
    @Test(arguments: [0.0, 1.0, 0.5])
    func gemmWithEmptyInnerDimensionScalesC(beta: Double) {
        var rng = TestRNG(seed: 12)
        let m = 3, n = 4, batch = 2, ldc = n + 1, strideC = m * ldc + 2
        var c0 = rng.floats((batch - 1) * strideC + m * ldc)
        if beta == 0 { c0 = c0.map { _ in .nan } }
        let tc = Twin(c0), ta = Twin([Float(0)]), tb = Twin([Float(0)])
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            backend.gemm(transA: false, transB: false, m: m, n: n, k: 0, alpha: 1, a: ta[side], lda: 1, strideA: 0,
                         b: tb[side], ldb: n, strideB: 0, beta: beta, c: tc[side], ldc: ldc, strideC: strideC, batch: batch)
        }
        let (cpu, got) = tc.floats()
        var want = c0
        for bi in 0..<batch {
            for i in 0..<m {
                for j in 0..<n { let e = bi * strideC + i * ldc + j; want[e] = beta == 0 ? 0 : Float(beta) * c0[e] }
            }
        }
        Check.bitwise(got, want, "gemm k = 0, beta \(beta)")
        Check.bitwise(cpu, want, "gemm k = 0, beta \(beta) on the CPU")
    }

    // MARK: movement

    @Test func indexSelectMatchesCPUForEveryWidth() {
        var rng = TestRNG(seed: 21)
        let outer = 3, size = 5, inner = 7, count = 6
        let idx64: [Int64] = [4, 0, 2, 2, 4, 1], idx32 = idx64.map { Int32($0) }
        let bits = (0..<outer * size * inner).map { _ in rng.next() }
        for dtype in [DType.float64, .float32, .bfloat16, .uint8] {
            for useInt64 in [false, true] {
                let x: Twin
                switch dtype.byteSize {
                case 8: x = Twin(bits, dtype)
                case 4: x = Twin(bits.map { UInt32(truncatingIfNeeded: $0) }, dtype)
                case 2: x = Twin(bits.map { UInt16(truncatingIfNeeded: $0) }, dtype)
                default: x = Twin(bits.map { UInt8(truncatingIfNeeded: $0) }, dtype)
                }
                let indices = useInt64 ? Twin(idx64, .int64) : Twin(idx32, .int32)
                let y = Twin(bytes: outer * count * inner * dtype.byteSize, dtype)
                for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                    backend.indexSelect(x[side], indices: indices[side], y[side], outer: outer, size: size, inner: inner,
                                        count: count)
                }
                let (want, got) = y.bytes()
                #expect(got == want, "index_select \(dtype), int64 indices \(useInt64)")
            }
        }
    }

    @Test func indexSelectReportsABadIndex() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let x = Twin([Float](repeating: 1, count: 12)), y = Twin(bytes: 12 * 4, .float32)
            let indices = Twin([Int64(0), 3, 1], .int64)   // 3 is outside [0, 3)
            EmulatedCUDA.backend.indexSelect(x[1], indices: indices[1], y[1], outer: 2, size: 3, inner: 2, count: 3)
            EmulatedCUDA.backend.synchronize()
        }
        #expect(trapMessage(result).contains("index_select: an index is outside [0, size)"))
    }

    @Test func indexAddMatchesCPUBitwise() {
        var rng = TestRNG(seed: 22)
        let outer = 2, size = 5, inner = 9, count = 11
        let idx64: [Int64] = [3, 0, 3, 4, 3, 1, 0, 4, 4, 2, 3], idx32 = idx64.map { Int32($0) }
        let dy = rng.floats(outer * count * inner), dx0 = rng.floats(outer * size * inner)
        for useInt64 in [false, true] {
            let tdy = Twin(dy), tdx = Twin(dx0)   // dx is accumulated into (here not zero)
            let indices = useInt64 ? Twin(idx64, .int64) : Twin(idx32, .int32)
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.indexAdd(tdy[side], indices: indices[side], tdx[side], outer: outer, size: size, inner: inner,
                                 count: count)
            }
            let (want, got) = tdx.floats()
            Check.bitwise(got, want, "index_add int64 indices \(useInt64)")   // same adds in index order
        }
    }

    @Test func indexAddReportsABadIndex() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let dy = Twin([Float](repeating: 1, count: 4)), dx = Twin([Float](repeating: 0, count: 6))
            let indices = Twin([Int32(-1), 1], .int32)
            EmulatedCUDA.backend.indexAdd(dy[1], indices: indices[1], dx[1], outer: 1, size: 3, inner: 2, count: 2)
            EmulatedCUDA.backend.synchronize()
        }
        #expect(trapMessage(result).contains("index_select: an index is outside [0, size)"))
    }

    @Test func selectMatchesCPUWithBroadcastAndViews() {
        var rng = TestRNG(seed: 23)
        // [3, 1, 4, 5]: condition broadcast over axis 0 and 3, a a transposed view, b broadcast from [4, 1].
        let shape = [3, 1, 4, 5]
        let cond = (0..<16).map { _ in rng.next() % 2 == 0 }
        let a = rng.floats(128), b = rng.floats(8)
        let cases: [(String, [Int], [Int], [Int], [Int])] = [
            ("broadcast", shape, [0, 0, 1, 0], [1, 7, 15, 3], [0, 0, 1, 0]),
            // rank 7, no axis mergeable: exercises the launch loop over the outermost axis beyond rank 6
            ("rank 7", [2, 2, 2, 2, 2, 2, 2], [0, 1, 0, 2, 0, 1, 4], [1, 31, 3, 2, 13, 5, 29], [3, 0, 1, 2, 1, 0, 0]),
        ]
        for (name, shape, sc, sa, sb) in cases {
            let n = shape.reduce(1, *)
            for dtype in [DType.float32, .uint8] {
                let tc = Twin(cond, .bool)
                let ta = dtype == .float32 ? Twin(a) : Twin(a.map { UInt8(truncatingIfNeeded: $0.bitPattern) }, .uint8)
                let tb = dtype == .float32 ? Twin(b) : Twin(b.map { UInt8(truncatingIfNeeded: $0.bitPattern) }, .uint8)
                let out = Twin(bytes: n * dtype.byteSize, dtype)
                for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                    backend.select(tc[side], sc, ta[side], sa, tb[side], sb, out[side], shape: shape)
                }
                let (want, got) = out.bytes()
                #expect(got == want, "select \(name) \(dtype)")
            }
        }
    }

    @Test func compareMatchesCPU() {
        var rng = TestRNG(seed: 24)
        var x = rng.floats(301)
        x[5] = .nan; x[6] = 0.3; x[7] = Float(0.3).nextUp; x[8] = -.infinity
        let tx = Twin(x)
        for op in [CompareOp.greater, .less] {
            let out = Twin(bytes: x.count, .bool)
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.compare(op, tx[side], scalar: 0.3, out[side], count: x.count)   // 0.3 rounds to float first
            }
            let (want, got) = out.bytes()
            #expect(got == want, "compare \(op)")
            #expect(got[5] == 0, "NaN compares false")
        }
    }

    // MARK: conv

    /// Both im2col paths: 32-bit indices with fast divisions (the default at these sizes) and 64-bit (HASTE_INDEX32=0).
    @Test(arguments: [true, false]) func im2colAndCol2imMatchCPUBitwise(indices32: Bool) {
        CUDABackend.$index32Allowed.withValue(indices32) { im2colAndCol2imMatchCPUBitwise() }
    }

    func im2colAndCol2imMatchCPUBitwise() {
        var rng = TestRNG(seed: 41)
        for g in [ConvGeometry(channels: 3, height: 7, width: 6, kernelHeight: 3, kernelWidth: 2, stride: 2,
                               paddingHeight: 1, paddingWidth: 2),
                  ConvGeometry(channels: 2, height: 5, width: 9, kernelHeight: 3, kernelWidth: 3, stride: 1, padding: 1),
                  ConvGeometry(channels: 2, height: 8, width: 6, kernelHeight: 2, kernelWidth: 2, stride: 2, padding: 0),
                  ConvGeometry(channels: 3, height: 11, width: 5, kernelHeight: 2, kernelWidth: 3, stride: 3,
                               paddingHeight: 2, paddingWidth: 1)] {
            let batch = 2
            let x = rng.floats(batch * g.channels * g.height * g.width), cols = rng.floats(batch * g.patchSize * g.outPixels)
            let tx = Twin(x), tcols = Twin(cols)
            let outCols = Twin(bytes: cols.count * 4, .float32), dx = Twin([Float](repeating: .nan, count: x.count))
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.im2col(x: tx[side], cols: outCols[side], batch: batch, geometry: g)
                backend.col2im(cols: tcols[side], dx: dx[side], batch: batch, geometry: g)
            }
            let (wantCols, gotCols) = outCols.floats(), (wantDX, gotDX) = dx.floats()
            Check.bitwise(gotCols, wantCols, "im2col \(g)")
            Check.bitwise(gotDX, wantDX, "col2im \(g)")   // same additions in the same order
            // bfloat16 (real bf16 conv2d): a gather of bits, so the columns of bf16(x) are bf16(the float32 columns).
            let tx16 = Twin(Self.bf16(x), .bfloat16), cols16 = Twin(bytes: cols.count * 2, .bfloat16)
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.im2col(x: tx16[side], cols: cols16[side], batch: batch, geometry: g)
            }
            #expect(cols16.read(0, UInt16.self) == Self.bf16(wantCols), "im2col bf16 \(g) on the CPU")
            #expect(cols16.read(1, UInt16.self) == Self.bf16(wantCols), "im2col bf16 \(g) on the emulator")
        }
    }

    // MARK: pool

    @Test func poolsMatchCPUBitwiseWithNaN() {
        var rng = TestRNG(seed: 51)
        let planes = 3
        for g in [PoolGeometry(height: 9, width: 7, kernel: 3, stride: 2, padding: 1),
                  PoolGeometry(height: 8, width: 5, kernel: 2, stride: 2, padding: 0),
                  PoolGeometry(height: 6, width: 7, kernel: 3, stride: 1, padding: 1)] {
            var x = rng.floats(planes * g.height * g.width)
            x[4] = .nan; x[g.height * g.width + 2 * g.width] = .nan   // NaN in windows of planes 0 and 1
            x[9] = -.infinity
            let tx = Twin(x), count = planes * g.outHeight * g.outWidth
            let mx = Twin(bytes: count * 4, .float32), avgIn = Twin(bytes: count * 4, .float32), avgEx = Twin(bytes: count * 4, .float32)
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.maxPool2d(x: tx[side], y: mx[side], planes: planes, geometry: g)
                backend.avgPool2d(x: tx[side], y: avgIn[side], planes: planes, geometry: g, countIncludePad: true)
                backend.avgPool2d(x: tx[side], y: avgEx[side], planes: planes, geometry: g, countIncludePad: false)
            }
            let (wantMax, gotMax) = mx.floats()
            Check.bitwise(gotMax, wantMax, "maxPool2d \(g)")
            #expect(gotMax.contains { $0.isNaN }, "a NaN propagates")
            Check.bitwise(avgIn.floats().1, avgIn.floats().0, "avgPool2d include pad \(g)")
            Check.bitwise(avgEx.floats().1, avgEx.floats().0, "avgPool2d exclude pad \(g)")
        }
    }

    // MARK: resize

    /// Both paths: one thread per input pixel with a fast division (the default here) and the 64-bit one (HASTE_INDEX32=0).
    @Test(arguments: [true, false]) func upsampleNearest2xMatchesCPUBitwise(indices32: Bool) {
        CUDABackend.$index32Allowed.withValue(indices32) { upsampleNearest2xMatchesCPUBitwise() }
    }

    func upsampleNearest2xMatchesCPUBitwise() {
        var rng = TestRNG(seed: 61)
        let planes = 2, h = 3, w = 5
        let x = rng.floats(planes * h * w), dy = rng.floats(planes * 4 * h * w)
        let tx = Twin(x), tdy = Twin(dy), y = Twin(bytes: dy.count * 4, .float32), dx = Twin(bytes: x.count * 4, .float32)
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            backend.upsampleNearest2x(x: tx[side], y: y[side], planes: planes, height: h, width: w)
            backend.upsampleNearest2xBackward(dy: tdy[side], dx: dx[side], planes: planes, height: h, width: w)
        }
        Check.bitwise(y.floats().1, y.floats().0, "upsampleNearest2x")
        Check.bitwise(dx.floats().1, dx.floats().0, "upsampleNearest2x backward")
    }
}

/// The strided-batched GEMM both CUDA GEMM tests use: m = 5, n = 7, batch 3, leading dimensions wider than the
/// matrices, odd batch strides, B broadcast (stride 0) when transA == transB.
struct GemmLayout {
    let transA: Bool, transB: Bool, k: Int
    let m = 5, n = 7, batch = 3
    var lda: Int { (transA ? m : k) + 2 }
    var ldb: Int { (transB ? k : n) + 1 }
    var ldc: Int { n + 3 }
    var strideA: Int { (transA ? k : m) * lda + 3 }
    var strideB: Int { transA == transB ? 0 : (transB ? n : k) * ldb + 5 }
    var strideC: Int { m * ldc + 1 }
    var countA: Int { (batch - 1) * strideA + (transA ? k : m) * lda }
    var countB: Int { (batch - 1) * strideB + (transB ? n : k) * ldb }
    var countC: Int { (batch - 1) * strideC + m * ldc }

    func run(_ backend: any Backend, alpha: Double, a: Buffer, b: Buffer, beta: Double, c: Buffer) {
        backend.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, strideA: strideA,
                     b: b, ldb: ldb, strideB: strideB, beta: beta, c: c, ldc: ldc, strideC: strideC, batch: batch)
    }

    /// C = alpha·A·B + beta·C in float64 (rounded to float32), and per element the bound on two float32 evaluations'
    /// difference, 2(k + 2)·u·(|alpha|·Σ_p |A_ip||B_pj| + |beta|·|C_ij|); outside the m×n windows (padding of ldc and
    /// strideC) C is c0 and the bound 0: it must be untouched.
    func reference(a: [Float], b: [Float], c0: [Float], alpha: Double, beta: Double) -> (exact: [Float], bound: [Double]) {
        var exact = c0, bound = [Double](repeating: 0, count: c0.count)
        for bi in 0..<batch { for i in 0..<m { for j in 0..<n {
            var s = 0.0, sum = 0.0
            for p in 0..<k {
                let av = transA ? a[bi * strideA + p * lda + i] : a[bi * strideA + i * lda + p]
                let bv = transB ? b[bi * strideB + j * ldb + p] : b[bi * strideB + p * ldb + j]
                s += Double(Swift.abs(av * bv)); sum += Double(av) * Double(bv)
            }
            let e = bi * strideC + i * ldc + j
            exact[e] = Float(alpha * sum + beta * Double(c0[e]))
            bound[e] = 2 * Double(k + 2) * CUDAKernelsBTests.Check.u * (Swift.abs(alpha) * s + Swift.abs(beta) * Double(Swift.abs(c0[e])))
        } } }
        return (exact, bound)
    }
}
