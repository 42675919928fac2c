import Testing
import HasteTensor

/// Batched small GEMMs run items in parallel on single-threaded BLAS; results must not depend on that: each item equals
/// the same product computed alone (a batch of one runs serially). The thread count is not changed here: it is
/// process-wide, and tests run concurrently.
@Test func batchedMatmulIsIdenticalWhateverTheThreadCount() {
    let a = Tensor.randn([5, 3, 37, 19], seed: 1), b = Tensor.randn([5, 3, 19, 23], seed: 2)
    let parallel = a.matmul(b).scalars(as: Float.self)
    var serial: [Float] = []
    for i in 0..<5 { for j in 0..<3 {
        serial += a.select(axis: 0, index: i).select(axis: 0, index: j).matmul(b.select(axis: 0, index: i).select(axis: 0, index: j)).scalars(as: Float.self)
    } }
    #expect(serial == parallel)
    // And the parallel path agrees with float64.
    expectClose(a.matmul(b), a.to(.float64).matmul(b.to(.float64)), atol: 1e-5, rtol: 1e-5, "batched matmul")
}
