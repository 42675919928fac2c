import CKernels
import RealModule

/// A unary op as a value: `f` is the forward, `df` the derivative given x and y = f(x).
protocol UnaryFn {
    func f<T: KernelFloat>(_ x: T) -> T
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T
    /// float32 lanes (16); the default applies `f` per lane. Hot activations override with CPUMath's SIMD forms.
    func vf(_ x: FVec) -> FVec
    func vdf(_ x: FVec, _ y: FVec) -> FVec
    /// The CKernels activation (HASTE_ACT_*) that computes `vf` and `dy·vdf` bit for bit in AVX-512 / AVX2 lanes,
    /// or nil (the Swift SIMD16 loop, which compiles to SSE on baseline x86-64).
    var cActivation: Int32? { get }
}

extension UnaryFn {
    var cActivation: Int32? { nil }
    /// The CKernels level and activation to run this function's float32 lanes with, where this CPU has a variant.
    var vectorKernel: (level: Int32, act: Int32)? {
        guard CPUKernels.level > 0, let act = cActivation else { return nil }
        return (Int32(CPUKernels.level), act)
    }
    func vf(_ x: FVec) -> FVec {
        var r = FVec()
        for i in 0..<16 { r[i] = f(x[i]) }
        return r
    }
    func vdf(_ x: FVec, _ y: FVec) -> FVec {
        var r = FVec()
        for i in 0..<16 { r[i] = df(x[i], y[i]) }
        return r
    }
}

struct ExpF: UnaryFn {
    func f<T: KernelFloat>(_ x: T) -> T { .exp(x) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { y }
    func vdf(_ x: FVec, _ y: FVec) -> FVec { y }
}
struct LogF: UnaryFn { func f<T: KernelFloat>(_ x: T) -> T { .log(x) }; func df<T: KernelFloat>(_ x: T, _ y: T) -> T { 1 / x } }
struct SqrtF: UnaryFn { func f<T: KernelFloat>(_ x: T) -> T { .sqrt(x) }; func df<T: KernelFloat>(_ x: T, _ y: T) -> T { 1 / (2 * y) } }
struct RsqrtF: UnaryFn {
    func f<T: KernelFloat>(_ x: T) -> T { 1 / .sqrt(x) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { -y * y * y / 2 }
}
struct TanhF: UnaryFn { func f<T: KernelFloat>(_ x: T) -> T { .tanh(x) }; func df<T: KernelFloat>(_ x: T, _ y: T) -> T { 1 - y * y } }
struct SinF: UnaryFn { func f<T: KernelFloat>(_ x: T) -> T { .sin(x) }; func df<T: KernelFloat>(_ x: T, _ y: T) -> T { .cos(x) } }
struct CosF: UnaryFn { func f<T: KernelFloat>(_ x: T) -> T { .cos(x) }; func df<T: KernelFloat>(_ x: T, _ y: T) -> T { -.sin(x) } }
struct AbsF: UnaryFn {
    func f<T: KernelFloat>(_ x: T) -> T { x.magnitude }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { x > 0 ? 1 : (x < 0 ? -1 : 0) }
}
struct SignF: UnaryFn {
    func f<T: KernelFloat>(_ x: T) -> T { x > 0 ? 1 : (x < 0 ? -1 : (x.isNaN ? x : 0)) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { 0 }
}
struct ReciprocalF: UnaryFn { func f<T: KernelFloat>(_ x: T) -> T { 1 / x }; func df<T: KernelFloat>(_ x: T, _ y: T) -> T { -y * y } }
struct SquareF: UnaryFn { func f<T: KernelFloat>(_ x: T) -> T { x * x }; func df<T: KernelFloat>(_ x: T, _ y: T) -> T { 2 * x } }
struct ReluF: UnaryFn {
    func f<T: KernelFloat>(_ x: T) -> T { x > 0 ? x : (x.isNaN ? x : 0) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { x > 0 ? 1 : 0 }
    /// The lanes of `f`: x ≤ 0 (−0 included) becomes +0, NaN (every comparison false) passes through.
    func vf(_ x: FVec) -> FVec { x.replacing(with: 0, where: x .<= 0) }
    func vdf(_ x: FVec, _ y: FVec) -> FVec { FVec(repeating: 0).replacing(with: 1, where: x .> 0) }
}
@inline(__always) func sigmoid<T: KernelFloat>(_ x: T) -> T {
    if x >= 0 { return 1 / (1 + .exp(-x)) }
    let e = T.exp(x)
    return e / (1 + e)
}
struct SigmoidF: UnaryFn {
    func f<T: KernelFloat>(_ x: T) -> T { sigmoid(x) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { y * (1 - y) }
    func vf(_ x: FVec) -> FVec { vsigmoid(x) }
    func vdf(_ x: FVec, _ y: FVec) -> FVec { y * (1 - y) }
}
struct SiluF: UnaryFn {
    var cActivation: Int32? { HASTE_ACT_SILU }
    func f<T: KernelFloat>(_ x: T) -> T { x * sigmoid(x) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { let s = sigmoid(x); return s * (1 + x * (1 - s)) }
    func vf(_ x: FVec) -> FVec { x * vsigmoid(x) }
    func vdf(_ x: FVec, _ y: FVec) -> FVec { let s = vsigmoid(x); return s * (1 + x * (1 - s)) }
}
/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as torch's approximate="tanh".
struct GeluTanhF: UnaryFn {
    var cActivation: Int32? { HASTE_ACT_GELU_TANH }
    func f<T: KernelFloat>(_ x: T) -> T {
        let k0: T = 0.797_884_560_802_865_4, k1: T = 0.044_715
        let inner: T = k0 * (x + k1 * x * x * x)
        let half: T = x / 2
        return half * (1 + T.tanh(inner))
    }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T {
        let k0: T = 0.797_884_560_802_865_4, k1: T = 0.044_715
        let x2: T = x * x
        let t: T = T.tanh(k0 * (x + k1 * x2 * x))
        let left: T = (1 + t) / 2
        let right: T = x / 2 * (1 - t * t) * k0 * (1 + 3 * k1 * x2)
        return left + right
    }
    func vf(_ x: FVec) -> FVec {
        let cube: FVec = x * x * x
        let inner: FVec = (x + 0.044_715 * cube) * 0.797_884_560_802_865_4
        let half: FVec = x * 0.5
        return half * (1 + vtanh(inner))
    }
    func vdf(_ x: FVec, _ y: FVec) -> FVec {
        let x2 = x * x
        let t = vtanh(0.797_884_560_802_865_4 * (x + 0.044_715 * x2 * x))
        let left: FVec = (1 + t) * 0.5
        let slope: FVec = (1 + 0.134_145 * x2) * 0.797_884_560_802_865_4     // k0·(1 + 3·k1·x²)
        let right: FVec = x * 0.5 * (1 - t * t) * slope
        return left + right
    }
}
/// x·Φ(x) with Φ through erf, as torch's exact GELU.
struct GeluF: UnaryFn {
    var cActivation: Int32? { HASTE_ACT_GELU }
    func f<T: KernelFloat>(_ x: T) -> T {
        let c: T = 0.707_106_781_186_547_5
        let e: T = T.erf(x * c)
        return x / 2 * (1 + e)
    }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T {
        let c: T = 0.707_106_781_186_547_5, invSqrt2Pi: T = 0.398_942_280_401_432_7
        let cdf: T = (1 + T.erf(x * c)) / 2
        let pdf: T = invSqrt2Pi * T.exp(-x * x / 2)
        return cdf + x * pdf
    }
    /// float32 through CPUMath's verf and vexp (libm's scalar erff, per element, was 9% of a DINOv2-B forward).
    func vf(_ x: FVec) -> FVec { x * 0.5 * (1 + verf(x * 0.707_106_781_186_547_5)) }
    func vdf(_ x: FVec, _ y: FVec) -> FVec {
        let cdf: FVec = (1 + verf(x * 0.707_106_781_186_547_5)) * 0.5
        let pdf: FVec = vexp(-x * x * 0.5) * 0.398_942_280_401_432_7
        return cdf + x * pdf
    }
}
struct PowF: UnaryFn {
    let p: Double
    func f<T: KernelFloat>(_ x: T) -> T {
        if p == p.rounded(), p.magnitude < 1e9 { return .pow(x, Int(p)) }
        return .pow(x, T(p))
    }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T {
        if p == 0 { return 0 }
        let q = p - 1
        if q == q.rounded(), q.magnitude < 1e9 { return T(p) * .pow(x, Int(q)) }
        return T(p) * .pow(x, T(q))
    }
}
struct ClampF: UnaryFn {
    let lo: Double, hi: Double
    func f<T: KernelFloat>(_ x: T) -> T { x.isNaN ? x : Swift.min(Swift.max(x, T(lo)), T(hi)) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { x >= T(lo) && x <= T(hi) ? 1 : 0 }
}
struct AffineF: UnaryFn {
    let scale: Double, shift: Double
    func f<T: KernelFloat>(_ x: T) -> T { x * T(scale) + T(shift) }
    func df<T: KernelFloat>(_ x: T, _ y: T) -> T { T(scale) }
}

/// Receives the functor of a `UnaryOp` as a concrete type, so the loops below specialise per op.
protocol UnaryVisitor { func visit<F: UnaryFn>(_ fn: F) }

/// Maps the enum onto its functor once per kernel call.
func dispatchUnary<V: UnaryVisitor>(_ op: UnaryOp, _ v: V) {
    switch op {
    case .exp: v.visit(ExpF())
    case .log: v.visit(LogF())
    case .sqrt: v.visit(SqrtF())
    case .rsqrt: v.visit(RsqrtF())
    case .tanh: v.visit(TanhF())
    case .sin: v.visit(SinF())
    case .cos: v.visit(CosF())
    case .abs: v.visit(AbsF())
    case .sign: v.visit(SignF())
    case .reciprocal: v.visit(ReciprocalF())
    case .square: v.visit(SquareF())
    case .sigmoid: v.visit(SigmoidF())
    case .silu: v.visit(SiluF())
    case .geluTanh: v.visit(GeluTanhF())
    case .gelu: v.visit(GeluF())
    case .relu: v.visit(ReluF())
    case let .pow(p): v.visit(PowF(p: p))
    case let .clamp(lo, hi): v.visit(ClampF(lo: lo, hi: hi))
    case let .affine(scale, shift): v.visit(AffineF(scale: scale, shift: shift))
    }
}

/// y[i] = f(x[i]) for i < n in float32: the CKernels variant (`kernel`, fn.vectorKernel) or the Swift SIMD16 `vf`
/// for whole groups of 16 from x, the scalar `f` for the rest. y may be x. Every caller splits its elements at
/// multiples of 16 from the tensor's start, so a value's bits never depend on which caller computed it.
@inline(__always)
func floatLanes<F: UnaryFn>(_ fn: F, _ kernel: (level: Int32, act: Int32)?, _ x: UnsafeMutablePointer<Float>,
                            _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    if let (level, act) = kernel { i = haste_act_forward_f32(level, act, x, nil, y, n) }
    let a = UnsafeMutableRawPointer(x), b = UnsafeMutableRawPointer(y)
    while i + 16 <= n {
        b.storeBytes(of: fn.vf(a.loadUnaligned(fromByteOffset: i * 4, as: FVec.self)), toByteOffset: i * 4, as: FVec.self)
        i += 16
    }
    while i < n { y[i] = fn.f(x[i]); i += 1 }
}

/// y = f(x) over `count` elements of type T.
struct UnaryForward<T: KernelFloat>: UnaryVisitor {
    let x: SendablePointer<T>, y: SendablePointer<T>, count: Int
    func visit<F: UnaryFn>(_ fn: F) {
        let x = self.x, y = self.y
        if T.self == Float.self {
            let a = UnsafeMutableRawPointer(x.base), b = UnsafeMutableRawPointer(y.base)
            let kernel = fn.vectorKernel
            Parallel.chunks(count) { r in
                floatLanes(fn, kernel, (a + r.lowerBound * 4).assumingMemoryBound(to: Float.self),
                           (b + r.lowerBound * 4).assumingMemoryBound(to: Float.self), r.count)
            }
            return
        }
        Parallel.chunks(count) { r in
            let a = x.base, b = y.base
            for i in r { b[i] = fn.f(a[i]) }
        }
    }
}

/// dx = dy · f'(x, y).
struct UnaryBackwardLoop<T: KernelFloat>: UnaryVisitor {
    let x: SendablePointer<T>, y: SendablePointer<T>, dy: SendablePointer<T>, dx: SendablePointer<T>, count: Int
    func visit<F: UnaryFn>(_ fn: F) {
        let x = self.x, y = self.y, dy = self.dy, dx = self.dx
        if T.self == Float.self {
            let px = UnsafeMutableRawPointer(x.base), py = UnsafeMutableRawPointer(y.base)
            let pg = UnsafeMutableRawPointer(dy.base), pd = UnsafeMutableRawPointer(dx.base)
            let kernel = fn.vectorKernel
            Parallel.chunks(count) { r in
                var i = r.lowerBound
                if let (level, act) = kernel {
                    i += haste_act_backward_f32(level, act, (px + i * 4).assumingMemoryBound(to: Float.self), nil,
                                                (pg + i * 4).assumingMemoryBound(to: Float.self),
                                                (pd + i * 4).assumingMemoryBound(to: Float.self), nil, r.count)
                }
                while i + 16 <= r.upperBound {
                    let o = i * 4
                    let d = fn.vdf(px.loadUnaligned(fromByteOffset: o, as: FVec.self), py.loadUnaligned(fromByteOffset: o, as: FVec.self))
                    pd.storeBytes(of: pg.loadUnaligned(fromByteOffset: o, as: FVec.self) * d, toByteOffset: o, as: FVec.self)
                    i += 16
                }
                let fx = px.assumingMemoryBound(to: Float.self), fy = py.assumingMemoryBound(to: Float.self)
                let fg = pg.assumingMemoryBound(to: Float.self), fd = pd.assumingMemoryBound(to: Float.self)
                while i < r.upperBound { fd[i] = fg[i] * fn.df(fx[i], fy[i]); i += 1 }
            }
            return
        }
        Parallel.chunks(count) { r in
            for i in r { dx.base[i] = dy.base[i] * fn.df(x.base[i], y.base[i]) }
        }
    }
}

extension CPUBackend {
    public func unary(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int) {
        switch x.dtype {
        case .float32:
            dispatchUnary(op, UnaryForward<Float>(x: .init(x.pointer(Float.self)), y: .init(y.pointer(Float.self)), count: count))
        case .float64:
            dispatchUnary(op, UnaryForward<Double>(x: .init(x.pointer(Double.self)), y: .init(y.pointer(Double.self)), count: count))
        default: fatalError("\(op): unsupported dtype \(x.dtype)")
        }
    }

    public func unaryBackward(_ op: UnaryOp, x: Buffer, y: Buffer, dy: Buffer, dx: Buffer, count: Int) {
        switch x.dtype {
        case .float32:
            dispatchUnary(op, UnaryBackwardLoop<Float>(x: .init(x.pointer(Float.self)), y: .init(y.pointer(Float.self)),
                                                       dy: .init(dy.pointer(Float.self)), dx: .init(dx.pointer(Float.self)), count: count))
        case .float64:
            dispatchUnary(op, UnaryBackwardLoop<Double>(x: .init(x.pointer(Double.self)), y: .init(y.pointer(Double.self)),
                                                        dy: .init(dy.pointer(Double.self)), dx: .init(dx.pointer(Double.self)), count: count))
        default: fatalError("\(op) backward: unsupported dtype \(x.dtype)")
        }
    }
}
