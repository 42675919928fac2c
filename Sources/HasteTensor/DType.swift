/// Element types. float32 computes everywhere, float64 on CPU (gradchecks); float16/bfloat16 are storage
/// types for files (convert with `to(_:)`); int32/int64 hold labels and indices; uint8/bool hold images and masks.
public enum DType: String, Sendable, CaseIterable, CustomStringConvertible {
    case float32, float64, float16, bfloat16, int32, int64, uint8, bool

    public var byteSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16: return 2
        case .uint8, .bool: return 1
        }
    }

    /// Types that ops compute in (the others are converted first).
    public var isComputeFloat: Bool { self == .float32 || self == .float64 }
    public var isFloatingPoint: Bool { self == .float32 || self == .float64 || self == .float16 || self == .bfloat16 }
    /// float16, bfloat16: an autocast op's output (e.g. the aligned attention's logits on CUDA); a tracked one's
    /// gradient has its dtype (every term rounded to it, the sums too, as torch's).
    public var isLowFloat: Bool { self == .float16 || self == .bfloat16 }
    public var description: String { rawValue }
}

import RealModule
/// The element types CPU kernels compute in (float32, float64): math functions, conversions, SIMD lanes.
public protocol KernelFloat: Real, BinaryFloatingPoint, SIMDScalar, Codable where Self.RawSignificand: FixedWidthInteger {}
extension Float: KernelFloat {}
extension Double: KernelFloat {}
