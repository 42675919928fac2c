import Testing
import HasteTensor

/// Every op that takes several tensors requires them on one device and says which is where (STYLE R3): on a real
/// GPU a host pointer handed to a kernel would crash it or read garbage. `HostAsCUDA` (cuda:1) stands for the GPU.

private func onDevice(_ t: Tensor) -> Tensor { t.to(HostAsCUDA.device) }

@Test func opsTrapWhenOperandsAreOnDifferentDevices() async {
    let linear = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = onDevice(Tensor.zeros([2, 3])).linear(Tensor.zeros([4, 3]), onDevice(Tensor.zeros([4])))
    }
    #expect(trapMessage(linear).contains("linear: input on cuda:1, weight on cpu, bias on cuda:1"), "\(trapMessage(linear))")
    let linearBias = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = onDevice(Tensor.zeros([2, 3])).linear(onDevice(Tensor.zeros([4, 3])), Tensor.zeros([4]))
    }
    #expect(trapMessage(linearBias).contains("linear: input on cuda:1, weight on cuda:1, bias on cpu"))
    let add = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = onDevice(Tensor.zeros([2, 3])) + Tensor.zeros([3])
    }
    #expect(trapMessage(add).contains("add: operands on cuda:1 and cpu"))
    let matmul = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.zeros([2, 3]).matmul(onDevice(Tensor.zeros([3, 2])))
    }
    #expect(trapMessage(matmul).contains("matmul: operands on cpu and cuda:1"))
    let accumulate = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        onDevice(Tensor.zeros([3])).addInPlace(Tensor.ones([3]))
    }
    #expect(trapMessage(accumulate).contains("addInPlace: [3] on cpu into [3] on cuda:1"))
    let backward = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        let x = onDevice(Tensor.ones([3]))
        x.requiresGrad = true
        (x * x).backward(Tensor.ones([3]))
    }
    #expect(trapMessage(backward).contains("backward: gradient on cpu, tensor on cuda:1"))
    let cat = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.cat([onDevice(Tensor.zeros([1])), Tensor.zeros([1])], axis: 0)
    }
    #expect(trapMessage(cat).contains("cat: tensors on [cuda:1, cpu]"))
    let embedding = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
        _ = Tensor.embedding(onDevice(Tensor.zeros([4, 2])), Tensor([Int64(1)], shape: [1]))
    }
    #expect(trapMessage(embedding).contains("embedding: weight on cuda:1, indices on cpu"))
}
