/// dtype conversion kernels. Every element type reads to and writes from Double, which holds every
/// float32/float16/bfloat16/int32 value exactly; int64 beyond 2^53 is not a use case here.
protocol CastElement {
    associatedtype Raw
    static func read(_ r: Raw) -> Double
    static func write(_ v: Double) -> Raw
}

enum CastF32: CastElement {
    static func read(_ r: Float) -> Double { Double(r) }
    static func write(_ v: Double) -> Float { Float(v) }
}
enum CastF64: CastElement {
    static func read(_ r: Double) -> Double { r }
    static func write(_ v: Double) -> Double { v }
}
enum CastF16: CastElement {
    static func read(_ r: UInt16) -> Double { Double(Float(halfBits: r)) }
    static func write(_ v: Double) -> UInt16 { Float(v).halfBits }
}
enum CastBF16: CastElement {
    static func read(_ r: UInt16) -> Double { Double(Float(bitPattern: UInt32(r) << 16)) }
    static func write(_ v: Double) -> UInt16 { Float(v).bfloat16Bits }
}
/// Float → integer truncates toward zero like torch; NaN/inf become 0 instead of trapping.
@inline(__always) func truncatingInt(_ v: Double) -> Int64 {
    guard v.isFinite else { return 0 }
    if v >= 9.2e18 { return Int64.max }
    if v <= -9.2e18 { return Int64.min }
    return Int64(v)
}
enum CastI32: CastElement {
    static func read(_ r: Int32) -> Double { Double(r) }
    static func write(_ v: Double) -> Int32 { Int32(truncatingIfNeeded: truncatingInt(v)) }
}
enum CastI64: CastElement {
    static func read(_ r: Int64) -> Double { Double(r) }
    static func write(_ v: Double) -> Int64 { truncatingInt(v) }
}
enum CastU8: CastElement {
    static func read(_ r: UInt8) -> Double { Double(r) }
    static func write(_ v: Double) -> UInt8 { UInt8(truncatingIfNeeded: truncatingInt(v)) }
}
enum CastBool: CastElement {
    static func read(_ r: Bool) -> Double { r ? 1 : 0 }
    static func write(_ v: Double) -> Bool { v != 0 }
}

extension Float {
    /// IEEE half bits, round to nearest even.
    public var halfBits: UInt16 { Float16(self).bitPattern }
    public init(halfBits: UInt16) { self = Float(Float16(bitPattern: halfBits)) }
    /// bfloat16 bits, round to nearest even (torch's conversion); NaN stays NaN.
    public var bfloat16Bits: UInt16 {
        if isNaN { return 0x7FC0 }
        let bits = bitPattern
        let rounding = ((bits >> 16) & 1) &+ 0x7FFF
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }
}

extension CPUBackend {
    public func cast(from src: Buffer, to dst: Buffer, count: Int) {
        switch src.dtype {
        case .float32: cast(CastF32.self, src, dst, count)
        case .float64: cast(CastF64.self, src, dst, count)
        case .float16: cast(CastF16.self, src, dst, count)
        case .bfloat16: cast(CastBF16.self, src, dst, count)
        case .int32: cast(CastI32.self, src, dst, count)
        case .int64: cast(CastI64.self, src, dst, count)
        case .uint8: cast(CastU8.self, src, dst, count)
        case .bool: cast(CastBool.self, src, dst, count)
        }
    }

    public func roundThrough(_ x: Buffer, _ y: Buffer, low: DType, count: Int, shift: Float) {
        switch low {
        case .bfloat16: roundThrough(CastBF16.self, x, y, count, shift: shift)
        case .float16: roundThrough(CastF16.self, x, y, count, shift: shift)
        default: fatalError("roundThrough: \(low) is not bfloat16 or float16")
        }
    }

    private func roundThrough<L: CastElement>(_: L.Type, _ x: Buffer, _ y: Buffer, _ count: Int, shift: Float) {
        let px = SendablePointer(x.pointer(Float.self)), py = SendablePointer(y.pointer(Float.self))
        Parallel.chunks(count) { r in
            if shift == 0 {
                for i in r { py.base[i] = CPUBackend.roundedThrough(L.self, px.base[i]) }
            } else {
                for i in r { py.base[i] = CPUBackend.roundedThrough(L.self, px.base[i] + shift) - shift }
            }
        }
    }

    /// The two casts' conversions composed for one value (`cast` to L, then from L to float32).
    @inline(__always) static func roundedThrough<L: CastElement>(_: L.Type, _ v: Float) -> Float {
        CastF32.write(L.read(L.write(CastF32.read(v))))
    }

    private func cast<S: CastElement>(_ s: S.Type, _ src: Buffer, _ dst: Buffer, _ count: Int) {
        switch dst.dtype {
        case .float32: loop(s, CastF32.self, src, dst, count)
        case .float64: loop(s, CastF64.self, src, dst, count)
        case .float16: loop(s, CastF16.self, src, dst, count)
        case .bfloat16: loop(s, CastBF16.self, src, dst, count)
        case .int32: loop(s, CastI32.self, src, dst, count)
        case .int64: loop(s, CastI64.self, src, dst, count)
        case .uint8: loop(s, CastU8.self, src, dst, count)
        case .bool: loop(s, CastBool.self, src, dst, count)
        }
    }

    private func loop<S: CastElement, D: CastElement>(_: S.Type, _: D.Type, _ src: Buffer, _ dst: Buffer, _ count: Int) {
        let x = SendablePointer(src.pointer(S.Raw.self)), y = SendablePointer(dst.pointer(D.Raw.self))
        Parallel.chunks(count) { r in
            for i in r { y.base[i] = D.write(S.read(x.base[i])) }
        }
    }
}
