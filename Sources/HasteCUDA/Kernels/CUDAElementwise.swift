import HasteTensor

extension CUDABackend {
    /// The elementwise family: broadcast binary ops over ≤ 8 coalesced axes per launch, every `UnaryOp` forward
    /// and backward with CPUUnary.swift's scalar formulas, axpy. float32; and the unary ops on bfloat16 tensors
    /// (Autocast's bf16 MLP activations: widened, the float32 formula, rounded once).
    ///
    /// Agreement with the CPU: add/sub/mul/div/max/min, abs, sign, relu, square, reciprocal, clamp and their
    /// derivatives are exact. The transcendental ops use CUDA's libdevice (expf/tanhf/erff ≤ 2 ulp, powf ≤ 4 ulp)
    /// where the CPU uses glibc or, on 16-lane chunks, CPUMath's vectorised exp/tanh (≤ 1 ulp): they agree within
    /// a few float32 ulps of each intermediate. NVRTC contracts a·b + c into one FMA (affine, axpy, the gelu
    /// polynomials), which differs from the CPU's two roundings by at most one rounding.
    static let elementwiseSource = KernelSource(family: "elementwise", kernels: ["binary_f32", "binary32_f32_u1", "binary32_f32_u2", "binary32_f32_u4", "unary_f32", "unary_backward_f32", "axpy_f32", "unary_bf16", "unary_bf16_v4", "unary_backward_bf16", "unary_backward_bf16_v4"]
        + unarySpecialized.flatMap { ["unary_bf16_v8_\($0)", "unary_backward_bf16_v8_\($0)"] } + ["group_norm_apply"],
        code: elementwiseCode + "\n" + specializedUnaryCode + "\n" + groupNormApplyCode)

    static let elementwiseCode = #"""
    /// BinaryOp codes: 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum (NaN in either operand propagates: a
    /// NaN a is kept, otherwise the comparison picks b, as CPUElementwise's MaxFn/MinFn).
    __device__ __forceinline__ float haste_binary(int op, float a, float b) {
        switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return (isnan(a) || a > b) ? a : b;
        default: return (isnan(a) || a < b) ? a : b;
        }
    }

    extern "C" __global__ void binary_f32(const float* a, const float* b, float* out, int op, int rank, i64 count, i64 n0, i64 n1, i64 n2, i64 n3, i64 n4, i64 n5, i64 n6, i64 n7, i64 a0, i64 a1, i64 a2, i64 a3, i64 a4, i64 a5, i64 a6, i64 a7, i64 b0, i64 b1, i64 b2, i64 b3, i64 b4, i64 b5, i64 b6, i64 b7) {
        i64 shape[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
        i64 sa[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        i64 sb[8] = {b0, b1, b2, b3, b4, b5, b6, b7};
        if (rank == 1) {   /* the common coalesced cases: both contiguous, or one broadcast along the other */
            HASTE_GRID_STRIDE_LOOP(i, count) out[i] = haste_binary(op, a[i * a0], b[i * b0]);
            return;
        }
        HASTE_GRID_STRIDE_LOOP(i, count) {
            i64 oa = 0, ob = 0, rem = i;
            for (int d = rank - 1; d > 0; --d) {
                i64 q = (rem <= 0xffffffffLL && shape[d] <= 0xffffffffLL) ? (i64)((u32)rem / (u32)shape[d]) : rem / shape[d];
                i64 c = rem - q * shape[d];
                rem = q;
                oa += c * sa[d];
                ob += c * sb[d];
            }
            oa += rem * sa[0];
            ob += rem * sb[0];
            out[i] = haste_binary(op, a[oa], b[ob]);
        }
    }

    /// binary_f32 for views whose count and offsets fit in 31 bits (CUDAMemory.swift's strided_copy32: 32-bit
    /// indices, divisions by extents as `haste_fdiv`, the rank unrolled), in units of U = 4 or 2 floats (16- or
    /// 8-byte loads and stores; every view contiguous in the last axis, aligned: `CUDABackend.copyUnit`) or 1.
    /// Extents, counts and the strides of a and b in units; out is contiguous.
    template <int U>
    __device__ __forceinline__ void haste_binary32(const float* a, const float* b, float* out, int op, HASTE_VIEWS32_PARAMS(a, b)) {
        HASTE_VIEWS32(a, b);
        HASTE_GRID_STRIDE_LOOP32(i, count) {
            int oa, ob;
            haste_offsets32(i, rank, v32_n, v32_f, v32_a, v32_b, &oa, &ob);
            if (U == 2) {
                const haste_f2 x = ((const haste_f2*)a)[oa], y = ((const haste_f2*)b)[ob];
                haste_f2 z;
                z.x = haste_binary(op, x.x, y.x); z.y = haste_binary(op, x.y, y.y);
                ((haste_f2*)out)[i] = z;
            } else if (U == 4) {
                const haste_f4 x = ((const haste_f4*)a)[oa], y = ((const haste_f4*)b)[ob];
                haste_f4 z;
                z.x = haste_binary(op, x.x, y.x); z.y = haste_binary(op, x.y, y.y);
                z.z = haste_binary(op, x.z, y.z); z.w = haste_binary(op, x.w, y.w);
                ((haste_f4*)out)[i] = z;
            } else {
                out[i] = haste_binary(op, a[oa], b[ob]);
            }
        }
    }
    extern "C" __global__ void binary32_f32_u1(const float* a, const float* b, float* out, int op, HASTE_VIEWS32_PARAMS(a, b)) { haste_binary32<1>(a, b, out, op, HASTE_VIEWS32_ARGS(a, b)); }
    extern "C" __global__ void binary32_f32_u2(const float* a, const float* b, float* out, int op, HASTE_VIEWS32_PARAMS(a, b)) { haste_binary32<2>(a, b, out, op, HASTE_VIEWS32_ARGS(a, b)); }
    extern "C" __global__ void binary32_f32_u4(const float* a, const float* b, float* out, int op, HASTE_VIEWS32_PARAMS(a, b)) { haste_binary32<4>(a, b, out, op, HASTE_VIEWS32_ARGS(a, b)); }

    /// σ(x) as CPUUnary.sigmoid: 1/(1 + e^−x) for x ≥ 0, e^x/(1 + e^x) below.
    __device__ __forceinline__ float haste_sigmoid(float x) {
        if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
        float e = expf(x);
        return e / (1.0f + e);
    }
    /// RealModule's pow(x, y: real): NaN for x < 0 or NaN (and for 0^0, which a non-integer y never is).
    __device__ __forceinline__ float haste_pow_real(float x, float y) {
        if (!(x >= 0.0f)) return NAN;
        if (x == 0.0f && y == 0.0f) return NAN;
        return powf(x, y);
    }
    /// RealModule's pow(x, n: Int) with n = lo + hi split on the host (hi = 0 when n is exact in float).
    __device__ __forceinline__ float haste_pow_int(float x, float lo, float hi) {
        return hi == 0.0f ? powf(x, lo) : powf(x, lo) * powf(x, hi);
    }

    /// UnaryOp codes: 0 exp, 1 log, 2 sqrt, 3 rsqrt, 4 tanh, 5 sin, 6 cos, 7 abs, 8 sign, 9 reciprocal, 10 square,
    /// 11 sigmoid, 12 silu, 13 geluTanh, 14 gelu, 15 relu, 16 pow with an integer exponent (p0 = low part, p1 =
    /// high part), 17 pow with a real exponent (p0), 18 clamp(p0, p1), 19 affine(scale p0, shift p1).
    __device__ __forceinline__ float haste_unary(int op, float x, float p0, float p1) {
        switch (op) {
        case 0: return expf(x);
        case 1: return logf(x);
        case 2: return sqrtf(x);
        case 3: return 1.0f / sqrtf(x);
        case 4: return tanhf(x);
        case 5: return sinf(x);
        case 6: return cosf(x);
        case 7: return fabsf(x);
        case 8: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (isnan(x) ? x : 0.0f));
        case 9: return 1.0f / x;
        case 10: return x * x;
        case 11: return haste_sigmoid(x);
        case 12: return x * haste_sigmoid(x);
        case 13: {
            const float k0 = 0.7978845608028654f, k1 = 0.044715f;
            float inner = k0 * (x + k1 * x * x * x);
            float half = x / 2.0f;
            return half * (1.0f + tanhf(inner));
        }
        case 14: {
            const float c = 0.7071067811865475f;
            float e = erff(x * c);
            return x / 2.0f * (1.0f + e);
        }
        case 15: return x > 0.0f ? x : (isnan(x) ? x : 0.0f);
        case 16: return haste_pow_int(x, p0, p1);
        case 17: return haste_pow_real(x, p0);
        case 18: {
            if (isnan(x)) return x;
            float m = p0 >= x ? p0 : x;          /* Swift.max(x, lo) */
            return p1 < m ? p1 : m;              /* Swift.min(m, hi) */
        }
        default: return x * p0 + p1;
        }
    }

    /// f'(x) given y = f(x). pow (16, 17): p0 = p, then the exponent p − 1 as the forward's parameters in p1, p2;
    /// 20: the derivative of pow(x, 0), 0.
    __device__ __forceinline__ float haste_unary_derivative(int op, float x, float y, float p0, float p1, float p2) {
        switch (op) {
        case 0: return y;
        case 1: return 1.0f / x;
        case 2: return 1.0f / (2.0f * y);
        case 3: return -y * y * y / 2.0f;
        case 4: return 1.0f - y * y;
        case 5: return cosf(x);
        case 6: return -sinf(x);
        case 7: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
        case 8: return 0.0f;
        case 9: return -y * y;
        case 10: return 2.0f * x;
        case 11: return y * (1.0f - y);
        case 12: { float s = haste_sigmoid(x); return s * (1.0f + x * (1.0f - s)); }
        case 13: {
            const float k0 = 0.7978845608028654f, k1 = 0.044715f;
            float x2 = x * x;
            float t = tanhf(k0 * (x + k1 * x2 * x));
            float left = (1.0f + t) / 2.0f;
            float right = x / 2.0f * (1.0f - t * t) * k0 * (1.0f + 3.0f * k1 * x2);
            return left + right;
        }
        case 14: {
            const float c = 0.7071067811865475f, invSqrt2Pi = 0.3989422804014327f;
            float cdf = (1.0f + erff(x * c)) / 2.0f;
            float pdf = invSqrt2Pi * expf(-x * x / 2.0f);
            return cdf + x * pdf;
        }
        case 15: return x > 0.0f ? 1.0f : 0.0f;
        case 16: return p0 * haste_pow_int(x, p1, p2);
        case 17: return p0 * haste_pow_real(x, p1);
        case 18: return (x >= p0 && x <= p1) ? 1.0f : 0.0f;
        case 19: return p0;
        default: return 0.0f;
        }
    }

    extern "C" __global__ void unary_f32(const float* x, float* y, i64 n, int op, float p0, float p1) {
        HASTE_GRID_STRIDE_LOOP(i, n) y[i] = haste_unary(op, x[i], p0, p1);
    }

    /// dx = dy · f'(x, y), the product taken last as on the CPU (so dy = ±inf or NaN gives NaN where f' = 0).
    extern "C" __global__ void unary_backward_f32(const float* x, const float* y, const float* dy, float* dx, i64 n, int op, float p0, float p1, float p2) {
        HASTE_GRID_STRIDE_LOOP(i, n) dx[i] = dy[i] * haste_unary_derivative(op, x[i], y[i], p0, p1, p2);
    }

    /// The same on bfloat16 tensors: y = bf16(f(x)), dx = bf16(dy · f'(x)) with x, dy widened (exact) and unary_f32's
    /// formulas, so each is unary_f32's / unary_backward_f32's float32 result on the widened values rounded once
    /// to nearest even. Only for ops whose derivative reads x alone or nothing (the host checks `runsOnLowValues`): y is passed as 0.
    extern "C" __global__ void unary_bf16(const u16* x, u16* y, i64 n, int op, float p0, float p1) {
        HASTE_GRID_STRIDE_LOOP(i, n) y[i] = haste_float_to_bf16(haste_unary(op, haste_bf16_to_float(x[i]), p0, p1));
    }
    extern "C" __global__ void unary_backward_bf16(const u16* x, const u16* dy, u16* dx, i64 n, int op, float p0, float p1, float p2) {
        HASTE_GRID_STRIDE_LOOP(i, n) {
            const float d = haste_unary_derivative(op, haste_bf16_to_float(x[i]), 0.0f, p0, p1, p2);
            dx[i] = haste_float_to_bf16(haste_bf16_to_float(dy[i]) * d);
        }
    }
    /// Four elements per thread (n4 = n / 4 units of 8 bytes, aligned: the host checks).
    extern "C" __global__ void unary_bf16_v4(const u64* x, u64* y, i64 n4, int op, float p0, float p1) {
        HASTE_GRID_STRIDE_LOOP(i, n4) {
            const u64 w = x[i];
            u64 r = 0;
            for (int j = 0; j < 4; j++)
                r |= (u64)haste_float_to_bf16(haste_unary(op, haste_bf16_to_float((u16)(w >> (16 * j))), p0, p1)) << (16 * j);
            y[i] = r;
        }
    }
    extern "C" __global__ void unary_backward_bf16_v4(const u64* x, const u64* dy, u64* dx, i64 n4, int op, float p0, float p1, float p2) {
        HASTE_GRID_STRIDE_LOOP(i, n4) {
            const u64 w = x[i], g = dy[i];
            u64 r = 0;
            for (int j = 0; j < 4; j++) {
                const float d = haste_unary_derivative(op, haste_bf16_to_float((u16)(w >> (16 * j))), 0.0f, p0, p1, p2);
                r |= (u64)haste_float_to_bf16(haste_bf16_to_float((u16)(g >> (16 * j))) * d) << (16 * j);
            }
            dx[i] = r;
        }
    }

    /// y += alpha·x (alpha = 1: a plain add, as on the CPU).
    extern "C" __global__ void axpy_f32(const float* x, float* y, i64 n, float alpha) {
        if (alpha == 1.0f) { HASTE_GRID_STRIDE_LOOP(i, n) y[i] += x[i]; }
        else { HASTE_GRID_STRIDE_LOOP(i, n) y[i] += alpha * x[i]; }
    }
    """#

    static func binaryCode(_ op: BinaryOp) -> Int32 {
        switch op {
        case .add: return 0
        case .sub: return 1
        case .mul: return 2
        case .div: return 3
        case .maximum: return 4
        case .minimum: return 5
        }
    }

    /// RealModule's pow(x, n: Int) split as it does when n is not exact in Float: (low, high) with high = 0
    /// when it is.
    static func powIntParts(_ n: Int) -> (Float, Float) {
        if let y = Float(exactly: n) { return (y, 0) }
        let mask = Int(truncatingIfNeeded: 0xffffff)
        let round = n < 0 ? mask : 0
        let high = (n &+ round) & ~mask
        return (Float(n &- high), Float(high))
    }

    /// The forward's op code and parameters, decided on the host as CPUUnary's functors decide them.
    static func unaryCode(_ op: UnaryOp) -> (Int32, Float, Float) {
        switch op {
        case .exp: return (0, 0, 0)
        case .log: return (1, 0, 0)
        case .sqrt: return (2, 0, 0)
        case .rsqrt: return (3, 0, 0)
        case .tanh: return (4, 0, 0)
        case .sin: return (5, 0, 0)
        case .cos: return (6, 0, 0)
        case .abs: return (7, 0, 0)
        case .sign: return (8, 0, 0)
        case .reciprocal: return (9, 0, 0)
        case .square: return (10, 0, 0)
        case .sigmoid: return (11, 0, 0)
        case .silu: return (12, 0, 0)
        case .geluTanh: return (13, 0, 0)
        case .gelu: return (14, 0, 0)
        case .relu: return (15, 0, 0)
        case let .pow(p):
            if p == p.rounded(), p.magnitude < 1e9 { let (lo, hi) = powIntParts(Int(p)); return (16, lo, hi) }
            return (17, Float(p), 0)
        case let .clamp(lo, hi): return (18, Float(lo), Float(hi))
        case let .affine(scale, shift): return (19, Float(scale), Float(shift))
        }
    }

    /// The backward's op code and parameters (pow: p, then the exponent p − 1 as the forward encodes it).
    static func unaryBackwardCode(_ op: UnaryOp) -> (Int32, Float, Float, Float) {
        if case let .pow(p) = op {
            if p == 0 { return (20, 0, 0, 0) }
            let q = p - 1
            if q == q.rounded(), q.magnitude < 1e9 { let (lo, hi) = powIntParts(Int(q)); return (16, Float(p), lo, hi) }
            return (17, Float(p), Float(q), 0)
        }
        let (code, a, b) = unaryCode(op)
        return (code, a, b, 0)
    }

    public func binary(_ op: BinaryOp, _ a: Buffer, _ aStrides: [Int], _ b: Buffer, _ bStrides: [Int], _ out: Buffer, shape: [Int]) {
        requireFloat32(a, "\(op)"); requireFloat32(b, "\(op)"); requireFloat32(out, "\(op)")
        let outStrides = CUDABackend.contiguousStrides(shape)
        CUDABackend.forEachSlice8(shape, [aStrides, bStrides, outStrides]) { offsets, rank, shp, strides in
            let pa = address(a, plus: offsets[0]), pb = address(b, plus: offsets[1]), po = address(out, plus: offsets[2])
            if let args = CUDABackend.arguments32(rank: rank, shape: shp, strides: strides, addresses: [pa, pb, po],
                                                  byteSize: 4, maxUnit: 4, passed: 2, lead: [.pointer(pa), .pointer(pb), .pointer(po), .int32(CUDABackend.binaryCode(op))]) {
                return launch(CUDABackend.elementwiseSource, "binary32_f32_u\(args.unit)", grid: Dim3(CUDABackend.blocks(args.count)),
                              block: Dim3(256), args.arguments)
            }
            let count = shp.reduce(1, *)
            var args: [KernelArgument] = [.pointer(pa), .pointer(pb), .pointer(po), .int32(CUDABackend.binaryCode(op)),
                                          .int32(Int32(rank)), .int64(Int64(count))]
            args += shp.map { .int64(Int64($0)) }
            args += strides[0].map { .int64(Int64($0)) }
            args += strides[1].map { .int64(Int64($0)) }
            launch(CUDABackend.elementwiseSource, "binary_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256), args)
        }
    }

    /// Row-major strides of a contiguous `shape`.
    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc *= shape[i] }
        return s
    }

    public func unary(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int) {
        requireFloat32(x, "\(op)")
        if count <= 0 { return }
        let (code, p0, p1) = CUDABackend.unaryCode(op)
        launch(CUDABackend.elementwiseSource, "unary_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(x)), .pointer(address(y)), .int64(Int64(count)), .int32(code), .float(p0), .float(p1)])
    }

    public func unaryBackward(_ op: UnaryOp, x: Buffer, y: Buffer, dy: Buffer, dx: Buffer, count: Int) {
        requireFloat32(x, "\(op) backward"); requireFloat32(dy, "\(op) backward")
        if count <= 0 { return }
        let (code, p0, p1, p2) = CUDABackend.unaryBackwardCode(op)
        launch(CUDABackend.elementwiseSource, "unary_backward_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(x)), .pointer(address(y)), .pointer(address(dy)), .pointer(address(dx)),
                .int64(Int64(count)), .int32(code), .float(p0), .float(p1), .float(p2)])
    }

    public func axpy(alpha: Double, x: Buffer, y: Buffer, count: Int) {
        requireFloat32(x, "axpy"); requireFloat32(y, "axpy")
        if count <= 0 { return }
        launch(CUDABackend.elementwiseSource, "axpy_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(x)), .pointer(address(y)), .int64(Int64(count)), .float(Float(alpha))])
    }
}
