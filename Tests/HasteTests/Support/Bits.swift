import HasteTensor

/// A tensor's values as float32 bit patterns (bf16 widened exactly, moved to the CPU): what the bit-for-bit tests
/// compare.
func floatBits(_ t: Tensor) -> [UInt32] { t.to(.cpu).to(.float32).scalars(as: Float.self).map(\.bitPattern) }
