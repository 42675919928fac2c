import Foundation
import Testing
@testable import HasteTensor

/// F.embedding fixtures (Scripts/fixtures/movement.py `embedding`): the lookup is exact; the weight
/// gradient adds repeated rows, 1e-6 absolute + relative (float32 summation order).
let embeddingCases: [MovementCase] = [
    ("embedding_i64", 1e-6, { [Tensor.embedding($0[0], $0[1])] }),
    ("embedding_i32", 1e-6, { [Tensor.embedding($0[0], $0[1])] }),
]

@Test(arguments: embeddingCases.map(\.name))
func embeddingMatchesPyTorch(_ name: String) throws {
    try checkAgainstPyTorch("embedding.safetensors", movementCase(embeddingCases, name))
}

@Test(arguments: embeddingCases.map(\.name))
func embeddingGradcheck(_ name: String) throws {
    try gradcheckCase("embedding.safetensors", movementCase(embeddingCases, name))
}

/// Enough columns for several parallel chunks; the gradient must equal a serial loop over the indices in
/// order, bit for bit, whatever the thread count.
@Test func embeddingGradientIsDeterministic() {
    let (rows, dim, count) = (7, 100, 1000)
    let idx = (0..<count).map { Int64(($0 * 5 + $0 / 3) % rows) }
    let w = Tensor.randn([rows, dim], seed: 3)
    w.requiresGrad = true
    let dy = Tensor.randn([count, dim], seed: 4)
    let g = gradients(of: Tensor.embedding(w, Tensor(idx, shape: [count])), wrt: [w], seed: dy)[0]!.scalars(as: Float.self)
    let d = dy.scalars(as: Float.self)
    var expected = [Float](repeating: 0, count: rows * dim)
    for n in 0..<count { for c in 0..<dim { expected[Int(idx[n]) * dim + c] += d[n * dim + c] } }
    #expect(g == expected)
}

@Test func embeddingKeepsIndexShape() {
    let w = Tensor((0..<12).map(Double.init), shape: [4, 3])
    let y = Tensor.embedding(w, Tensor([Int32(3), 0, 3, 1], shape: [2, 1, 2]))
    #expect(y.shape == [2, 1, 2, 3])
    #expect(y.scalars(as: Double.self) == [9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5])
}

@Test func embeddingTrapsOnOutOfRangeIndex() async {
    let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.embedding(Tensor.zeros([4, 3]), Tensor([Int64(1), 4], shape: [2]))
    }
    let message = trapMessage(result)
    #expect(message.contains("embedding: index 4 at position 1 is out of range [0, 4) for a table of V = 4 rows"),
            "\(message)")
}
