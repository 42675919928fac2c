import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// A bf16 GEMM's input gradient goes to the walk as the bf16 tensor it is (`bf16Carriers`), and the walk adds it to
/// another term of a float32 tensor in one pass (`addWidened`: float32(a) + float32(b)), where it was widened by a
/// launch of its own first. The same values: the float32 sum of the widened terms.
@Suite(.serialized) struct AddWidenedTests {
    static let (hostOnly, driver) = hostOnlyDevice(28)

    /// The kernel on the emulated device, every pairing of float32 and bf16 terms, four elements a thread (16) and one
    /// (15), against the CPU's widen-then-add, bit for bit (−0, NaN, infinities, a sum that overflows); and `addLow`
    /// (the same helper with a bf16 out) against the CPU's float32 sum rounded to bf16.
    @Test(arguments: [15, 16]) func theKernelIsWidenThenAdd(count: Int) {
        var rng = SplitMix64(seed: UInt64(count))
        func values(_ salt: Int) -> [Float] {
            (0..<count).map { i in
                switch (i + salt) % 7 {
                case 0: return -0.0
                case 1: return .nan
                case 2: return 3.0e38
                case 3: return -.infinity
                default: return Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0xbf7f_ffff)
                }
            }
        }
        let device = EmulatedCUDA.device
        for (da, db) in [(DType.float32, DType.bfloat16), (.bfloat16, .float32), (.bfloat16, .bfloat16)] {
            let a = Tensor(values(0), shape: [count]).to(da), b = Tensor(values(3), shape: [count]).to(db)
            let out = Tensor.empty([count], device: device)
            let (ga, gb) = (a.to(device), b.to(device))
            #expect(device.backend.addWidened(ga.buffer, gb.buffer, out.buffer, count: count), "\(da) + \(db)")
            let want = (a.to(.float32) + b.to(.float32)).scalars(as: Float.self).map(\.bitPattern)
            #expect(out.to(.cpu).scalars(as: Float.self).map(\.bitPattern) == want, "\(da) + \(db)")
            guard da == .bfloat16 && db == .bfloat16 else { continue }
            // The same helper with a bf16 out is `addLow` (torch's bf16 add): the float32 sum rounded once.
            let low = Tensor.empty([count], dtype: .bfloat16, device: device)
            #expect(device.backend.addLow(ga.buffer, gb.buffer, low.buffer, count: count))
            let rounded = (a.to(.float32) + b.to(.float32)).to(.bfloat16).to(.float32).scalars(as: Float.self).map(\.bitPattern)
            #expect(low.to(.cpu).to(.float32).scalars(as: Float.self).map(\.bitPattern) == rounded, "addLow")
        }
    }

    /// Under Autocast bf16 on the emulated device, a float32 tensor read by three bf16 linears (silu(c) and the adaLN
    /// modulations): its gradient and the linears' are the same bits as with each term widened first.
    @Test func threeLinearsInputGradientIsTheWidenedSum() {
        func grads() -> [[UInt32]] {
            let device = EmulatedCUDA.device
            let c = Tensor.randn([4, 16], seed: 1).to(device)
            c.requiresGrad = true
            let ws = (0..<3).map { (Tensor.randn([24, 16], seed: UInt64(2 + $0)) * 0.3).to(device) }
            for w in ws { w.requiresGrad = true }
            let a = c.silu()
            let loss = Autocast.run(.bfloat16) {
                ws.enumerated().map { (a.linear($0.element) * Tensor.randn([4, 24], seed: UInt64(9 + $0.offset)).to(device)).sum() }
            }.reduce(Tensor.scalar(0, device: device), +)
            loss.backward()
            return ([c] + ws).map { $0.grad!.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
        }
        #expect(grads() == CUDABackend.$addWidenedAllowed.withValue(false) { grads() })
    }

    /// On the host-only device: the three terms take two adds and no widening; with `HASTE_ADD_WIDENED=0`, each bf16
    /// term is widened first (three casts).
    @Test func theTermsAreAddedAsTheyAre() {
        func launches() -> [String: Int] {
            let c = Tensor.zeros([4, 16], device: Self.hostOnly)
            c.requiresGrad = true
            let ws = (0..<3).map { _ in Tensor.zeros([24, 16], device: Self.hostOnly) }
            let a = c * 2
            let loss = Autocast.run(.bfloat16) { ws.map { a.linear($0).sum() } }.reduce(Tensor.scalar(0, device: Self.hostOnly), +)
            Self.driver.resetCounts()
            loss.backward()
            return Self.driver.launches
        }
        let fused = launches()
        #expect(fused["add_widened_bb_v4"] == 1 && fused["add_widened_fb_v4"] == 1 && fused["cast_bf16_f32_v4"] == nil, "\(fused)")
        let each = CUDABackend.$addWidenedAllowed.withValue(false) { launches() }
        #expect(each["add_widened_bb_v4"] == nil && each["cast_bf16_f32_v4"] == 3, "\(each)")
    }
}
