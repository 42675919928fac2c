/// Accurate row statistics for the norm kernels and `rowSum`, with PyTorch's structure (ATen
/// `RowwiseMomentsImpl`, `cascade_sum`): a row is cut into blocks of 16 SIMD16 vectors (256 values, in L1);
/// each block's per-lane moments are exact to rounding (two passes over the block: its mean, then the sum of
/// squared deviations from it — at least as accurate as ATen's in-block Welford, and two independent
/// accumulators keep the add latency hidden); blocks are merged by Chan's formula in a binary-counter cascade,
/// so every value passes through O(log₂ blocks) merges instead of a running sum of n/16 terms per lane.
/// Unlike E[x²] − E[x]² (even shifted by one sample), nothing cancels when the mean is large against the spread
/// (VAE GroupNorm rows: 262 144 values of mean ~100, std ~1). Everything is relative to the row's first value,
/// as the old shifted sums were, so means round on the scale of the spread. The order is fixed by n (STYLE R13).

/// Per-lane moments of a run: values per lane `n`, mean of x − shift (the row's first value: means and merges
/// then round on the scale of the spread, not of the offset), and M2 = Σ (x − mean)².
struct LaneMoments<T: KernelFloat> {
    var n: T, mean: SIMD16<T>, m2: SIMD16<T>

    /// Chan et al.'s pairwise update: the moments of the union of two disjoint runs.
    @inline(__always)
    func merged(_ b: LaneMoments<T>) -> LaneMoments<T> {
        let n = self.n + b.n, c = b.n / n, d = b.mean - mean
        return LaneMoments(n: n, mean: mean + d * c, m2: m2 + b.m2 + d * d * (self.n * c))
    }
}

/// Moments of x − shift over k ≤ 16 consecutive vectors at p (per lane): two passes over data in L1.
@inline(__always)
func blockMoments<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ k: Int, _ shift: SIMD16<T>) -> LaneMoments<T> {
    let zero = SIMD16<T>(repeating: 0)
    var s0 = zero, s1 = zero, j = 0
    while j + 2 <= k { s0 += loadSIMD16(p, 16 * j) - shift; s1 += loadSIMD16(p, 16 * j + 16) - shift; j += 2 }
    if j < k { s0 += loadSIMD16(p, 16 * j) - shift }
    let mean = (s0 + s1) * (1 / T(k))
    // Deviations from the block mean rounded to x's scale: off by ulp(x)/2 at most, which adds only
    // k·(that)² to M2 (relative (ulp(x)/σ)², negligible), and each x − centre is exact for nearby values.
    let centre = mean + shift
    var q0 = zero, q1 = zero
    j = 0
    while j + 2 <= k {
        let d0 = loadSIMD16(p, 16 * j) - centre, d1 = loadSIMD16(p, 16 * j + 16) - centre
        q0 += d0 * d0                    // not addProduct: a libm fma call per lane without an FMA target
        q1 += d1 * d1
        j += 2
    }
    if j < k { let d = loadSIMD16(p, 16 * j) - centre; q0 += d * d }
    return LaneMoments(n: T(k), mean: mean, m2: q0 + q1)
}

/// Folds `blocks` values through a binary-counter stack (block b merges with its neighbours as b + 1 gains
/// trailing zero bits), then the leftovers from the newest down: pairwise summation's error growth.
@inline(__always)
func cascade<V>(_ blocks: Int, _ block: (Int) -> V, _ combine: (V, V) -> V) -> V? {
    guard blocks > 0 else { return nil }
    return withUnsafeTemporaryAllocation(of: V.self, capacity: Int.bitWidth) { stack in
        var top = 0
        for b in 0..<blocks {
            var v = block(b), k = b + 1
            while k & 1 == 0 { top -= 1; v = combine(stack[top], v); k >>= 1 }
            stack.baseAddress!.advanced(by: top).initialize(to: v)
            top += 1
        }
        var v = stack[top - 1]
        for i in stride(from: top - 2, through: 0, by: -1) { v = combine(stack[i], v) }
        return v
    }
}

/// (mean, biased variance) of p[0..<n], n ≥ 1.
@inline(__always)
func rowMoments<T: KernelFloat>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> (mean: T, variance: T) {
    let vectors = n / 16, full = vectors / 16, rest = vectors % 16
    let shift = p[0], sv = SIMD16<T>(repeating: shift)
    var lanes = cascade(full, { blockMoments(p + 256 * $0, 16, sv) }, { $0.merged($1) })
    if rest > 0 {
        let b = blockMoments(p + 256 * full, rest, sv)
        lanes = lanes.map { $0.merged(b) } ?? b
    }
    var count = T(0), mean = T(0), m2 = T(0)
    if let l = lanes {
        // The 16 lanes hold equal counts: halve 16 → 8 → 4 → 2 → 1 (equal-count merge, no division).
        var n8 = l.n
        let (m8, q8) = foldHalves(l.mean.lowHalf, l.mean.highHalf, l.m2.lowHalf, l.m2.highHalf, &n8)
        let (m4, q4) = foldHalves(m8.lowHalf, m8.highHalf, q8.lowHalf, q8.highHalf, &n8)
        let (m2v, q2) = foldHalves(m4.lowHalf, m4.highHalf, q4.lowHalf, q4.highHalf, &n8)
        let d = m2v[1] - m2v[0]
        count = 2 * n8
        mean = (m2v[0] + m2v[1]) * (1 / 2 as T)
        m2 = q2[0] + q2[1] + d * d * (n8 * (1 / 2 as T))
    }
    let tail = n - 16 * vectors
    if tail > 0 {
        // Two passes over the < 16 trailing values, then one Chan merge.
        let t = p + 16 * vectors
        var s = T(0)
        for i in 0..<tail { s += t[i] - shift }
        let tm = s / T(tail), centre = tm + shift
        var tq = T(0)
        for i in 0..<tail { let d = t[i] - centre; tq += d * d }
        let total = count + T(tail), c = T(tail) / total, d = tm - mean
        mean += d * c
        m2 += tq + d * d * (count * c)
        count = total
    }
    return (shift + mean, Swift.max(0, m2 / count))
}

/// Merges lanes i and i + half of two equal-count halves; `n` (per lane) doubles.
@inline(__always)
private func foldHalves<V: SIMD>(_ ma: V, _ mb: V, _ qa: V, _ qb: V, _ n: inout V.Scalar) -> (V, V)
where V.Scalar: FloatingPoint {
    let d = mb - ma, half = n / 2
    n += n
    return ((ma + mb) * (1 / 2 as V.Scalar), qa + qb + d * d * half)
}

/// Σ p[0..<n]: 16 lanes per block of 256 values, blocks cascaded, lanes then tail added in a fixed order.
@inline(__always)
func rowSum<T: BinaryFloatingPoint & SIMDScalar>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> T {
    let raw = UnsafeRawPointer(p), stride = MemoryLayout<T>.stride
    func block(_ start: Int, _ k: Int) -> SIMD16<T> {
        var acc = SIMD16<T>(repeating: 0)
        for j in 0..<k { acc += raw.loadUnaligned(fromByteOffset: (start + 16 * j) * stride, as: SIMD16<T>.self) }
        return acc
    }
    let vectors = n / 16, full = vectors / 16, rest = vectors % 16
    var acc = cascade(full, { block(256 * $0, 16) }, { $0 + $1 }) ?? SIMD16<T>(repeating: 0)
    if rest > 0 { acc += block(256 * full, rest) }
    var s = acc.sum()
    for i in 16 * vectors..<n { s += p[i] }
    return s
}
