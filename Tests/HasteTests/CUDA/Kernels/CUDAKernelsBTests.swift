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
        let m = 5, n = 7, k = 9, batch = 3
        let (aRows, aCols) = transA ? (k, m) : (m, k), (bRows, bCols) = transB ? (n, k) : (k, n)
        // Leading dimensions wider than the matrices, odd batch strides, B broadcast (stride 0) in two cases.
        let lda = aCols + 2, ldb = bCols + 1, ldc = n + 3
        let strideA = aRows * lda + 3, strideB = transA == transB ? 0 : bRows * ldb + 5, strideC = m * ldc + 1
        let a = rng.floats((batch - 1) * strideA + aRows * lda)
        let b = rng.floats((batch - 1) * strideB + bRows * ldb)
        let c0 = rng.floats((batch - 1) * strideC + m * ldc)
        let alpha = 0.75, beta = 0.5
        let ta = Twin(a), tb = Twin(b), tc = Twin(c0)
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            backend.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: ta[side], lda: lda,
                         strideA: strideA, b: tb[side], ldb: ldb, strideB: strideB, beta: beta, c: tc[side], ldc: ldc,
                         strideC: strideC, batch: batch)
        }
        let (want, got) = tc.floats()
        // Per element: 2(k + 2)·u·(|alpha|·Σ_p |A_ip||B_pj| + |beta|·|C_ij|); elements outside the m×n windows
        // (padding of ldc and strideC) must be untouched, so bound 0 there.
        var bound = [Double](repeating: 0, count: c0.count)
        for bi in 0..<batch {
            for i in 0..<m {
                for j in 0..<n {
                    var s = 0.0
                    for p in 0..<k {
                        let av = transA ? a[bi * strideA + p * lda + i] : a[bi * strideA + i * lda + p]
                        let bv = transB ? b[bi * strideB + j * ldb + p] : b[bi * strideB + p * ldb + j]
                        s += Double(Swift.abs(av * bv))
                    }
                    let e = bi * strideC + i * ldc + j
                    bound[e] = 2 * Double(k + 2) * unitRoundoff * (alpha * s + beta * Double(Swift.abs(c0[e])))
                }
            }
        }
        expectWithin(got, want, bound, "gemm transA \(transA) transB \(transB)")
    }

    /// k = 0 with beta = 0 writes zeros (C held NaN, which must not leak through), like the CPU.
    @Test func gemmWithEmptyInnerDimensionZeroes() {
        let m = 3, n = 4
        let tc = Twin([Float](repeating: .nan, count: m * n)), ta = Twin([Float(0)]), tb = Twin([Float(0)])
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            backend.gemm(transA: false, transB: false, m: m, n: n, k: 0, alpha: 1, a: ta[side], lda: 1, strideA: 0,
                         b: tb[side], ldb: n, strideB: 0, beta: 0, c: tc[side], ldc: n, strideC: 0, batch: 1)
        }
        let (want, got) = tc.floats()
        expectBitwise(got, want, "gemm k = 0")
        #expect(got.allSatisfy { $0 == 0 })
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
            expectBitwise(got, want, "index_add int64 indices \(useInt64)")   // same adds in index order
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

    // MARK: LayerNorm

    @Test(arguments: [(7, 37), (70, 259)])
    func layerNormMatchesCPU(rows: Int, cols: Int) {
        var rng = TestRNG(seed: UInt64(rows * 1000 + cols))
        // x = 3 + U(−1, 1): an offset mean, where one-pass moments lose digits and two-pass ones do not.
        let x = rng.floats(rows * cols).map { 3 + $0 }, w = rng.floats(cols), b = rng.floats(cols)
        let dy = rng.floats(rows * cols)
        let u = unitRoundoff, n = Double(cols)
        for (hasW, hasB) in [(false, false), (true, false), (false, true), (true, true)] {
            let tx = Twin(x), tw = Twin(w), tb = Twin(b)
            let y = Twin(bytes: rows * cols * 4, .float32), mean = Twin(bytes: rows * 4, .float32), rstd = Twin(bytes: rows * 4, .float32)
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.layerNormForward(tx[side], weight: hasW ? tw[side] : nil, bias: hasB ? tb[side] : nil, y[side],
                                         mean: mean[side], rstd: rstd[side], rows: rows, cols: cols, eps: 1e-6)
            }
            let (wantMean, gotMean) = mean.floats(), (wantRstd, gotRstd) = rstd.floats(), (wantY, gotY) = y.floats()
            // mean: 2(n + 1)·u·max|x| (max|x| ≤ 4). rstd: the CPU's one-pass variance E[d²] − E[d]² (d = x − x₀,
            // |d| < 2) cancels against var ≈ 1/3: relative error ≤ 12(n + 4)·u each side; rstd takes half, plus
            // the square root and division: 2·(6(n + 4) + 2)·u relative between the two.
            let eMean = 2 * (n + 1) * u * 4, eRstd = 2 * (6 * (n + 4) + 2) * u
            expectWithin(gotMean, wantMean, wantMean.map { _ in eMean }, "layerNorm mean")
            expectWithin(gotRstd, wantRstd, wantRstd.map { Double($0) * eRstd }, "layerNorm rstd")
            // y = x̂·w + b, x̂ = (x − mean)·rstd: |Δy| ≤ (eMean·rstd + |x̂|·(eRstd + 4u))·|w| + 2u·|b|.
            var bound = [Double](repeating: 0, count: rows * cols)
            for r in 0..<rows {
                for j in 0..<cols {
                    let e = r * cols + j, xh = Swift.abs(Double((x[e] - wantMean[r]) * wantRstd[r]))
                    let ww = hasW ? Double(Swift.abs(w[j])) : 1, bb = hasB ? Double(Swift.abs(b[j])) : 0
                    bound[e] = (eMean * Double(wantRstd[r]) + xh * (eRstd + 4 * u)) * ww + 2 * u * bb
                }
            }
            expectWithin(gotY, wantY, bound, "layerNorm y weight \(hasW) bias \(hasB)")

            // Backward from the CPU's saved statistics on both sides (identical inputs).
            for (wantDW, wantDB) in [(true, true), (false, true), (true, false), (false, false)] {
                let tdy = Twin(dy), tm = Twin(wantMean), tr = Twin(wantRstd)
                let dx = Twin(bytes: rows * cols * 4, .float32)
                let dw = Twin([Float](repeating: .nan, count: cols)), db = Twin([Float](repeating: .nan, count: cols))
                for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                    backend.layerNormBackward(tx[side], weight: hasW ? tw[side] : nil, mean: tm[side], rstd: tr[side],
                                              tdy[side], dx: dx[side], dweight: wantDW ? dw[side] : nil,
                                              dbias: wantDB ? db[side] : nil, rows: rows, cols: cols)
                }
                // dx = rstd·(g − a − x̂·c), a = mean(g), c = mean(g·x̂): a and c are n-term sums (2(n + 2)·u·mean of
                // |terms| apart), x̂ rounds alike up to 2u, and the final expression adds 4u of its terms.
                let (wantDX, gotDX) = dx.floats()
                var dxBound = [Double](repeating: 0, count: rows * cols)
                var sumDYXh = [Double](repeating: 0, count: cols), sumDY = [Double](repeating: 0, count: cols)
                for r in 0..<rows {
                    var ag = 0.0, agx = 0.0, sa = 0.0, sc = 0.0
                    for j in 0..<cols {
                        let e = r * cols + j, xh = Double((x[e] - wantMean[r]) * wantRstd[r])
                        let g = Double(dy[e]) * (hasW ? Double(w[j]) : 1)
                        ag += Swift.abs(g); agx += Swift.abs(g * xh); sa += g; sc += g * xh
                        sumDYXh[j] += Swift.abs(Double(dy[e]) * xh); sumDY[j] += Swift.abs(Double(dy[e]))
                    }
                    let ea = 2 * (n + 2) * u * ag / n, ec = 2 * (n + 2) * u * agx / n, a = Swift.abs(sa / n), c = Swift.abs(sc / n)
                    for j in 0..<cols {
                        let e = r * cols + j, xh = Swift.abs(Double((x[e] - wantMean[r]) * wantRstd[r]))
                        let g = Swift.abs(Double(dy[e]) * (hasW ? Double(w[j]) : 1))
                        dxBound[e] = Double(wantRstd[r]) * (ea + xh * ec + 2 * u * xh * c + 4 * u * (g + a + xh * c))
                    }
                }
                expectWithin(gotDX, wantDX, dxBound, "layerNorm dx weight \(hasW)")
                // dweight, dbias: rows-term column sums in different chunkings: 2(rows + 2)·u·Σ|terms|; untouched
                // (NaN stays) when not wanted.
                let (wantDWv, gotDWv) = dw.floats(), (wantDBv, gotDBv) = db.floats()
                if wantDW {
                    expectWithin(gotDWv, wantDWv, sumDYXh.map { 2 * Double(rows + 2) * u * $0 }, "layerNorm dweight")
                } else {
                    #expect(gotDWv.allSatisfy { $0.isNaN }, "dweight not wanted, not written")
                }
                if wantDB {
                    expectWithin(gotDBv, wantDBv, sumDY.map { 2 * Double(rows + 2) * u * $0 }, "layerNorm dbias")
                } else {
                    #expect(gotDBv.allSatisfy { $0.isNaN }, "dbias not wanted, not written")
                }
            }
        }
    }

    // MARK: attention

    @Test(arguments: [true, false])
    func attentionMatchesCPU(keepProbs: Bool) {
        var rng = TestRNG(seed: keepProbs ? 31 : 32)
        let s = AttentionShape(batch: 3, queries: 5, keys: 7, headDim: 4, valueDim: 6)
        let scale = 1 / Double(s.headDim).squareRoot()
        let q = rng.floats(s.batch * s.queries * s.headDim), k = rng.floats(s.batch * s.keys * s.headDim)
        let v = rng.floats(s.batch * s.keys * s.valueDim), dOut = rng.floats(s.batch * s.queries * s.valueDim)
        let tq = Twin(q), tk = Twin(k), tv = Twin(v)
        let out = Twin(bytes: dOut.count * 4, .float32), probs = Twin(bytes: s.batch * s.queries * s.keys * 4, .float32)
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            backend.attentionForward(q: tq[side], k: tk[side], v: tv[side], probs: keepProbs ? probs[side] : nil,
                                     out: out[side], shape: s, scale: scale)
        }
        let e = AttentionBounds(s, scale: scale)
        let (wantOut, gotOut) = out.floats()
        expectWithin(gotOut, wantOut, wantOut.map { _ in e.out }, "attention out")
        guard keepProbs else { return }
        let (wantP, gotP) = probs.floats()
        expectWithin(gotP, wantP, wantP.map { _ in e.probs }, "attention probs")

        // Backward from the CPU's probabilities on both sides; every subset of gradients (nil: not computed).
        let tp = Twin(wantP), tdo = Twin(dOut)
        for (wantQ, wantK, wantV) in [(true, true, true), (true, false, false), (false, true, true), (false, false, true)] {
            let dq = Twin([Float](repeating: .nan, count: q.count)), dk = Twin([Float](repeating: .nan, count: k.count))
            let dv = Twin([Float](repeating: .nan, count: v.count))
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.attentionBackward(q: tq[side], k: tk[side], v: tv[side], probs: tp[side], dOut: tdo[side],
                                          dq: wantQ ? dq[side] : nil, dk: wantK ? dk[side] : nil,
                                          dv: wantV ? dv[side] : nil, shape: s, scale: scale)
            }
            for (wanted, twin, bound, name) in [(wantQ, dq, e.dq, "dq"), (wantK, dk, e.dk, "dk"), (wantV, dv, e.dv, "dv")] {
                let (want, got) = twin.floats()
                if wanted {
                    expectWithin(got, want, want.map { _ in bound }, "attention \(name)")
                } else {
                    #expect(got.allSatisfy { $0.isNaN }, "attention \(name) not wanted, not written")
                }
            }
        }
    }

    @Test func softmaxMatmulMatchesCPU() {
        var rng = TestRNG(seed: 33)
        let s = AttentionShape(batch: 2, queries: 6, keys: 9, headDim: 1, valueDim: 3)
        // Logits in [−4, 4): the same first-order bounds as attention with Σ|logit terms| ≤ 4.
        let logits = rng.floats(s.batch * s.queries * s.keys).map { 4 * $0 }
        let v = rng.floats(s.batch * s.keys * s.valueDim), dOut = rng.floats(s.batch * s.queries * s.valueDim)
        let tl = Twin(logits), tv = Twin(v)
        let probs = Twin(bytes: logits.count * 4, .float32), out = Twin(bytes: dOut.count * 4, .float32)
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            backend.softmaxMatmulForward(logits: tl[side], v: tv[side], probs: probs[side], out: out[side], shape: s)
        }
        let e = AttentionBounds(s, scale: 1, logitMagnitude: 4, logitTerms: 0)
        let (wantP, gotP) = probs.floats(), (wantOut, gotOut) = out.floats()
        expectWithin(gotP, wantP, wantP.map { _ in e.probs }, "softmaxMatmul probs")
        expectWithin(gotOut, wantOut, wantOut.map { _ in e.out }, "softmaxMatmul out")
        #expect(tl.floats().1 == logits, "logits left untouched")

        let tp = Twin(wantP), tdo = Twin(dOut)
        for (wantL, wantV) in [(true, true), (true, false), (false, true)] {
            let dl = Twin([Float](repeating: .nan, count: logits.count)), dv = Twin([Float](repeating: .nan, count: v.count))
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.softmaxMatmulBackward(probs: tp[side], v: tv[side], dOut: tdo[side], dLogits: wantL ? dl[side] : nil,
                                              dv: wantV ? dv[side] : nil, shape: s)
            }
            for (wanted, twin, bound, name) in [(wantL, dl, e.dScores, "dLogits"), (wantV, dv, e.dv, "dv")] {
                let (want, got) = twin.floats()
                if wanted {
                    expectWithin(got, want, want.map { _ in bound }, "softmaxMatmul \(name)")
                } else {
                    #expect(got.allSatisfy { $0.isNaN }, "softmaxMatmul \(name) not wanted, not written")
                }
            }
        }
    }

    // MARK: conv

    @Test func im2colAndCol2imMatchCPUBitwise() {
        var rng = TestRNG(seed: 41)
        for g in [ConvGeometry(channels: 3, height: 7, width: 6, kernelHeight: 3, kernelWidth: 2, stride: 2,
                               paddingHeight: 1, paddingWidth: 2),
                  ConvGeometry(channels: 2, height: 5, width: 9, kernelHeight: 3, kernelWidth: 3, stride: 1, padding: 1),
                  ConvGeometry(channels: 2, height: 8, width: 6, kernelHeight: 2, kernelWidth: 2, stride: 2, padding: 0)] {
            let batch = 2
            let x = rng.floats(batch * g.channels * g.height * g.width), cols = rng.floats(batch * g.patchSize * g.outPixels)
            let tx = Twin(x), tcols = Twin(cols)
            let outCols = Twin(bytes: cols.count * 4, .float32), dx = Twin([Float](repeating: .nan, count: x.count))
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.im2col(x: tx[side], cols: outCols[side], batch: batch, geometry: g)
                backend.col2im(cols: tcols[side], dx: dx[side], batch: batch, geometry: g)
            }
            let (wantCols, gotCols) = outCols.floats(), (wantDX, gotDX) = dx.floats()
            expectBitwise(gotCols, wantCols, "im2col \(g)")
            expectBitwise(gotDX, wantDX, "col2im \(g)")   // same additions in the same order
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
            expectBitwise(gotMax, wantMax, "maxPool2d \(g)")
            #expect(gotMax.contains { $0.isNaN }, "a NaN propagates")
            expectBitwise(avgIn.floats().1, avgIn.floats().0, "avgPool2d include pad \(g)")
            expectBitwise(avgEx.floats().1, avgEx.floats().0, "avgPool2d exclude pad \(g)")
        }
    }

    // MARK: resize

    @Test func upsampleNearest2xMatchesCPUBitwise() {
        var rng = TestRNG(seed: 61)
        let planes = 2, h = 3, w = 5
        let x = rng.floats(planes * h * w), dy = rng.floats(planes * 4 * h * w)
        let tx = Twin(x), tdy = Twin(dy), y = Twin(bytes: dy.count * 4, .float32), dx = Twin(bytes: x.count * 4, .float32)
        for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
            backend.upsampleNearest2x(x: tx[side], y: y[side], planes: planes, height: h, width: w)
            backend.upsampleNearest2xBackward(dy: tdy[side], dx: dx[side], planes: planes, height: h, width: w)
        }
        expectBitwise(y.floats().1, y.floats().0, "upsampleNearest2x")
        expectBitwise(dx.floats().1, dx.floats().0, "upsampleNearest2x backward")
    }

    @Test(arguments: [(5, 9), (13, 4), (8, 4), (6, 6)])
    func resampleMatchesCPU(inSize: Int, outSize: Int) {
        var rng = TestRNG(seed: UInt64(inSize * 100 + outSize))
        let outer = 2, inner = 3, u = unitRoundoff
        let x = rng.floats(outer * inSize * inner), dy = rng.floats(outer * outSize * inner)
        for filter in [ResizeFilter.bicubic, .bicubicAntialias] {
            let tx = Twin(x), tdy = Twin(dy)
            let y = Twin(bytes: dy.count * 4, .float32), dx = Twin([Float](repeating: .nan, count: x.count))
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.resample(filter, x: tx[side], y: y[side], outer: outer, inSize: inSize, outSize: outSize, inner: inner)
                backend.resampleBackward(filter, dy: tdy[side], dx: dx[side], outer: outer, inSize: inSize,
                                         outSize: outSize, inner: inner)
            }
            // Weights: the cubic polynomials' terms sum to at most 36 in magnitude and the CPU writes their FMAs
            // out while a host compiler may not (NVRTC contracts them): |Δw| ≤ 2·8·36·u, plus the source
            // coordinate's rounding (≤ 2u·inSize, slope ≤ 3) and, antialiased, the normalisation (≤ 2·taps·u).
            let table = ResampleTable<Float>(filter, inSize: inSize, outSize: outSize)
            let eW = (2 * 8 * 36 + 6 * Double(inSize) + 2 * Double(table.taps)) * u
            // y: an n-term sum, 2(n + 1)·u·Σ|w||x|, plus the weight differences, eW·Σ|x|. dx gathers the same
            // products from dy: 2(n_j + 1)·u·Σ|w||dy| + eW·Σ|dy| over its n_j contributions.
            var yBound = [Double](repeating: 0, count: dy.count)
            var dxTerms = [Double](repeating: 0, count: x.count), dxMag = dxTerms, dxSum = dxTerms
            for o in 0..<outer {
                for i in 0..<outSize {
                    for kk in 0..<inner {
                        var s = 0.0, sx = 0.0, n = 0.0
                        let g = Double(Swift.abs(dy[(o * outSize + i) * inner + kk]))
                        for t in 0..<table.count[i] {
                            let j = (o * inSize + table.index[i * table.taps + t]) * inner + kk
                            let wt = Double(Swift.abs(table.weight[i * table.taps + t]))
                            s += wt * Double(Swift.abs(x[j])); sx += Double(Swift.abs(x[j])); n += 1
                            dxTerms[j] += 1; dxMag[j] += wt * g; dxSum[j] += g
                        }
                        yBound[(o * outSize + i) * inner + kk] = 2 * (n + 1) * u * s + eW * sx
                    }
                }
            }
            let dxBound = x.indices.map { 2 * (dxTerms[$0] + 1) * u * dxMag[$0] + eW * dxSum[$0] }
            let (wantY, gotY) = y.floats(), (wantDX, gotDX) = dx.floats()
            expectWithin(gotY, wantY, yBound, "resample \(filter) \(inSize)→\(outSize)")
            expectWithin(gotDX, wantDX, dxBound, "resample backward \(filter) \(inSize)→\(outSize)")
        }
    }
}

// MARK: helpers

/// float32's unit roundoff, 2⁻²⁴.
private let unitRoundoff = Double(Float.ulpOfOne) / 2

/// First-order bounds on |gpu − cpu| for attention with q, k, v, dOut in [−1, 1) (softmaxMatmul: logits given):
/// logits differ by eL (a Dh-term dot product, or none), probabilities relatively by 2eL plus the Tk-term
/// normaliser and the exp (each side within 2 ulp), and each product adds its own sum's rounding (2(n + 1)·u·
/// Σ|terms|), with |P| ≤ 1, Σ_k P = 1, |dP| ≤ Dv and |dS| ≤ 2·Dv·P (so Σ_k |dS| ≤ 2·Dv).
private struct AttentionBounds {
    let probs: Double, out: Double, dv: Double, dScores: Double, dq: Double, dk: Double
    init(_ s: AttentionShape, scale: Double, logitMagnitude: Double? = nil, logitTerms: Int? = nil) {
        let u = unitRoundoff
        let tq = Double(s.queries), tk = Double(s.keys), dh = Double(logitTerms ?? s.headDim), dvd = Double(s.valueDim)
        let lMag = logitMagnitude ?? scale * Double(s.headDim)
        let eL = dh == 0 ? 0 : 2 * (dh + 1) * u * lMag + 2 * u * lMag   // the dot product, and the scale's rounding
        let eP = 2 * eL + 2 * (tk + 4) * u + 4 * u              // relative to p, so absolute too (p ≤ 1)
        probs = eP
        out = eP + 2 * (tk + 1) * u
        // The backward runs from the same (CPU) probabilities on both sides.
        dv = 2 * (tq + 1) * u * tq
        let eDP = 2 * (dvd + 1) * u * dvd
        let eSum = eDP + 2 * (tk + 1) * u * dvd
        dScores = eDP + eSum + 8 * u * dvd
        dq = scale * (tk * dScores + 2 * (tk + 2) * u * 2 * dvd)
        dk = scale * (tq * dScores + 2 * (tq + 2) * u * 2 * dvd * tq)
    }
}

/// SplitMix64: reproducible inputs without the device's random kernels.
private struct TestRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [−1, 1), 24 random bits.
    mutating func floats(_ n: Int) -> [Float] {
        (0..<n).map { _ in Float(Int64(next() >> 40) - (1 << 23)) / Float(1 << 23) }
    }
}

/// The same bytes on the CPU (index 0) and on the emulated CUDA device (index 1).
private struct Twin {
    let buffers: [Buffer]
    let byteCount: Int
    subscript(side: Int) -> Buffer { buffers[side] }

    init<T>(_ values: [T], _ dtype: DType = .float32) {
        byteCount = values.count * MemoryLayout<T>.stride
        buffers = [Device.cpu, EmulatedCUDA.device].map { device in
            let b = Buffer(storage: Storage(byteCount: values.count * MemoryLayout<T>.stride, device: device), offset: 0, dtype: dtype)
            values.withUnsafeBytes { raw in
                if let base = raw.baseAddress { device.backend.copyFromHost(base, to: b, byteCount: raw.count) }
            }
            return b
        }
    }

    /// Uninitialised on both sides (every element is written by the kernels under test).
    init(bytes: Int, _ dtype: DType) {
        byteCount = bytes
        buffers = [Device.cpu, EmulatedCUDA.device].map {
            Buffer(storage: Storage(byteCount: bytes, device: $0), offset: 0, dtype: dtype)
        }
    }

    private func read<T>(_ side: Int, _: T.Type) -> [T] {
        let n = byteCount / MemoryLayout<T>.stride, b = buffers[side]
        return [T](unsafeUninitializedCapacity: n) { p, count in
            if n > 0 { b.storage.backend.copyToHost(b, UnsafeMutableRawPointer(p.baseAddress!), byteCount: n * MemoryLayout<T>.stride) }
            count = n
        }
    }

    /// (cpu, gpu) as float32.
    func floats() -> ([Float], [Float]) { (read(0, Float.self), read(1, Float.self)) }
    func bytes() -> ([UInt8], [UInt8]) { (read(0, UInt8.self), read(1, UInt8.self)) }
}

/// Bit for bit, NaN matching NaN.
private func expectBitwise(_ got: [Float], _ want: [Float], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.count == want.count, "\(what): \(got.count) vs \(want.count) elements", sourceLocation: sourceLocation)
    let bad = zip(got, want).enumerated().first { _, p in
        !(p.0.bitPattern == p.1.bitPattern || (p.0.isNaN && p.1.isNaN))
    }
    #expect(bad == nil, "\(what): element \(bad?.offset ?? -1): \(bad?.element.0 ?? 0) vs CPU \(bad?.element.1 ?? 0)",
            sourceLocation: sourceLocation)
}

/// |got − want| ≤ bound elementwise (NaN only against NaN), reporting the worst element relative to its bound.
private func expectWithin(_ got: [Float], _ want: [Float], _ bound: [Double], _ what: String,
                          sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.count == want.count && want.count == bound.count, "\(what): sizes", sourceLocation: sourceLocation)
    var worst = -1, worstExcess = 0.0
    for i in 0..<Swift.min(got.count, want.count, bound.count) {
        if got[i].isNaN || want[i].isNaN {
            if !(got[i].isNaN && want[i].isNaN) { worst = i; worstExcess = .infinity; break }
            continue
        }
        let d = Swift.abs(Double(got[i]) - Double(want[i]))
        if d > bound[i] && d - bound[i] > worstExcess { worst = i; worstExcess = d - bound[i] }
    }
    #expect(worst < 0, "\(what): element \(worst): \(worst < 0 ? 0 : got[worst]) vs CPU \(worst < 0 ? 0 : want[worst]), bound \(worst < 0 ? 0 : bound[worst])",
            sourceLocation: sourceLocation)
}
