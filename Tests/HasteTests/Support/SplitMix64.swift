/// SplitMix64: a fixed stream of test inputs (fuzz mutations, kernel operands), the same on every run and machine.
struct SplitMix64 {
    var state: UInt64
    init(state: UInt64) { self.state = state }
    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// Uniform in [lo, hi), 24 random bits.
    mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * Float(next() >> 40) * 0x1p-24 }
    /// n values uniform in [−1, 1), 24 random bits each.
    mutating func floats(_ n: Int) -> [Float] {
        (0..<n).map { _ in Float(Int64(next() >> 40) - (1 << 23)) / Float(1 << 23) }
    }
}
