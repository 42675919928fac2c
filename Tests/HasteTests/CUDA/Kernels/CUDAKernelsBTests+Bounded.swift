import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The kernB kernels whose results differ from the CPU's in rounding: LayerNorm, attention, bicubic resampling.
extension CUDAKernelsBTests {
    // MARK: LayerNorm

    @Test(arguments: [(7, 37), (70, 259)])
    func layerNormMatchesCPU(rows: Int, cols: Int) {
        var rng = TestRNG(seed: UInt64(rows * 1000 + cols))
        // x = 3 + U(−1, 1): an offset mean, where one-pass moments lose digits and two-pass ones do not.
        let c = LayerNormCase(rows: rows, cols: cols, x: rng.floats(rows * cols).map { 3 + $0 }, w: rng.floats(cols),
                              b: rng.floats(cols), dy: rng.floats(rows * cols))
        for (hasW, hasB) in [(false, false), (true, false), (false, true), (true, true)] {
            let (mean, rstd) = c.checkForward(hasW: hasW, hasB: hasB)
            if hasB { continue }   // the backward does not read the bias
            for (wantDW, wantDB) in [(true, true), (false, true), (true, false), (false, false)] {
                c.checkBackward(hasW: hasW, mean: mean, rstd: rstd, wantDW: wantDW, wantDB: wantDB)
            }
        }
    }

    // MARK: attention

    /// Tq ≠ Tk, Dh ≠ Dv; the second shape has rows longer than a block (Tk > 256 threads).
    @Test(arguments: [true, false], [AttentionShape(batch: 3, queries: 5, keys: 7, headDim: 4, valueDim: 6),
                                     AttentionShape(batch: 2, queries: 3, keys: 300, headDim: 5, valueDim: 2)])
    func attentionMatchesCPU(keepProbs: Bool, s: AttentionShape) {
        var rng = TestRNG(seed: (keepProbs ? 31 : 32) + UInt64(s.keys))
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
        Check.within(gotOut, wantOut, wantOut.map { _ in e.out }, "attention out")
        guard keepProbs else { return }
        let (wantP, gotP) = probs.floats()
        Check.within(gotP, wantP, wantP.map { _ in e.probs }, "attention probs")

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
                    Check.within(got, want, want.map { _ in bound }, "attention \(name)")
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
        Check.within(gotP, wantP, wantP.map { _ in e.probs }, "softmaxMatmul probs")
        Check.within(gotOut, wantOut, wantOut.map { _ in e.out }, "softmaxMatmul out")
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
                    Check.within(got, want, want.map { _ in bound }, "softmaxMatmul \(name)")
                } else {
                    #expect(got.allSatisfy { $0.isNaN }, "softmaxMatmul \(name) not wanted, not written")
                }
            }
        }
    }

    @Test(arguments: [(5, 9), (13, 4), (8, 4), (6, 6)])
    func resampleMatchesCPU(inSize: Int, outSize: Int) {
        var rng = TestRNG(seed: UInt64(inSize * 100 + outSize))
        let outer = 2, inner = 3, u = Check.u
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
            Check.within(gotY, wantY, yBound, "resample \(filter) \(inSize)→\(outSize)")
            Check.within(gotDX, wantDX, dxBound, "resample backward \(filter) \(inSize)→\(outSize)")
        }
    }
}

extension CUDAKernelsBTests {
    /// One LayerNorm input and its checks on both backends.
    struct LayerNormCase {
        let rows: Int, cols: Int, x: [Float], w: [Float], b: [Float], dy: [Float]

        /// Forward on both sides; returns the CPU's saved mean and rstd.
        func checkForward(hasW: Bool, hasB: Bool) -> ([Float], [Float]) {
            let u = Check.u, n = Double(cols)
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
            Check.within(gotMean, wantMean, wantMean.map { _ in eMean }, "layerNorm mean")
            Check.within(gotRstd, wantRstd, wantRstd.map { Double($0) * eRstd }, "layerNorm rstd")
            // y = x̂·w + b, x̂ = (x − mean)·rstd: |Δy| ≤ (eMean·rstd + |x̂|·(eRstd + 4u))·|w| + 2u·|b|.
            var bound = [Double](repeating: 0, count: rows * cols)
            for r in 0..<rows {
                for j in 0..<cols {
                    let e = r * cols + j, xh = Swift.abs(Double((x[e] - wantMean[r]) * wantRstd[r]))
                    let ww = hasW ? Double(Swift.abs(w[j])) : 1, bb = hasB ? Double(Swift.abs(b[j])) : 0
                    bound[e] = (eMean * Double(wantRstd[r]) + xh * (eRstd + 4 * u)) * ww + 2 * u * bb
                }
            }
            Check.within(gotY, wantY, bound, "layerNorm y weight \(hasW) bias \(hasB)")
            return (wantMean, wantRstd)
        }

        /// Backward from the same (CPU) statistics on both sides; dweight and dbias start as NaN.
        func checkBackward(hasW: Bool, mean: [Float], rstd: [Float], wantDW: Bool, wantDB: Bool) {
            let u = Check.u, n = Double(cols)
            let tx = Twin(x), tw = Twin(w), tdy = Twin(dy), tm = Twin(mean), tr = Twin(rstd)
            let dx = Twin(bytes: rows * cols * 4, .float32)
            let dw = Twin([Float](repeating: .nan, count: cols)), db = Twin([Float](repeating: .nan, count: cols))
            for (backend, side) in [(CPUBackend.shared as any Backend, 0), (EmulatedCUDA.backend, 1)] {
                backend.layerNormBackward(tx[side], weight: hasW ? tw[side] : nil, mean: tm[side], rstd: tr[side], tdy[side],
                                          dx: dx[side], dweight: wantDW ? dw[side] : nil, dbias: wantDB ? db[side] : nil,
                                          rows: rows, cols: cols)
            }
            // dx = rstd·(g − a − x̂·c), a = mean(g), c = mean(g·x̂): a and c are n-term sums (2(n + 2)·u·mean of
            // |terms| apart), x̂ rounds alike up to 2u, and the final expression adds 4u of its terms.
            var dxBound = [Double](repeating: 0, count: rows * cols)
            var sumDYXh = [Double](repeating: 0, count: cols), sumDY = [Double](repeating: 0, count: cols)
            for r in 0..<rows {
                let xh = (0..<cols).map { Double((x[r * cols + $0] - mean[r]) * rstd[r]) }
                let g = (0..<cols).map { Double(dy[r * cols + $0]) * (hasW ? Double(w[$0]) : 1) }
                let ag = g.reduce(0) { $0 + Swift.abs($1) } / n, agx = zip(g, xh).reduce(0) { $0 + Swift.abs($1.0 * $1.1) } / n
                let a = Swift.abs(g.reduce(0, +) / n), c = Swift.abs(zip(g, xh).reduce(0) { $0 + $1.0 * $1.1 } / n)
                for j in 0..<cols {
                    let ax = Swift.abs(xh[j]), ag1 = Swift.abs(g[j])
                    dxBound[r * cols + j] = Double(rstd[r]) * (2 * (n + 2) * u * (ag + ax * agx) + 2 * u * ax * c
                                                               + 4 * u * (ag1 + a + ax * c))
                    sumDYXh[j] += Swift.abs(Double(dy[r * cols + j]) * xh[j]); sumDY[j] += Swift.abs(Double(dy[r * cols + j]))
                }
            }
            let (wantDX, gotDX) = dx.floats()
            Check.within(gotDX, wantDX, dxBound, "layerNorm dx weight \(hasW)")
            // dweight, dbias: rows-term column sums in different chunkings, 2(rows + 2)·u·Σ|terms|; untouched (NaN
            // stays) when not wanted.
            for (wanted, twin, sums, name) in [(wantDW, dw, sumDYXh, "dweight"), (wantDB, db, sumDY, "dbias")] {
                let (want, got) = twin.floats()
                if wanted {
                    Check.within(got, want, sums.map { 2 * Double(rows + 2) * u * $0 }, "layerNorm \(name)")
                } else {
                    #expect(got.allSatisfy { $0.isNaN }, "layerNorm \(name) not wanted, not written")
                }
            }
        }
    }
}
