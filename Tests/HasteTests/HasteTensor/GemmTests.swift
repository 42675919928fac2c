import Testing
import HasteTensor

/// Batched small GEMMs run items in parallel on single-threaded BLAS; results must not depend on that.
@Test func batchedMatmulIsIdenticalWhateverTheThreadCount() {
    let a = Tensor.randn([5, 3, 37, 19], seed: 1), b = Tensor.randn([5, 3, 19, 23], seed: 2)
    CPUBackend.setThreads(1)
    let serial = a.matmul(b).scalars(as: Float.self)
    CPUBackend.setThreads(2)
    let parallel = a.matmul(b).scalars(as: Float.self)
    #expect(serial == parallel)
    // And the parallel path agrees with float64.
    expectClose(a.matmul(b), a.to(.float64).matmul(b.to(.float64)), atol: 1e-5, rtol: 1e-5, "batched matmul")
}
