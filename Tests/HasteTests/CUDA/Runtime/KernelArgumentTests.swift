import Testing
@testable import HasteCUDA

/// cuLaunchKernel's kernelParams: entry i points at argument i's value in its C type, each in its own aligned slot.
@Test func kernelArgumentsAreMarshalledOnePointerPerValueInItsCType() {
    let arguments: [KernelArgument] = [.pointer(0x7f00_1234_5678_9abc), .int32(-7), .int64(-5_000_000_000), .uint64(UInt64.max - 1),
                                       .float(-1.5), .double(0.1), .int32(Int32.max)]
    KernelArgumentPack.withParameters(arguments) { params in
        let p = (0..<arguments.count).map { params[$0]! }
        #expect(p.allSatisfy { Int(bitPattern: $0) % 8 == 0 })
        #expect(Set(p.map { Int(bitPattern: $0) }).count == arguments.count)
        #expect(p[0].load(as: UInt64.self) == 0x7f00_1234_5678_9abc)
        #expect(p[1].load(as: Int32.self) == -7)
        #expect(p[2].load(as: Int64.self) == -5_000_000_000)
        #expect(p[3].load(as: UInt64.self) == UInt64.max - 1)
        #expect(p[4].load(as: Float.self) == -1.5)
        #expect(p[5].load(as: Double.self) == 0.1)
        #expect(p[6].load(as: Int32.self) == Int32.max)
    }
    #expect(arguments.map(KernelArgumentPack.size) == [8, 4, 8, 8, 4, 8, 4])
    let empty: Int = KernelArgumentPack.withParameters([]) { _ in 1 }
    #expect(empty == 1)
}
