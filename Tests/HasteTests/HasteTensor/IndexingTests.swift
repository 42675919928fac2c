import Foundation
import Testing
@testable import HasteTensor

/// Cases of Scripts/fixtures/movement.py (`indexing`); tolerances as described at `MovementCase`.
let indexingCases: [MovementCase] = [
    ("index_select_i64", 1e-6, { [$0[0].indexSelect(axis: 1, indices: $0[1])] }),
    ("index_select_i32", 1e-6, { [$0[0].transposed(0, 2).indexSelect(axis: -1, indices: $0[1])] }),
    ("index_select_axis0", 1e-6, { [$0[0].indexSelect(axis: 0, indices: $0[1])] }),
    ("where", 1e-6, { [Tensor.where_($0[0], $0[1], $0[2])] }),
    ("where_same", 0, { [Tensor.where_($0[0], $0[1], $0[2])] }),
    ("slice", 0, { [$0[0][axis: 1, 2..<6]] }),
    ("select", 0, { [$0[0].select(axis: 1, index: -2)] }),
    ("select_first", 0, { [$0[0].transposed(0, 1).select(axis: 0, index: 1)] }),
    ("greater", 0, { [$0[0].greater(0.3)] }),
    ("less", 0, { [$0[0].less(-0.2)] }),
]

@Test(arguments: indexingCases.map(\.name))
func indexingMatchesPyTorch(_ name: String) throws {
    try checkAgainstPyTorch("indexing.safetensors", movementCase(indexingCases, name))
}

@Test(arguments: indexingCases.map(\.name).filter { $0 != "greater" && $0 != "less" })
func indexingGradcheck(_ name: String) throws {
    try gradcheckCase("indexing.safetensors", movementCase(indexingCases, name))
}

@Test func indexSelectGathersIntegersAndAccumulatesRepeats() {
    let labels = Tensor([Int64(10), 11, 12, 13], shape: [4])
    #expect(labels.indexSelect(axis: 0, indices: Tensor([Int32(3), 0, 3], shape: [3])).scalars(as: Int64.self) == [13, 10, 13])
    let x = Tensor([1.0, 2, 3], shape: [3])
    x.requiresGrad = true
    let y = x.indexSelect(axis: 0, indices: Tensor([Int64(2), 2, 0, 2], shape: [4]))
    y.backward(Tensor([1.0, 10, 100, 1000], shape: [4]))
    #expect(x.grad!.scalars(as: Double.self) == [100, 0, 1011])
}

@Test func whereBroadcastsAConditionAgainstScalars() {
    let cond = Tensor([1.0, -1, 2], shape: [3, 1]).greater(0)
    let y = Tensor.where_(cond, Tensor.full([2], 5, dtype: .float64), Tensor.zeros([], dtype: .float64))
    #expect(y.shape == [3, 2])
    #expect(y.scalars(as: Double.self) == [5, 5, 0, 0, 5, 5])
}

@Test func comparisonsAcceptIntegersAndGiveNoGradient() {
    let x = Tensor([Int64(-2), 0, 3], shape: [3])
    #expect(x.greater(0).scalars(as: Bool.self) == [false, false, true])
    #expect(x.less(0).scalars(as: Bool.self) == [true, false, false])
    let f = Tensor.randn([4], seed: 2)
    f.requiresGrad = true
    #expect(f.greater(0).isTracked == false)
}

@Test func indexSelectTrapsOnOutOfRangeIndex() async {
    let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([2, 7]).indexSelect(axis: 1, indices: Tensor([Int64(1), 7], shape: [2]))
    }
    let message = trapMessage(result)
    #expect(message.contains("index_select: index 7 at position 1 is out of range [0, 7)"), "\(message)")
}
