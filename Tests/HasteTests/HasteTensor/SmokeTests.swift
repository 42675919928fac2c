import Testing
@testable import HasteTensor

@Test func addBroadcastsAndBackpropagates() {
    let a = Tensor([1.0, 2, 3, 4, 5, 6], shape: [2, 3])
    let b = Tensor([10.0, 20, 30], shape: [3])
    a.requiresGrad = true; b.requiresGrad = true
    let y = (a * b).sum()
    #expect(y.item() == 10 + 40 + 90 + 40 + 100 + 180)
    y.backward()
    #expect(a.grad!.scalars(as: Double.self) == [10, 20, 30, 10, 20, 30])
    #expect(b.grad!.scalars(as: Double.self) == [5, 7, 9])
}
