import COpenBLAS
import HasteTensor

/// Improved precision and recall (Kynkäänniemi et al. 2019) as ADM's `ManifoldEstimator` computes them
/// (spec/evaluation.md §2.3), k = 3: a point's radius is its (k+1)-th smallest squared distance within its
/// own set (itself at distance 0 included) = the distance to its k-th nearest neighbour;
/// precision = fraction of samples within some reference point's radius, recall = fraction of reference
/// points within some sample's radius. Squared distances max(|u|² − 2u·v + |v|², 0) in float32 (**[robust]**:
/// ADM tries float16 first), the dot products by BLAS sgemm in blocks.
public enum PrecisionRecall {
    public static let neighbourhood = 3
    /// Rows × columns of one distance block (ADM: 10 000 × 10 000; smaller here to bound memory).
    static let defaultBlock = 2048

    /// reference [R, D], samples [S, D] float features → (precision, recall).
    public static func compute(reference: Tensor, samples: Tensor, k: Int = neighbourhood) -> (precision: Double, recall: Double) {
        compute(reference: reference, samples: samples, k: k, block: defaultBlock)
    }

    static func compute(reference: Tensor, samples: Tensor, k: Int, block: Int) -> (precision: Double, recall: Double) {
        require(reference.rank == 2 && samples.rank == 2 && reference.shape[1] == samples.shape[1],
                "PrecisionRecall: reference \(reference.shape) and samples \(samples.shape) must be [n, D] with one D")
        require(reference.shape[0] > k && samples.shape[0] > k,
                "PrecisionRecall: k = \(k) needs more than \(k) points per set, got \(reference.shape[0]) and \(samples.shape[0])")
        let ref = Points(reference), gen = Points(samples)
        let refRadii = radii(ref, k: k, block: block), genRadii = radii(gen, k: k, block: block)
        var genInside = [Bool](repeating: false, count: gen.count), refInside = [Bool](repeating: false, count: ref.count)
        forEachBlock(ref, gen, block: block) { rows, cols, d in
            for (bi, i) in rows.enumerated() {
                for (bj, j) in cols.enumerated() {
                    let v = d[bi * cols.count + bj]
                    if v <= refRadii[i] { genInside[j] = true }
                    if v <= genRadii[j] { refInside[i] = true }
                }
            }
        }
        func fraction(_ flags: [Bool]) -> Double { Double(flags.filter { $0 }.count) / Double(flags.count) }
        return (fraction(genInside), fraction(refInside))
    }

    /// The (k+1)-th smallest squared distance of every point to the points of its own set.
    static func radii(_ p: Points, k: Int, block: Int = defaultBlock) -> [Float] {
        var smallest = [[Float]](repeating: [], count: p.count)        // ascending, at most k + 1 entries
        forEachBlock(p, p, block: block) { rows, cols, d in
            for (bi, i) in rows.enumerated() {
                var best = smallest[i]
                for bj in 0..<cols.count {
                    let v = d[bi * cols.count + bj]
                    if best.count <= k || v < best[k] {
                        best.insert(v, at: best.firstIndex(where: { $0 > v }) ?? best.count)
                        if best.count > k + 1 { best.removeLast() }
                    }
                }
                smallest[i] = best
            }
        }
        return smallest.map { $0[k] }
    }

    /// Calls `body(rows, cols, d)` with d [rows.count, cols.count] the squared distances of block pairs.
    static func forEachBlock(_ a: Points, _ b: Points, block: Int, _ body: (Range<Int>, Range<Int>, [Float]) -> Void) {
        let dim = a.dimension
        var d = [Float](repeating: 0, count: block * block)
        for r0 in stride(from: 0, to: a.count, by: block) {
            let rows = r0..<min(r0 + block, a.count)
            for c0 in stride(from: 0, to: b.count, by: block) {
                let cols = c0..<min(c0 + block, b.count)
                a.values.withUnsafeBufferPointer { av in
                    b.values.withUnsafeBufferPointer { bv in      // d = A·Bᵀ
                        CPUBackend.withGemmMutex {
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows.count), Int32(cols.count), Int32(dim), 1,
                                        av.baseAddress! + r0 * dim, Int32(dim), bv.baseAddress! + c0 * dim, Int32(dim), 0, &d, Int32(cols.count))
                        }
                    }
                }
                for (bi, i) in rows.enumerated() {
                    for (bj, j) in cols.enumerated() {
                        d[bi * cols.count + bj] = max(a.squaredNorms[i] - 2 * d[bi * cols.count + bj] + b.squaredNorms[j], 0)
                    }
                }
                body(rows, cols, d)
            }
        }
    }

    /// Row-major float32 points with their squared norms.
    struct Points {
        let values: [Float], squaredNorms: [Float], count: Int, dimension: Int
        init(_ t: Tensor) {
            count = t.shape[0]; dimension = t.shape[1]
            values = t.to(.cpu).to(.float32).scalars(as: Float.self)
            let (v, d) = (values, dimension)
            squaredNorms = (0..<count).map { i in (0..<d).reduce(Float(0)) { $0 + v[i * d + $1] * v[i * d + $1] } }
        }
    }
}
