import Testing
@testable import HasteTensor

/// haste shortens OpenBLAS's idle spin at start-up (`CPUBackend.setThreads`): the pool restarts with the new
/// timeout and GEMMs stay exact. (The default-exponent choice is a benchmark, README "Benchmarks", not a test.)
@Test func openBLASSpinIsShortenedAndGemmsStillWork() throws {
    guard !OpenBLASSpin.userSet else { return }                 // OPENBLAS_THREAD_TIMEOUT set: the user's
    CPUBackend.setThreads(Parallel.threads)
    guard let current = OpenBLASSpin.current else { return }   // a BLAS without the query keeps its own
    #expect(current == OpenBLASSpin.defaultExponent)
    let a = Tensor.randn([64, 48], dtype: .float64, seed: 5), b = Tensor.randn([48, 80], dtype: .float64, seed: 6)
    let before = a.matmul(b).scalars(as: Double.self)
    #expect(OpenBLASSpin.configure(exponent: 12) == 12)
    #expect(a.matmul(b).scalars(as: Double.self) == before)          // same GEMM after the pool restarted
    #expect(OpenBLASSpin.configure() == OpenBLASSpin.defaultExponent)
    #expect(a.matmul(b).scalars(as: Double.self) == before)
}
