import HasteTensor

extension CUDABackend {
    /// The memory family: fills by element width (the host computes the element's bit pattern exactly as
    /// `CPUBackend.fill` converts the value), strided copies by element width over up to 8 coalesced axes,
    /// and one dtype-generic cast that reads every type to double and writes from double, as CPUCast.swift does.
    /// The casts' kernels and host side are in CUDACast.swift.
    static let memorySource = KernelSource(family: "memory", kernels: [
        "fill_8", "fill_4", "fill_2", "fill_1",
        "strided_copy_8", "strided_copy_4", "strided_copy_2", "strided_copy_1",
        "strided_copy32_16", "strided_copy32_8", "strided_copy32_4", "strided_copy32_2", "strided_copy32_1",
        "cast_any", "cast_f32_bf16", "cast_bf16_f32", "round_through_f32", "cast_f32_bf16_v4", "cast_bf16_f32_v4",
        "round_through_f32_v4", "widen_bf16_copy32_u4", "widen_bf16_copy32_u2", "widen_bf16_copy32_u1",
        "narrow_bf16_copy32_u4", "narrow_bf16_copy32_u2", "narrow_bf16_copy32_u1", "add_bf16_v4", "add_bf16",
        "cast_bf16_f32_v4_segments", "gather_columns_f32_u4", "gather_columns_f32_u1", "gather_columns_bf16_u4",
        "gather_columns_bf16_u1", "add_widened_fb_v4", "add_widened_fb", "add_widened_bf_v4", "add_widened_bf", "add_widened_bb_v4",
        "add_widened_bb",
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
    """# + "\n" + memoryCastCode)

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
}
