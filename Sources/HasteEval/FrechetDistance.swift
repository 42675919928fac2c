import CLAPACKE
import COpenBLAS
import HasteTensor

/// The Fréchet distance between two Gaussians fitted to features (FID, sFID; spec/evaluation.md §2.3):
/// |μ1 − μ2|² + tr S1 + tr S2 − 2·tr √(S1·S2).
/// **[robust]** tr √(S1·S2) = Σ √max(λᵢ, 0) with λ the eigenvalues of the symmetric R·S2·R, R = S1^½ from
/// S1's eigendecomposition (LAPACK dsyevd, eigenvalues clamped at 0), all in float64. S1·S2 is similar to R·S2·R, so this equals the
/// trace of scipy's `sqrtm(S1 @ S2)` that ADM takes, without its complex round-off or singular-matrix retries.
public enum FrechetDistance {
    public static func compute(_ a: FeatureStatistics, _ b: FeatureStatistics) throws -> Double {
        guard a.dimension == b.dimension else {
            throw HasteError.unsupported("Fréchet distance: statistics of \(a.dimension)-d and \(b.dimension)-d features "
                + "(were they computed by the same network and layer?)")
        }
        guard (a.mean + b.mean + a.covariance + b.covariance).allSatisfy(\.isFinite) else {
            throw HasteError.unsupported("Fréchet distance: the statistics contain NaN or infinity (non-finite features?)")
        }
        let d = a.dimension
        let meanTerm = zip(a.mean, b.mean).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        // S1 = V·W·Vᵀ, R = V·√W·Vᵀ, so R·S2·R = V·(√W·(Vᵀ·S2·V)·√W)·Vᵀ: the inner symmetric matrix has the same
        // eigenvalues, and R is never formed (two d³ GEMMs instead of three).
        var v = a.covariance
        let w = try eigen(&v, d, vectors: true)                                     // v: eigenvectors in columns
        let root = w.map { max($0, 0).squareRoot() }
        var t = [Double](repeating: 0, count: d * d), m = [Double](repeating: 0, count: d * d)
        CPUBackend.withGemmMutex {
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(d), Int32(d), Int32(d), 1, v, Int32(d),
                        b.covariance, Int32(d), 0, &t, Int32(d))                   // Vᵀ·S2
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(d), Int32(d), Int32(d), 1, t, Int32(d),
                        v, Int32(d), 0, &m, Int32(d))                              // Vᵀ·S2·V
        }
        for i in 0..<d {                                                           // √W·(…)·√W, symmetrised
            for j in i..<d {
                let s = 0.5 * (m[i * d + j] + m[j * d + i]) * root[i] * root[j]
                m[i * d + j] = s; m[j * d + i] = s
            }
        }
        let lambda = try eigen(&m, d, vectors: false)
        let traceSqrt = lambda.reduce(0.0) { $0 + max($1, 0).squareRoot() }
        return meanTerm + a.trace + b.trace - 2 * traceSqrt
    }

    /// Eigenvalues (ascending) of the symmetric row-major `a` [d, d] by LAPACK dsyevd (upper triangle read);
    /// with `vectors`, `a` is overwritten by the eigenvectors as columns.
    static func eigen(_ a: inout [Double], _ d: Int, vectors: Bool) throws -> [Double] {
        var w = [Double](repeating: 0, count: d)
        guard d > 0 else { return w }
        let info = CPUBackend.withGemmMutex {
            LAPACKE_dsyevd(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: vectors ? "V" : "N")), CChar(UInt8(ascii: "U")),
                           Int32(d), &a, Int32(d), &w)
        }
        guard info == 0 else {
            throw HasteError.unsupported("Fréchet distance: LAPACK dsyevd failed (info \(info)) on a \(d)×\(d) covariance")
        }
        return w
    }
}
