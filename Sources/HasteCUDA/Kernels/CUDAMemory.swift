import HasteTensor

extension CUDABackend {
    /// The memory family: fills by element width (the host computes the element's bit pattern exactly as
    /// `CPUBackend.fill` converts the value), strided copies by element width over up to 8 coalesced axes,
    /// and one dtype-generic cast that reads every type to double and writes from double, as CPUCast.swift does.
    static let memorySource = KernelSource(family: "memory", kernels: [
        "fill_8", "fill_4", "fill_2", "fill_1",
        "strided_copy_8", "strided_copy_4", "strided_copy_2", "strided_copy_1",
        "strided_copy32_16", "strided_copy32_8", "strided_copy32_4", "strided_copy32_2", "strided_copy32_1",
        "cast_any", "cast_f32_bf16", "cast_bf16_f32", "round_through_f32", "cast_f32_bf16_v4", "cast_bf16_f32_v4",
        "round_through_f32_v4", "widen_bf16_copy32_u4", "widen_bf16_copy32_u2", "widen_bf16_copy32_u1",
        "narrow_bf16_copy32_u4", "narrow_bf16_copy32_u2", "narrow_bf16_copy32_u1",
    ], code: #"""
    extern "C" __global__ void fill_8(u64* dst, i64 n, u64 v) { HASTE_GRID_STRIDE_LOOP(i, n) dst[i] = v; }
    extern "C" __global__ void fill_4(u32* dst, i64 n, u64 v) { HASTE_GRID_STRIDE_LOOP(i, n) dst[i] = (u32)v; }
    extern "C" __global__ void fill_2(u16* dst, i64 n, u64 v) { HASTE_GRID_STRIDE_LOOP(i, n) dst[i] = (u16)v; }
    extern "C" __global__ void fill_1(u8* dst, i64 n, u64 v) { HASTE_GRID_STRIDE_LOOP(i, n) dst[i] = (u8)v; }

    /// i / n, in 32 bits when both fit (a 64-bit division is several times slower on the GPU).
    __device__ __forceinline__ i64 haste_div(i64 i, i64 n) {
        return (i <= 0xffffffffLL && n <= 0xffffffffLL) ? (i64)((u32)i / (u32)n) : i / n;
    }

    /// Element offsets of the row-major index i over `rank` (≤ 8) axes in two strided views.
    __device__ __forceinline__ void haste_two_offsets(i64 i, int rank, const i64* shape, const i64* sa, const i64* sb,
                                                      i64* oa, i64* ob) {
        i64 a = 0, b = 0;
        for (int d = rank - 1; d > 0; --d) {
            i64 q = haste_div(i, shape[d]), c = i - q * shape[d];
            i = q;
            a += c * sa[d];
            b += c * sb[d];
        }
        *oa = a + i * sa[0];
        *ob = b + i * sb[0];
    }

    template <typename T>
    __device__ __forceinline__ void haste_strided_copy(const T* src, T* dst, int rank, i64 count,
        i64 n0, i64 n1, i64 n2, i64 n3, i64 n4, i64 n5, i64 n6, i64 n7,
        i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 s6, i64 s7,
        i64 d0, i64 d1, i64 d2, i64 d3, i64 d4, i64 d5, i64 d6, i64 d7) {
        i64 shape[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
        i64 ss[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
        i64 ds[8] = {d0, d1, d2, d3, d4, d5, d6, d7};
        if (rank == 1) {
            HASTE_GRID_STRIDE_LOOP(i, count) dst[i * d0] = src[i * s0];
            return;
        }
        HASTE_GRID_STRIDE_LOOP(i, count) {
            i64 so, dof;
            haste_two_offsets(i, rank, shape, ss, ds, &so, &dof);
            dst[dof] = src[so];
        }
    }

    extern "C" __global__ void strided_copy_8(const u64* src, u64* dst, int rank, i64 count, i64 n0, i64 n1, i64 n2, i64 n3, i64 n4, i64 n5, i64 n6, i64 n7, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 s6, i64 s7, i64 d0, i64 d1, i64 d2, i64 d3, i64 d4, i64 d5, i64 d6, i64 d7) {
        haste_strided_copy<u64>(src, dst, rank, count, n0, n1, n2, n3, n4, n5, n6, n7, s0, s1, s2, s3, s4, s5, s6, s7, d0, d1, d2, d3, d4, d5, d6, d7);
    }
    extern "C" __global__ void strided_copy_4(const u32* src, u32* dst, int rank, i64 count, i64 n0, i64 n1, i64 n2, i64 n3, i64 n4, i64 n5, i64 n6, i64 n7, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 s6, i64 s7, i64 d0, i64 d1, i64 d2, i64 d3, i64 d4, i64 d5, i64 d6, i64 d7) {
        haste_strided_copy<u32>(src, dst, rank, count, n0, n1, n2, n3, n4, n5, n6, n7, s0, s1, s2, s3, s4, s5, s6, s7, d0, d1, d2, d3, d4, d5, d6, d7);
    }
    extern "C" __global__ void strided_copy_2(const u16* src, u16* dst, int rank, i64 count, i64 n0, i64 n1, i64 n2, i64 n3, i64 n4, i64 n5, i64 n6, i64 n7, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 s6, i64 s7, i64 d0, i64 d1, i64 d2, i64 d3, i64 d4, i64 d5, i64 d6, i64 d7) {
        haste_strided_copy<u16>(src, dst, rank, count, n0, n1, n2, n3, n4, n5, n6, n7, s0, s1, s2, s3, s4, s5, s6, s7, d0, d1, d2, d3, d4, d5, d6, d7);
    }
    extern "C" __global__ void strided_copy_1(const u8* src, u8* dst, int rank, i64 count, i64 n0, i64 n1, i64 n2, i64 n3, i64 n4, i64 n5, i64 n6, i64 n7, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 s6, i64 s7, i64 d0, i64 d1, i64 d2, i64 d3, i64 d4, i64 d5, i64 d6, i64 d7) {
        haste_strided_copy<u8>(src, dst, rank, count, n0, n1, n2, n3, n4, n5, n6, n7, s0, s1, s2, s3, s4, s5, s6, s7, d0, d1, d2, d3, d4, d5, d6, d7);
    }

    /// The copy of views whose element count and offsets fit in 31 bits (every tensor of a training step):
    /// 32-bit index arithmetic with each division by an extent made a multiply-high and a shift (`haste_fdiv`,
    /// divisors from `CUDABackend.fastDivisor`), the rank unrolled, and elements moved as the widest unit
    /// (16, 8, 4, 2 or 1 bytes) the host found aligned in both views (`CUDABackend.copyUnit`). The i64 kernels
    /// above (483 PTX instructions with 25 divisions, the shape and strides in local memory) moved ~180 GB/s on the
    /// H200, 248 of a SiT-XL/2 bf16 step's 618 ms; these do one division-free decomposition per up to 16 bytes.
    template <typename T>
    __device__ __forceinline__ void haste_strided_copy32(const T* src, T* dst, HASTE_VIEWS32_PARAMS(s, d)) {
        HASTE_VIEWS32(s, d);
        HASTE_GRID_STRIDE_LOOP32(i, count) {
            int a, b;
            haste_offsets32(i, rank, v32_n, v32_f, v32_a, v32_b, &a, &b);
            dst[b] = src[a];
        }
    }
    extern "C" __global__ void strided_copy32_16(const haste_v16* src, haste_v16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_strided_copy32(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void strided_copy32_8(const u64* src, u64* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_strided_copy32(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void strided_copy32_4(const u32* src, u32* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_strided_copy32(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void strided_copy32_2(const u16* src, u16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_strided_copy32(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void strided_copy32_1(const u8* src, u8* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_strided_copy32(src, dst, HASTE_VIEWS32_ARGS(s, d)); }

    /// strided_copy32 with a cast, bf16 → float32 (widen) or float32 → bf16 (narrow, to nearest even as
    /// cast_f32_bf16): U elements per index (a and b count units of U elements), 4 as one 8-byte bf16 and one 16-byte
    /// float32 access. Autocast's head splits and merges around the flash-attention kernels.
    __device__ __forceinline__ void haste_ld4(const u16* p, float* v) {
        const u64 w = *(const u64*)p;
        for (int j = 0; j < 4; j++) v[j] = haste_bf16_to_float((u16)(w >> (16 * j)));
    }
    __device__ __forceinline__ void haste_ld4(const float* p, float* v) {
        const haste_f4 x = *(const haste_f4*)p;
        v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
    }
    __device__ __forceinline__ void haste_st4(float* q, const float* v) {
        haste_f4 y;
        y.x = v[0]; y.y = v[1]; y.z = v[2]; y.w = v[3];
        *(haste_f4*)q = y;
    }
    __device__ __forceinline__ void haste_st4(u16* q, const float* v) {
        u64 w = 0;
        for (int j = 0; j < 4; j++) w |= (u64)haste_float_to_bf16(v[j]) << (16 * j);
        *(u64*)q = w;
    }
    __device__ __forceinline__ float haste_ld1(const u16* p) { return haste_bf16_to_float(*p); }
    __device__ __forceinline__ float haste_ld1(const float* p) { return *p; }
    __device__ __forceinline__ void haste_st1(float* q, float v) { *q = v; }
    __device__ __forceinline__ void haste_st1(u16* q, float v) { *q = haste_float_to_bf16(v); }
    template <int U, typename TS, typename TD>
    __device__ __forceinline__ void haste_cast_copy32(const TS* src, TD* dst, HASTE_VIEWS32_PARAMS(s, d)) {
        HASTE_VIEWS32(s, d);
        HASTE_GRID_STRIDE_LOOP32(i, count) {
            int a, b;
            haste_offsets32(i, rank, v32_n, v32_f, v32_a, v32_b, &a, &b);
            const TS* p = src + (i64)a * U;
            TD* q = dst + (i64)b * U;
            if (U == 4) {
                float v[4];
                haste_ld4(p, v);
                haste_st4(q, v);
            } else {
                for (int j = 0; j < U; j++) haste_st1(q + j, haste_ld1(p + j));
            }
        }
    }
    extern "C" __global__ void widen_bf16_copy32_u4(const u16* src, float* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<4>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void widen_bf16_copy32_u2(const u16* src, float* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<2>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void widen_bf16_copy32_u1(const u16* src, float* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<1>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void narrow_bf16_copy32_u4(const float* src, u16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<4>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void narrow_bf16_copy32_u2(const float* src, u16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<2>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void narrow_bf16_copy32_u1(const float* src, u16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<1>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }

    /// dtype codes (CUDABackend.dtypeCode): 0 float32, 1 float64, 2 float16, 3 bfloat16, 4 int32, 5 int64, 6 uint8, 7 bool.
    /// Every type reads to double (exact for all but int64 beyond 2^53, as on the CPU).
    __device__ __forceinline__ double haste_cast_read(const u8* p, int type, i64 i) {
        switch (type) {
        case 0: return (double)((const float*)p)[i];
        case 1: return ((const double*)p)[i];
        case 2: return (double)haste_half_to_float(((const u16*)p)[i]);
        case 3: return (double)haste_bf16_to_float(((const u16*)p)[i]);
        case 4: return (double)((const int*)p)[i];
        case 5: return (double)((const i64*)p)[i];
        case 6: return (double)p[i];
        default: return p[i] != 0 ? 1.0 : 0.0;
        }
    }
    /// Float → integer truncates toward zero like torch; NaN and ±inf become 0, beyond ±9.2e18 saturates (CPUCast.truncatingInt).
    __device__ __forceinline__ i64 haste_truncating_int(double v) {
        if (isnan(v) || isinf(v)) return 0;
        if (v >= 9.2e18) return (i64)0x7fffffffffffffffLL;
        if (v <= -9.2e18) return (i64)(-0x7fffffffffffffffLL - 1);
        return (i64)v;
    }
    /// Narrower integers keep the low bits (Swift's truncatingIfNeeded); bool is v ≠ 0 (NaN → true).
    __device__ __forceinline__ void haste_cast_write(u8* p, int type, i64 i, double v) {
        switch (type) {
        case 0: ((float*)p)[i] = (float)v; break;
        case 1: ((double*)p)[i] = v; break;
        case 2: ((u16*)p)[i] = haste_float_to_half((float)v); break;
        case 3: ((u16*)p)[i] = haste_float_to_bf16((float)v); break;
        case 4: ((u32*)p)[i] = (u32)(u64)haste_truncating_int(v); break;
        case 5: ((i64*)p)[i] = haste_truncating_int(v); break;
        case 6: p[i] = (u8)(u64)haste_truncating_int(v); break;
        default: p[i] = v != 0.0 ? 1 : 0; break;
        }
    }
    extern "C" __global__ void cast_any(const u8* src, int srcType, u8* dst, int dstType, i64 n) {
        HASTE_GRID_STRIDE_LOOP(i, n) haste_cast_write(dst, dstType, i, haste_cast_read(src, srcType, i));
    }
    /// cast_any's float32 ↔ bf16 conversions without its per-element type switch (Autocast's operands and results).
    extern "C" __global__ void cast_f32_bf16(const float* src, u16* dst, i64 n) { HASTE_GRID_STRIDE_LOOP(i, n) dst[i] = haste_float_to_bf16(src[i]); }
    extern "C" __global__ void cast_bf16_f32(const u16* src, float* dst, i64 n) { HASTE_GRID_STRIDE_LOOP(i, n) dst[i] = haste_bf16_to_float(src[i]); }
    /// The same four elements at a time (n4 = n / 4 units; 16-byte float32 and 8-byte bf16 accesses, aligned: the host
    /// checks), for the large Autocast casts and roundings.
    extern "C" __global__ void cast_f32_bf16_v4(const haste_f4* src, u64* dst, i64 n4) {
        HASTE_GRID_STRIDE_LOOP(i, n4) {
            const haste_f4 x = src[i];
            dst[i] = (u64)haste_float_to_bf16(x.x) | ((u64)haste_float_to_bf16(x.y) << 16)
                   | ((u64)haste_float_to_bf16(x.z) << 32) | ((u64)haste_float_to_bf16(x.w) << 48);
        }
    }
    extern "C" __global__ void cast_bf16_f32_v4(const u64* src, haste_f4* dst, i64 n4) {
        HASTE_GRID_STRIDE_LOOP(i, n4) {
            const u64 b = src[i];
            haste_f4 y;
            y.x = haste_bf16_to_float((u16)b); y.y = haste_bf16_to_float((u16)(b >> 16));
            y.z = haste_bf16_to_float((u16)(b >> 32)); y.w = haste_bf16_to_float((u16)(b >> 48));
            dst[i] = y;
        }
    }
    extern "C" __global__ void round_through_f32_v4(const haste_f4* x, haste_f4* y, int lowType, i64 n4) {
        HASTE_GRID_STRIDE_LOOP(i, n4) {
            haste_f4 v = x[i];
            if (lowType == 3) {
                v.x = haste_round_bf16(v.x); v.y = haste_round_bf16(v.y); v.z = haste_round_bf16(v.z); v.w = haste_round_bf16(v.w);
            } else {
                v.x = haste_half_to_float(haste_float_to_half(v.x)); v.y = haste_half_to_float(haste_float_to_half(v.y));
                v.z = haste_half_to_float(haste_float_to_half(v.z)); v.w = haste_half_to_float(haste_float_to_half(v.w));
            }
            y[i] = v;
        }
    }
    /// y = float32(low(x)): cast_any's conversions, float32 → low → float32, in registers (low = 2 or 3; the
    /// conversions through double of cast_any are exact for float32 values, so these are its bits).
    extern "C" __global__ void round_through_f32(const float* x, float* y, int lowType, i64 n) {
        if (lowType == 3) {
            HASTE_GRID_STRIDE_LOOP(i, n) y[i] = haste_round_bf16(x[i]);
        } else {
            HASTE_GRID_STRIDE_LOOP(i, n) y[i] = haste_half_to_float(haste_float_to_half(x[i]));
        }
    }
    """#)

    /// The code `cast_any` uses for a dtype.
    static func dtypeCode(_ t: DType) -> Int32 {
        switch t {
        case .float32: return 0
        case .float64: return 1
        case .float16: return 2
        case .bfloat16: return 3
        case .int32: return 4
        case .int64: return 5
        case .uint8: return 6
        case .bool: return 7
        }
    }

    /// `value` in `t`'s bits, converted exactly as `CPUBackend.fill` converts it (the same Swift conversions).
    static func fillPattern(_ value: Double, _ t: DType) -> UInt64 {
        switch t {
        case .float32: return UInt64(Float(value).bitPattern)
        case .float64: return value.bitPattern
        case .float16: return UInt64(Float(value).halfBits)
        case .bfloat16: return UInt64(Float(value).bfloat16Bits)
        case .int32: return UInt64(UInt32(bitPattern: Int32(value)))
        case .int64: return UInt64(bitPattern: Int64(value))
        case .uint8: return UInt64(UInt8(value))
        case .bool: return value != 0 ? 1 : 0
        }
    }

    public func fill(_ dst: Buffer, count: Int, value: Double) {
        if count <= 0 { return }
        let kernel = ["", "fill_1", "fill_2", "", "fill_4", "", "", "", "fill_8"][dst.dtype.byteSize]
        launch(CUDABackend.memorySource, kernel, grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(dst)), .int64(Int64(count)), .uint64(CUDABackend.fillPattern(value, dst.dtype))])
    }

    /// Merges adjacent axes where every view steps uniformly and drops size-1 axes, like `CPUBackend.coalesce`
    /// (for any number of strided views). Returns ([1], zeros) for a single element.
    static func coalesce(_ shape: [Int], _ strides: [[Int]]) -> ([Int], [[Int]]) {
        var shp: [Int] = []
        var st = [[Int]](repeating: [], count: strides.count)
        for i in 0..<shape.count where shape[i] != 1 {
            if let last = shp.last, (0..<strides.count).allSatisfy({ st[$0].last! == strides[$0][i] * shape[i] }) {
                shp[shp.count - 1] = last * shape[i]
                for v in 0..<strides.count { st[v][st[v].count - 1] = strides[v][i] }
            } else {
                shp.append(shape[i])
                for v in 0..<strides.count { st[v].append(strides[v][i]) }
            }
        }
        if shp.isEmpty { return ([1], [[Int]](repeating: [0], count: strides.count)) }
        return (shp, st)
    }

    /// Runs `body` over a view of any rank with at most 8 axes per launch: the coalesced view's leading axes
    /// beyond 8 are walked on the host, `body` getting each slice's element offsets (one per view) and its
    /// ≤ 8-axis shape and strides, padded with (1, 0) to 8. Nothing runs for an empty view.
    static func forEachSlice8(_ shape0: [Int], _ strides0: [[Int]],
                              _ body: (_ offsets: [Int], _ rank: Int, _ shape: [Int], _ strides: [[Int]]) -> Void) {
        if shape0.contains(0) { return }
        let (shape, strides) = coalesce(shape0, strides0)
        let lead = Swift.max(0, shape.count - 8)
        let tailShape = Array(shape[lead...]), rank = tailShape.count
        let pad = { (a: [Int], v: Int) in a + [Int](repeating: v, count: 8 - a.count) }
        let tailStrides = strides.map { pad(Array($0[lead...]), 0) }
        let slices = shape[..<lead].reduce(1, *)
        for s in 0..<slices {
            var rem = s
            var offsets = [Int](repeating: 0, count: strides.count)
            for axis in stride(from: lead - 1, through: 0, by: -1) {
                let c = rem % shape[axis]
                rem /= shape[axis]
                for v in 0..<strides.count { offsets[v] += c * strides[v][axis] }
            }
            body(offsets, rank, pad(tailShape, 1), tailStrides)
        }
    }

    /// `address(b)` moved by `elements` (which may be negative) of `b`'s dtype.
    func address(_ b: Buffer, plus elements: Int) -> DevicePointer {
        address(b) &+ DevicePointer(bitPattern: Int64(elements * b.dtype.byteSize))
    }

    /// The magic pair of `haste_fdiv` for a divisor 1 ≤ d ≤ 2³¹ (the round-up method of Granlund and Montgomery,
    /// "Division by invariant integers using multiplication", 1994, for dividends below 2³¹): l = ⌈log₂ d⌉,
    /// m = ⌊2³² (2ˡ − d) / d⌋ + 1 in bits 0–31, l in bits 32–37; n / d = (mulhi(m, n) + n) >> l.
    static func fastDivisor(_ d: Int) -> UInt64 {
        precondition(d >= 1 && d <= 1 << 31, "fastDivisor(\(d))")
        var l = 0
        while (1 << l) < d { l += 1 }
        let m = ((UInt64(1) << 32) * UInt64((1 << l) - d)) / UInt64(d) + 1
        return (m & 0xffff_ffff) | (UInt64(l) << 32)
    }

    /// `haste_fdiv` on the host (tests).
    static func fastDivide(_ n: UInt32, _ magic: UInt64) -> UInt32 {
        let hi = UInt32((UInt64(UInt32(truncatingIfNeeded: magic)) * UInt64(n)) >> 32)
        return (hi &+ n) >> UInt32(magic >> 32)
    }

    /// Elements per unit of `strided_copy32_*`: the most (a power of two, ≤ 16 bytes, ≤ `maxUnit`) such that the innermost
    /// axis is contiguous in both views and a multiple of it, every other stride a multiple of it and both
    /// starting addresses aligned to its bytes; 1 otherwise.
    static func copyUnit(byteSize: Int, shape: [Int], strides: [[Int]], addresses: [DevicePointer], maxUnit: Int = 16) -> Int {
        let last = shape.count - 1
        guard strides.allSatisfy({ $0[last] == 1 }) else { return 1 }
        var unit = Swift.min(16 / byteSize, maxUnit)
        while unit > 1 {
            let bytes = UInt64(unit * byteSize)
            if shape[last] % unit == 0, addresses.allSatisfy({ $0 % bytes == 0 }),
               strides.allSatisfy({ s in (0..<last).allSatisfy { s[$0] % unit == 0 } }) { return unit }
            unit /= 2
        }
        return 1
    }

    /// The arguments of a 32-bit kernel (`strided_copy32_*`, `binary32_f32_u*`) for a ≤ 8-axis slice: `lead`,
    /// rank, count, extents 1…7 and their `fastDivisor`s, then the strides (padded to 8) of the first `passed`
    /// views (all by default; a contiguous output follows from the index), everything in units of the widest
    /// `copyUnit` ≤ `maxUnit` elements all views allow. Nil (use the i64 kernel) when a stride is negative or
    /// the count or a view's last offset reaches 2³¹ units.
    static func arguments32(rank: Int, shape: [Int], strides: [[Int]], addresses: [DevicePointer], byteSize: Int,
                            maxUnit: Int = 16, passed: Int? = nil, lead: [KernelArgument]) -> (unit: Int, count: Int, arguments: [KernelArgument])? {
        // `shape` and `strides` come padded to 8 axes with (1, 0) (forEachSlice8): the padding divides and sums to nothing.
        let limit = 1 << 31
        guard strides.allSatisfy({ $0.allSatisfy { $0 >= 0 } }) else { return nil }
        let unit = copyUnit(byteSize: byteSize, shape: Array(shape[..<rank]), strides: strides.map { Array($0[..<rank]) },
                            addresses: addresses, maxUnit: maxUnit)
        var n = shape
        n[rank - 1] /= unit
        let st = strides.map { s in s.indices.map { $0 == rank - 1 ? s[$0] : s[$0] / unit } }
        let count = n.reduce(1, *)
        guard count < limit, st.allSatisfy({ s in zip(n, s).reduce(0) { $0 + ($1.0 - 1) * $1.1 } < limit }) else { return nil }
        var args = lead + [.int32(Int32(rank)), .int32(Int32(count))]
        args += n[1...].map { .int32(Int32($0)) }
        args += n[1...].map { .uint64(fastDivisor($0)) }
        for s in st.prefix(passed ?? st.count) { args += s.map { .int32(Int32($0)) } }
        return (unit, count, args)
    }

    public func stridedCopy(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) {
        let size = src.dtype.byteSize
        let kernel = "strided_copy_\(size)"
        CUDABackend.forEachSlice8(shape, [srcStrides, dstStrides]) { offsets, rank, shp, strides in
            let from = address(src, plus: offsets[0]), to = address(dst, plus: offsets[1])
            if let args = CUDABackend.arguments32(rank: rank, shape: shp, strides: strides, addresses: [from, to], byteSize: size,
                                                  lead: [.pointer(from), .pointer(to)]) {
                return launch(CUDABackend.memorySource, "strided_copy32_\(args.unit * size)", grid: Dim3(CUDABackend.blocks(args.count)),
                              block: Dim3(256), args.arguments)
            }
            let count = shp.reduce(1, *)
            var args: [KernelArgument] = [.pointer(from), .pointer(to), .int32(Int32(rank)), .int64(Int64(count))]
            args += shp.map { .int64(Int64($0)) }
            args += strides[0].map { .int64(Int64($0)) }
            args += strides[1].map { .int64(Int64($0)) }
            launch(CUDABackend.memorySource, kernel, grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256), args)
        }
    }

    /// The 32-bit kernels only (one slice of ≤ 8 axes whose offsets fit): false otherwise, and the caller copies and
    /// casts in two passes. Units of up to 4 elements where both views allow 16-byte float32 accesses.
    public func stridedCast(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) -> Bool {
        let kernel: String
        switch (src.dtype, dst.dtype) {
        case (.bfloat16, .float32): kernel = "widen_bf16_copy32_u"
        case (.float32, .bfloat16): kernel = "narrow_bf16_copy32_u"
        default: return false
        }
        if shape.contains(0) { return true }
        guard CUDABackend.coalesce(shape, [srcStrides, dstStrides]).0.count <= 8 else { return false }   // one slice
        var refused = false
        CUDABackend.forEachSlice8(shape, [srcStrides, dstStrides]) { offsets, rank, shp, strides in
            let from = address(src, plus: offsets[0]), to = address(dst, plus: offsets[1])
            guard let args = CUDABackend.arguments32(rank: rank, shape: shp, strides: strides, addresses: [from, to], byteSize: 4,
                                                     maxUnit: 4, lead: [.pointer(from), .pointer(to)]) else { refused = true; return }
            launch(CUDABackend.memorySource, kernel + "\(args.unit)", grid: Dim3(CUDABackend.blocks(args.count)), block: Dim3(256),
                   args.arguments)
        }
        return !refused
    }

    public func roundThrough(_ x: Buffer, _ y: Buffer, low: DType, count: Int) {
        requireFloat32(x, "roundThrough"); requireFloat32(y, "roundThrough")
        guard low == .bfloat16 || low == .float16 else { CUDABackend.fail("internal: roundThrough to \(low)") }
        if count <= 0 { return }
        let v4 = count % 4 == 0 && address(x) % 16 == 0 && address(y) % 16 == 0
        let units = v4 ? count / 4 : count
        launch(CUDABackend.memorySource, v4 ? "round_through_f32_v4" : "round_through_f32", grid: Dim3(CUDABackend.blocks(units)),
               block: Dim3(256), [.pointer(address(x)), .pointer(address(y)), .int32(CUDABackend.dtypeCode(low)), .int64(Int64(units))])
    }

    public func cast(from src: Buffer, to dst: Buffer, count: Int) {
        if count <= 0 { return }
        let direct: String? = switch (src.dtype, dst.dtype) {
        case (.float32, .bfloat16): "cast_f32_bf16"
        case (.bfloat16, .float32): "cast_bf16_f32"
        default: nil
        }
        if let direct {   // four elements per thread where both sides are aligned for it
            let v4 = count % 4 == 0 && address(src) % UInt64(4 * src.dtype.byteSize) == 0
                && address(dst) % UInt64(4 * dst.dtype.byteSize) == 0
            let units = v4 ? count / 4 : count
            return launch(CUDABackend.memorySource, v4 ? direct + "_v4" : direct, grid: Dim3(CUDABackend.blocks(units)),
                          block: Dim3(256), [.pointer(address(src)), .pointer(address(dst)), .int64(Int64(units))])
        }
        launch(CUDABackend.memorySource, "cast_any", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256),
               [.pointer(address(src)), .int32(CUDABackend.dtypeCode(src.dtype)), .pointer(address(dst)),
                .int32(CUDABackend.dtypeCode(dst.dtype)), .int64(Int64(count))])
    }
}
