import Foundation
import HasteTensor

extension CUDABackend {
    /// The memory family's casts (CUDAMemory.swift holds the family): the dtype-generic `cast_any`, the direct
    /// float32 ↔ bf16 casts and one-pass roundings (one or four elements per thread), and the strided copies with a
    /// float32 ↔ bf16 cast (`stridedCast`).
    static let memoryCastCode = #"""
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
                for (int j = 0; j < U; j++) haste_st(q, j, haste_ld(p, j));
            }
        }
    }
    extern "C" __global__ void widen_bf16_copy32_u4(const u16* src, float* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<4>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void widen_bf16_copy32_u2(const u16* src, float* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<2>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void widen_bf16_copy32_u1(const u16* src, float* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<1>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void narrow_bf16_copy32_u4(const float* src, u16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<4>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void narrow_bf16_copy32_u2(const float* src, u16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<2>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }
    extern "C" __global__ void narrow_bf16_copy32_u1(const float* src, u16* dst, HASTE_VIEWS32_PARAMS(s, d)) { haste_cast_copy32<1>(src, dst, HASTE_VIEWS32_ARGS(s, d)); }

    /// out[r][j·w + c] = piece j's [r][c] (0 where its pointer is null), j < k ≤ 8 (`gatherColumns`: an adaLN
    /// modulation's gradient from its pieces'); U columns a thread (4: 16-byte loads where w and the pointers allow;
    /// out's index is U·i, rows of k·w); a u16 out rounds as cast_f32_bf16 (haste_st4 and haste_st: haste_float_to_bf16).
    template <int U, typename TO>
    __device__ __forceinline__ void haste_gather_columns(const float* p0, const float* p1, const float* p2, const float* p3,
                                                         const float* p4, const float* p5, const float* p6, const float* p7,
                                                         TO* out, i64 rows, int w, int k) {
        const int wu = w / U;
        HASTE_GRID_STRIDE_LOOP(i, rows * k * wu) {
            const i64 r = haste_div(i, (i64)k * wu);
            const int c = (int)(i - r * k * wu), j = c / wu, u = c - j * wu;
            const float* p = j == 0 ? p0 : j == 1 ? p1 : j == 2 ? p2 : j == 3 ? p3 : j == 4 ? p4 : j == 5 ? p5 : j == 6 ? p6 : p7;
            if constexpr (U == 4) {
                float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                if (p != 0) haste_ld4(p + r * w + 4 * u, v);
                haste_st4(out + 4 * i, v);
            } else {
                haste_st(out, i, p != 0 ? p[r * w + u] : 0.0f);
            }
        }
    }
    #define HASTE_GATHER_PARAMS const float* p0, const float* p1, const float* p2, const float* p3, const float* p4, \
                                const float* p5, const float* p6, const float* p7
    #define HASTE_GATHER_ARGS p0, p1, p2, p3, p4, p5, p6, p7
    extern "C" __global__ void gather_columns_f32_u4(HASTE_GATHER_PARAMS, float* out, i64 rows, int w, int k) { haste_gather_columns<4>(HASTE_GATHER_ARGS, out, rows, w, k); }
    extern "C" __global__ void gather_columns_f32_u1(HASTE_GATHER_PARAMS, float* out, i64 rows, int w, int k) { haste_gather_columns<1>(HASTE_GATHER_ARGS, out, rows, w, k); }
    extern "C" __global__ void gather_columns_bf16_u4(HASTE_GATHER_PARAMS, u16* out, i64 rows, int w, int k) { haste_gather_columns<4>(HASTE_GATHER_ARGS, out, rows, w, k); }
    extern "C" __global__ void gather_columns_bf16_u1(HASTE_GATHER_PARAMS, u16* out, i64 rows, int w, int k) { haste_gather_columns<1>(HASTE_GATHER_ARGS, out, rows, w, k); }

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
    /// Four packed bf16 values widened.
    __device__ __forceinline__ haste_f4 haste_widen4(u64 b) {
        haste_f4 y;
        y.x = haste_bf16_to_float((u16)b); y.y = haste_bf16_to_float((u16)(b >> 16));
        y.z = haste_bf16_to_float((u16)(b >> 32)); y.w = haste_bf16_to_float((u16)(b >> 48));
        return y;
    }
    extern "C" __global__ void cast_bf16_f32_v4(const u64* src, haste_f4* dst, i64 n4) {
        HASTE_GRID_STRIDE_LOOP(i, n4) dst[i] = haste_widen4(src[i]);
    }
    /// cast_bf16_f32_v4 over up to HASTE_CAST_SEGMENTS (src, dst, n4) segments in one launch (`widenBF16`: the weight and
    /// bias gradients a bf16 node writes into their arena slots): segment i takes the next b_i blocks of the grid and
    /// strides over its n4_i units with them. Each element is cast_bf16_f32's (widening is exact).
    #define HASTE_CAST_SEGMENTS 8
    #define HASTE_SEG_PARAMS(i) const u64* s##i, haste_f4* d##i, i64 n##i, int b##i
    #define HASTE_SEG_PICK(i) if (i < segments && bx >= blocks) { bx -= blocks; s = s##i; d = d##i; n = n##i; blocks = b##i; }
    extern "C" __global__ void cast_bf16_f32_v4_segments(HASTE_SEG_PARAMS(0), HASTE_SEG_PARAMS(1), HASTE_SEG_PARAMS(2),
                                                         HASTE_SEG_PARAMS(3), HASTE_SEG_PARAMS(4), HASTE_SEG_PARAMS(5),
                                                         HASTE_SEG_PARAMS(6), HASTE_SEG_PARAMS(7), int segments) {
        int bx = blockIdx.x, blocks = b0;
        const u64* s = s0;
        haste_f4* d = d0;
        i64 n = n0;
        HASTE_SEG_PICK(1) HASTE_SEG_PICK(2) HASTE_SEG_PICK(3) HASTE_SEG_PICK(4) HASTE_SEG_PICK(5) HASTE_SEG_PICK(6) HASTE_SEG_PICK(7)
        if (bx >= blocks) return;                  // past the last segment's blocks (the host launches exactly Σ b_i)
        for (i64 i = (i64)bx * blockDim.x + threadIdx.x; i < n; i += (i64)blockDim.x * blocks) d[i] = haste_widen4(s[i]);
    }
    /// y = haste_round_through(x, s, lowType) (the prelude), four elements a thread or one.
    extern "C" __global__ void round_through_f32_v4(const haste_f4* x, haste_f4* y, int lowType, float s, i64 n4) {
        HASTE_GRID_STRIDE_LOOP(i, n4) {
            haste_f4 v = x[i];
            v.x = haste_round_through(v.x, s, lowType); v.y = haste_round_through(v.y, s, lowType);
            v.z = haste_round_through(v.z, s, lowType); v.w = haste_round_through(v.w, s, lowType);
            y[i] = v;
        }
    }
    extern "C" __global__ void round_through_f32(const float* x, float* y, int lowType, float s, i64 n) {
        HASTE_GRID_STRIDE_LOOP(i, n) y[i] = haste_round_through(x[i], s, lowType);
    }
    /// out = float(a) + float(b), a and b float32 or bf16 (the add of the widened values, `__fadd_rn`), in one pass, four
    /// elements a thread (16-byte float32 and 8-byte bf16 accesses) or one. A float32 out: `addWidened`, the autograd
    /// walk's sum of two gradient terms of a float32 tensor, a bf16 GEMM's rounded output among them; a bf16 out
    /// (rounded by haste_st4 / haste_st as cast_f32_bf16): `addLow`, torch's sum of two bf16 tensors, rounded once.
    template <typename TA, typename TB, typename TO>
    __device__ __forceinline__ void haste_add_widened(const TA* a, const TB* b, TO* out, i64 n, bool four) {
        if (four) {
            HASTE_GRID_STRIDE_LOOP(i, n) {
                float x[4], y[4];
                haste_ld4(a + 4 * i, x);
                haste_ld4(b + 4 * i, y);
                for (int j = 0; j < 4; j++) x[j] = __fadd_rn(x[j], y[j]);
                haste_st4(out + 4 * i, x);
            }
        } else {
            HASTE_GRID_STRIDE_LOOP(i, n) haste_st(out, i, __fadd_rn(haste_ld(a, i), haste_ld(b, i)));
        }
    }
    extern "C" __global__ void add_bf16_v4(const u16* a, const u16* b, u16* out, i64 n4) { haste_add_widened(a, b, out, n4, true); }
    extern "C" __global__ void add_bf16(const u16* a, const u16* b, u16* out, i64 n) { haste_add_widened(a, b, out, n, false); }
    extern "C" __global__ void add_widened_fb_v4(const float* a, const u16* b, float* out, i64 n4) { haste_add_widened(a, b, out, n4, true); }
    extern "C" __global__ void add_widened_fb(const float* a, const u16* b, float* out, i64 n) { haste_add_widened(a, b, out, n, false); }
    extern "C" __global__ void add_widened_bf_v4(const u16* a, const float* b, float* out, i64 n4) { haste_add_widened(a, b, out, n4, true); }
    extern "C" __global__ void add_widened_bf(const u16* a, const float* b, float* out, i64 n) { haste_add_widened(a, b, out, n, false); }
    extern "C" __global__ void add_widened_bb_v4(const u16* a, const u16* b, float* out, i64 n4) { haste_add_widened(a, b, out, n4, true); }
    extern "C" __global__ void add_widened_bb(const u16* a, const u16* b, float* out, i64 n) { haste_add_widened(a, b, out, n, false); }
    """#

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

    public func roundThrough(_ x: Buffer, _ y: Buffer, low: DType, count: Int, shift: Float) {
        requireFloat32(x, "roundThrough"); requireFloat32(y, "roundThrough")
        guard low == .bfloat16 || low == .float16 else { CUDABackend.fail("internal: roundThrough to \(low)") }
        if count <= 0 { return }
        let v4 = count % 4 == 0 && address(x) % 16 == 0 && address(y) % 16 == 0
        let units = v4 ? count / 4 : count
        launch(CUDABackend.memorySource, v4 ? "round_through_f32_v4" : "round_through_f32", grid: Dim3(CUDABackend.blocks(units)),
               block: Dim3(256), [.pointer(address(x)), .pointer(address(y)), .int32(CUDABackend.dtypeCode(low)), .float(shift),
                                  .int64(Int64(units))])
    }

    public func addLow(_ a: Buffer, _ b: Buffer, _ out: Buffer, count: Int) -> Bool {
        guard a.dtype == .bfloat16, b.dtype == .bfloat16, out.dtype == .bfloat16 else { return false }
        if count <= 0 { return true }
        let v4 = count % 4 == 0 && [a, b, out].allSatisfy { address($0) % 8 == 0 }
        let units = v4 ? count / 4 : count
        launch(CUDABackend.memorySource, v4 ? "add_bf16_v4" : "add_bf16", grid: Dim3(CUDABackend.blocks(units)), block: Dim3(256),
               [.pointer(address(a)), .pointer(address(b)), .pointer(address(out)), .int64(Int64(units))])
        return true
    }

    /// float(a) + float(b) into float32 in one launch (`add_widened_{fb,bf,bb}[_v4]`); false unless one side is bf16 and
    /// the other float32 or bf16, or with `HASTE_ADD_WIDENED=0` (the caller widens, then adds: the same values).
    public func addWidened(_ a: Buffer, _ b: Buffer, _ out: Buffer, count: Int) -> Bool {
        let pair: String
        switch (a.dtype, b.dtype) {
        case (.float32, .bfloat16): pair = "fb"
        case (.bfloat16, .float32): pair = "bf"
        case (.bfloat16, .bfloat16): pair = "bb"
        default: return false
        }
        guard out.dtype == .float32, CUDABackend.addWidenedAllowed else { return false }
        if count <= 0 { return true }
        let v4 = count % 4 == 0 && [a, b, out].allSatisfy { address($0) % UInt64(4 * $0.dtype.byteSize) == 0 }
        let units = v4 ? count / 4 : count
        launch(CUDABackend.memorySource, "add_widened_" + pair + (v4 ? "_v4" : ""), grid: Dim3(CUDABackend.blocks(units)),
               block: Dim3(256), [.pointer(address(a)), .pointer(address(b)), .pointer(address(out)), .int64(Int64(units))])
        return true
    }
    /// `HASTE_ADD_WIDENED=0`: a bf16 gradient term widened by a launch of its own before the add, for comparisons on a GPU.
    @TaskLocal static var addWidenedAllowed = ProcessInfo.processInfo.environment["HASTE_ADD_WIDENED"] != "0"

    /// `cast` of each bf16 → float32 pair, four elements a thread, up to 8 pairs a launch (`cast_bf16_f32_v4_segments`);
    /// a pair the v4 kernel cannot take (a count not a multiple of 4, an unaligned side) is cast alone.
    public func widenBF16(_ pairs: [(from: Buffer, to: Buffer, count: Int)]) -> Bool {
        guard CUDABackend.castSegmentsAllowed, pairs.allSatisfy({ $0.from.dtype == .bfloat16 && $0.to.dtype == .float32 }) else {
            return false
        }
        var batch: [(src: UInt64, dst: UInt64, n4: Int)] = []
        func flush() {
            guard !batch.isEmpty else { return }
            var arguments: [KernelArgument] = []
            var total = 0
            for i in 0..<CUDABackend.castSegments {
                let seg = i < batch.count ? batch[i] : (src: 0, dst: 0, n4: 0)
                let blocks = i < batch.count ? CUDABackend.blocks(seg.n4) : 0
                arguments += [.pointer(seg.src), .pointer(seg.dst), .int64(Int64(seg.n4)), .int32(Int32(blocks))]
                total += blocks
            }
            launch(CUDABackend.memorySource, "cast_bf16_f32_v4_segments", grid: Dim3(total), block: Dim3(256),
                   arguments + [.int32(Int32(batch.count))])
            batch = []
        }
        for p in pairs where p.count > 0 {
            let (src, dst) = (address(p.from), address(p.to))
            guard p.count % 4 == 0, src % 8 == 0, dst % 16 == 0 else { cast(from: p.from, to: p.to, count: p.count); continue }
            batch.append((src, dst, p.count / 4))
            if batch.count == CUDABackend.castSegments { flush() }
        }
        flush()
        return true
    }

    /// The pieces side by side in one launch (`gather_columns_*`: up to 8 float32 pieces, float32 or bf16 out); false for
    /// more pieces or another dtype (the caller copies each). Four columns a thread where the width and every pointer allow.
    public func gatherColumns(_ pieces: [Buffer?], rows: Int, width: Int, into out: Buffer) -> Bool {
        guard CUDABackend.gatherColumnsAllowed, (1...8).contains(pieces.count), out.dtype == .float32 || out.dtype == .bfloat16,
              pieces.allSatisfy({ $0 == nil || $0!.dtype == .float32 }) else { return false }
        if rows * width == 0 { return true }
        let sources = pieces.map { $0.map(address) ?? 0 }
        let u4 = width % 4 == 0 && sources.allSatisfy { $0 % 16 == 0 } && address(out) % UInt64(4 * out.dtype.byteSize) == 0
        let units = rows * pieces.count * width / (u4 ? 4 : 1)
        let kernel = "gather_columns_" + (out.dtype == .float32 ? "f32" : "bf16") + (u4 ? "_u4" : "_u1")
        launch(CUDABackend.memorySource, kernel, grid: Dim3(CUDABackend.blocks(units)), block: Dim3(256),
               (0..<8).map { .pointer($0 < sources.count ? sources[$0] : 0) }
               + [.pointer(address(out)), .int64(Int64(rows)), .int32(Int32(width)), .int32(Int32(pieces.count))])
        return true
    }
    /// `HASTE_GATHER_COLUMNS=0`: the pieces copied one launch each, then cast (the same values), for comparisons on a GPU.
    @TaskLocal static var gatherColumnsAllowed = ProcessInfo.processInfo.environment["HASTE_GATHER_COLUMNS"] != "0"

    /// The segments of one `cast_bf16_f32_v4_segments` launch (HASTE_CAST_SEGMENTS in its code).
    static let castSegments = 8
    /// `HASTE_CAST_SEGMENTS=0`: every pair cast by its own launch again (the same values), for comparisons on a GPU.
    @TaskLocal static var castSegmentsAllowed = ProcessInfo.processInfo.environment["HASTE_CAST_SEGMENTS"] != "0"

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
