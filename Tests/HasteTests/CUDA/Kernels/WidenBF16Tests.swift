import Testing
@testable import HasteTensor
@testable import HasteCUDA
@testable import HasteNN

/// `widenBF16`: several bf16 → float32 casts in as few launches as CUDA can (`cast_bf16_f32_v4_segments`, 8 pairs a
/// launch), the gradients a bf16 node writes into its parameters' arena slots (`bf16Carriers`).
@Suite(.serialized) struct WidenBF16Tests {
    static let (hostOnly, driver) = hostOnlyDevice(23)

    /// (count, source offset in elements): 11 pairs the four-element kernel takes (two launches of up to 8) and two it
    /// cannot (a count not a multiple of 4; a source off its 8-byte alignment), cast alone.
    static let pairs = [(4, 0), (8, 4), (1028, 0), (3, 0), (16, 8), (260, 4), (4, 0), (2048, 0), (12, 1), (400, 0), (4, 4),
                        (64, 0), (8, 0)]

    /// Widens `pairs` on `device` (random finite bf16 values) into one float32 buffer, each destination 16-byte
    /// aligned and followed by 4 sentinel words; returns what the buffer holds and what it should hold.
    static func widen(on device: Device, seed: UInt64) -> (got: [UInt32], want: [UInt32]) {
        var rng = SplitMix64(seed: seed)
        let backend = device.backend, sentinel = Float(-7.25).bitPattern
        var sources: [(bits: [UInt16], buffer: Buffer)] = [], destinations: [(start: Int, count: Int)] = []
        var end = 0
        for (count, offset) in pairs {
            let bits = (0..<(offset + count)).map { _ in UInt16(truncatingIfNeeded: rng.next()) & 0x7f7f }
            let storage = Storage(byteCount: bits.count * 2, device: device)
            bits.withUnsafeBytes { backend.copyFromHost($0.baseAddress!, to: Buffer(storage: storage, offset: 0, dtype: .bfloat16), byteCount: $0.count) }
            sources.append((Array(bits[offset...]), Buffer(storage: storage, offset: offset, dtype: .bfloat16)))
            destinations.append((end, count))
            end += (count + 3) / 4 * 4 + 4
        }
        let arena = Buffer(storage: Storage(byteCount: end * 4, device: device), offset: 0, dtype: .float32)
        var want = [UInt32](repeating: sentinel, count: end)
        want.withUnsafeBytes { backend.copyFromHost($0.baseAddress!, to: arena, byteCount: $0.count) }
        let taken = backend.widenBF16(zip(sources, destinations).map { s, d in
            (s.buffer, Buffer(storage: arena.storage, offset: d.start, dtype: .float32), d.count)
        })
        #expect(taken, "widenBF16 refused bf16 → float32 pairs on \(device)")
        var got = [UInt32](repeating: 0, count: end)
        got.withUnsafeMutableBytes { backend.copyToHost(arena, $0.baseAddress!, byteCount: $0.count) }
        for (s, d) in zip(sources, destinations) {
            for (i, b) in s.bits.enumerated() { want[d.start + i] = UInt32(b) << 16 }
        }
        return (got, want)
    }

    /// On the emulated device each pair's float32 values are its bf16 values widened, bit for bit, and the words
    /// between and after the destinations stay as they were.
    @Test func eachPairIsItsCast() {
        let (got, want) = Self.widen(on: EmulatedCUDA.device, seed: 5)
        let first = zip(got, want).enumerated().first { $0.1.0 != $0.1.1 }
        #expect(got.count == want.count && first == nil, "first difference at word \(first?.offset ?? -1) of \(want.count)")
    }

    /// On the host-only device: the 11 pairs in two launches, the other two cast alone.
    @Test func eightPairsALaunch() {
        Self.driver.resetCounts()
        _ = Self.widen(on: Self.hostOnly, seed: 5)
        let launches = Self.driver.launches
        #expect(launches["cast_bf16_f32_v4_segments"] == 2 && launches["cast_bf16_f32"] == 2 && launches["cast_bf16_f32_v4"] == nil,
                "\(launches)")
    }

    /// A bf16 MLP's backward (fc1, fc2 with biases, arena slots offered) widens its four parameter gradients in one
    /// launch, on the host-only device; with `HASTE_CAST_SEGMENTS=0`, one cast each.
    @Test func anMLPsParameterGradientsTakeOneLaunch() {
        let launches = Self.mlpBackwardLaunches()
        #expect(launches["cast_bf16_f32_v4_segments"] == 1, "\(launches)")
        #expect((launches["cast_bf16_f32_v4"] ?? 0) <= 1, "x's gradient alone may be widened on its own: \(launches)")
        let each = CUDABackend.$castSegmentsAllowed.withValue(false) { Self.mlpBackwardLaunches() }
        #expect(each["cast_bf16_f32_v4_segments"] == nil && each["cast_bf16_f32_v4"] == (launches["cast_bf16_f32_v4"] ?? 0) + 4, "\(each)")
    }

    static func mlpBackwardLaunches() -> [String: Int] {
        let store = ParameterStore(seed: 8)
        let mlp = MLP(store.root["mlp"], inFeatures: 16, hidden: 32, outFeatures: 16, activation: .geluTanh)
        store.finalize(on: hostOnly)
        store.setRequiresGrad(true)
        store.zeroGrad()                                      // stale slots: the walk offers them to the node
        let x = Tensor.zeros([2, 8, 16], device: hostOnly)
        x.requiresGrad = true
        let y = Autocast.run(.bfloat16) { mlp(x) }
        #expect(y.gradFn.takes(BF16MLPTape.self), "the MLP did not take the bf16 branch")
        driver.resetCounts()
        y.sum().backward()
        return driver.launches
    }
}
