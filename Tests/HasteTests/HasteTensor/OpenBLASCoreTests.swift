import Foundation
import Testing
@testable import HasteTensor

/// The rule that moves OpenBLAS from its AVX2 kernels to its AVX-512 (SkylakeX) ones: only with every AVX-512
/// subset those kernels use, only from Haswell/Zen, never against the user's OPENBLAS_CORETYPE.
@Test func openBLASCoreSwitchRule() {
    let all = Set(OpenBLASCore.skylakeXFlags + ["avx2", "fma"])
    #expect(OpenBLASCore.shouldSwitch(core: "Haswell", flags: all, userCoreType: nil))
    #expect(OpenBLASCore.shouldSwitch(core: "Zen", flags: all, userCoreType: nil))
    #expect(!OpenBLASCore.shouldSwitch(core: "Haswell", flags: all, userCoreType: "Haswell"))     // the user's choice
    #expect(!OpenBLASCore.shouldSwitch(core: "SkylakeX", flags: all, userCoreType: nil))          // already there
    #expect(!OpenBLASCore.shouldSwitch(core: "Cooperlake", flags: all, userCoreType: nil))
    #expect(!OpenBLASCore.shouldSwitch(core: "Haswell", flags: ["avx2", "fma"], userCoreType: nil)) // AVX2-only part
    for missing in OpenBLASCore.skylakeXFlags {                                                    // a partial AVX-512
        #expect(!OpenBLASCore.shouldSwitch(core: "Haswell", flags: all.subtracting([missing]), userCoreType: nil), "without \(missing)")
    }
}

/// In this process: the switch happened exactly when the rule says so, and float32 GEMMs on the kernels in use
/// (odd sizes, both transposes, batches) agree with a float64 reference within float32 summation error.
@Test func openBLASCoreInUseComputesCorrectGemms() throws {
    let choice = OpenBLASCore.configure()
    let user = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]
    let able = !choice.reason.contains("cannot change")                 // an OpenBLAS without the exports
    if OpenBLASCore.shouldSwitch(core: choice.before, flags: CPUInfo.current().flags, userCoreType: user) && able {
        #expect(choice.core.lowercased() == "skylakex", "\(choice)")
    } else {
        #expect(choice.core == choice.before, "\(choice)")
    }
    for (m, k, n) in [(67, 129, 45), (256, 384, 1152), (1, 300, 17), (130, 7, 513)] {
        let a = Tensor.randn([3, m, k], seed: UInt64(m)), b = Tensor.randn([3, n, k], seed: UInt64(n))
        let c = a.matmul(b.transposed(1, 2))                                   // float32 on OpenBLAS
        let c64 = a.to(.float64).matmul(b.to(.float64).transposed(1, 2))     // float64 reference
        let got = c.scalars(as: Float.self), want = c64.scalars(as: Double.self)
        let absA = a.abs().to(.float64), absB = b.abs().to(.float64)
        let bound = absA.matmul(absB.transposed(1, 2)).scalars(as: Double.self)   // Σ|a||b| per entry
        let eps = Double(Float.ulpOfOne) * Double(k)
        for i in got.indices where Swift.abs(Double(got[i]) - want[i]) > eps * bound[i] + 1e-30 {
            Issue.record("[\(m)×\(k)]·[\(k)×\(n)] entry \(i): \(got[i]) vs \(want[i]) (bound \(eps * bound[i]))")
            break
        }
    }
}
