import HasteTensor

extension CUDABackend {
    /// Movement kernels: row gathers by index (any element width), the deterministic scatter-add that is their
    /// backward, torch.where over strided operands, and float comparisons with a scalar.
    static let movementSource = KernelSource(family: "movement", kernels: [
        "index_select_u8_i32", "index_select_u16_i32", "index_select_u32_i32", "index_select_u64_i32",
        "index_select_u8_i64", "index_select_u16_i64", "index_select_u32_i64", "index_select_u64_i64",
        "index_add_f32_i32", "index_add_f32_i64",
        "select_u8", "select_u16", "select_u32", "select_u64",
        "compare_f32",
    ], code: #"""
    /// y[o, j, k] = x[o, idx[j], k]; x [outer, size, inner], y [outer, count, inner]. An index outside [0, size)
    /// sets the error word and writes 0 there (never reads outside x).
    template <typename E, typename I>
    __device__ __forceinline__ void index_select_body(const E* x, const I* idx, E* y, i64 outer, i64 size, i64 inner,
                                                      i64 count, int* err) {
        i64 total = outer * count * inner;
        HASTE_GRID_STRIDE_LOOP(e, total) {
            i64 k = e % inner, row = e / inner, j = row % count, o = row / count;
            i64 r = (i64)idx[j];
            if (r < 0 || r >= size) { atomicCAS(err, 0, 2); y[e] = (E)0; continue; }
            y[e] = x[(o * size + r) * inner + k];
        }
    }
    extern "C" __global__ void index_select_u8_i32(const u8* x, const int* idx, u8* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }
    extern "C" __global__ void index_select_u16_i32(const u16* x, const int* idx, u16* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }
    extern "C" __global__ void index_select_u32_i32(const u32* x, const int* idx, u32* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }
    extern "C" __global__ void index_select_u64_i32(const u64* x, const int* idx, u64* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }
    extern "C" __global__ void index_select_u8_i64(const u8* x, const i64* idx, u8* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }
    extern "C" __global__ void index_select_u16_i64(const u16* x, const i64* idx, u16* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }
    extern "C" __global__ void index_select_u32_i64(const u32* x, const i64* idx, u32* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }
    extern "C" __global__ void index_select_u64_i64(const u64* x, const i64* idx, u64* y, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_select_body(x, idx, y, outer, size, inner, count, err); }

    /// dx[o, idx[j], k] += dy[o, j, k]. One thread owns one (o, k) column of dx and walks j in order, so repeated
    /// indices add in index order with no atomics: the CPU's order, bitwise. A bad index sets the error word
    /// and is skipped.
    template <typename I>
    __device__ __forceinline__ void index_add_body(const float* dy, const I* idx, float* dx, i64 outer, i64 size,
                                                   i64 inner, i64 count, int* err) {
        HASTE_GRID_STRIDE_LOOP(p, outer * inner) {
            i64 o = p / inner, k = p % inner;
            const float* src = dy + o * count * inner + k;
            float* dst = dx + o * size * inner + k;
            for (i64 j = 0; j < count; j++) {
                i64 r = (i64)idx[j];
                if (r < 0 || r >= size) { atomicCAS(err, 0, 2); continue; }
                dst[r * inner] += src[j * inner];
            }
        }
    }
    extern "C" __global__ void index_add_f32_i32(const float* dy, const int* idx, float* dx, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_add_body(dy, idx, dx, outer, size, inner, count, err); }
    extern "C" __global__ void index_add_f32_i64(const float* dy, const i64* idx, float* dx, i64 outer, i64 size, i64 inner, i64 count, int* err) { index_add_body(dy, idx, dx, outer, size, inner, count, err); }

    /// out[e] = cond ? a : b over a shape of rank ≤ 6 (padded with leading 1s; s0 outermost), each operand read
    /// through its element strides (c*, a*, b*); out is contiguous.
    template <typename E>
    __device__ __forceinline__ void select_body(const u8* cond, const E* a, const E* b, E* out,
        i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5,
        i64 c0, i64 c1, i64 c2, i64 c3, i64 c4, i64 c5,
        i64 a0, i64 a1, i64 a2, i64 a3, i64 a4, i64 a5,
        i64 b0, i64 b1, i64 b2, i64 b3, i64 b4, i64 b5) {
        i64 total = s0 * s1 * s2 * s3 * s4 * s5;
        HASTE_GRID_STRIDE_LOOP(e, total) {
            i64 r = e, i5 = r % s5; r /= s5;
            i64 i4 = r % s4; r /= s4;
            i64 i3 = r % s3; r /= s3;
            i64 i2 = r % s2; r /= s2;
            i64 i1 = r % s1; r /= s1;
            i64 i0 = r;
            i64 oc = i0 * c0 + i1 * c1 + i2 * c2 + i3 * c3 + i4 * c4 + i5 * c5;
            i64 oa = i0 * a0 + i1 * a1 + i2 * a2 + i3 * a3 + i4 * a4 + i5 * a5;
            i64 ob = i0 * b0 + i1 * b1 + i2 * b2 + i3 * b3 + i4 * b4 + i5 * b5;
            out[e] = cond[oc] ? a[oa] : b[ob];
        }
    }
    extern "C" __global__ void select_u8(const u8* cond, const u8* a, const u8* b, u8* out, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 c0, i64 c1, i64 c2, i64 c3, i64 c4, i64 c5, i64 a0, i64 a1, i64 a2, i64 a3, i64 a4, i64 a5, i64 b0, i64 b1, i64 b2, i64 b3, i64 b4, i64 b5) { select_body(cond, a, b, out, s0, s1, s2, s3, s4, s5, c0, c1, c2, c3, c4, c5, a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5); }
    extern "C" __global__ void select_u16(const u8* cond, const u16* a, const u16* b, u16* out, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 c0, i64 c1, i64 c2, i64 c3, i64 c4, i64 c5, i64 a0, i64 a1, i64 a2, i64 a3, i64 a4, i64 a5, i64 b0, i64 b1, i64 b2, i64 b3, i64 b4, i64 b5) { select_body(cond, a, b, out, s0, s1, s2, s3, s4, s5, c0, c1, c2, c3, c4, c5, a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5); }
    extern "C" __global__ void select_u32(const u8* cond, const u32* a, const u32* b, u32* out, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 c0, i64 c1, i64 c2, i64 c3, i64 c4, i64 c5, i64 a0, i64 a1, i64 a2, i64 a3, i64 a4, i64 a5, i64 b0, i64 b1, i64 b2, i64 b3, i64 b4, i64 b5) { select_body(cond, a, b, out, s0, s1, s2, s3, s4, s5, c0, c1, c2, c3, c4, c5, a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5); }
    extern "C" __global__ void select_u64(const u8* cond, const u64* a, const u64* b, u64* out, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4, i64 s5, i64 c0, i64 c1, i64 c2, i64 c3, i64 c4, i64 c5, i64 a0, i64 a1, i64 a2, i64 a3, i64 a4, i64 a5, i64 b0, i64 b1, i64 b2, i64 b3, i64 b4, i64 b5) { select_body(cond, a, b, out, s0, s1, s2, s3, s4, s5, c0, c1, c2, c3, c4, c5, a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5); }

    /// out[i] = x[i] > s (op 0) or x[i] < s (op 1), as bool bytes; NaN compares false, as in torch.
    extern "C" __global__ void compare_f32(const float* x, float s, u8* out, i64 n, int op) {
        HASTE_GRID_STRIDE_LOOP(i, n) {
            float v = x[i];
            out[i] = (u8)(op == 0 ? (v > s) : (v < s));
        }
    }
    """#)

    /// The element-width suffix of a dtype's kernels (movement kernels only move bytes).
    static func widthSuffix(_ byteSize: Int) -> String {
        switch byteSize {
        case 8: return "u64"
        case 4: return "u32"
        case 2: return "u16"
        default: return "u8"
        }
    }

    static func indexSuffix(_ indices: Buffer, _ op: String) -> String {
        switch indices.dtype {
        case .int32: return "i32"
        case .int64: return "i64"
        default: CUDABackend.fail("\(op): indices must be int32 or int64, got \(indices.dtype)")
        }
    }

    public func indexSelect(_ x: Buffer, indices: Buffer, _ y: Buffer, outer: Int, size: Int, inner: Int, count: Int) {
        let total = outer * count * inner
        if total == 0 { return }
        let kernel = "index_select_\(CUDABackend.widthSuffix(x.dtype.byteSize))_\(CUDABackend.indexSuffix(indices, "index_select"))"
        launch(CUDABackend.movementSource, kernel, grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256), [
            .pointer(address(x)), .pointer(address(indices)), .pointer(address(y)),
            .int64(Int64(outer)), .int64(Int64(size)), .int64(Int64(inner)), .int64(Int64(count)), .pointer(errorWord),
        ])
    }

    public func indexAdd(_ dy: Buffer, indices: Buffer, _ dx: Buffer, outer: Int, size: Int, inner: Int, count: Int) {
        requireFloat32(dx, "index_select backward"); requireFloat32(dy, "index_select backward")
        let columns = outer * inner
        if columns == 0 || count == 0 { return }
        let kernel = "index_add_f32_\(CUDABackend.indexSuffix(indices, "index_select backward"))"
        launch(CUDABackend.movementSource, kernel, grid: Dim3(CUDABackend.blocks(columns)), block: Dim3(256), [
            .pointer(address(dy)), .pointer(address(indices)), .pointer(address(dx)),
            .int64(Int64(outer)), .int64(Int64(size)), .int64(Int64(inner)), .int64(Int64(count)), .pointer(errorWord),
        ])
    }

    public func select(_ condition: Buffer, _ conditionStrides: [Int], _ a: Buffer, _ aStrides: [Int], _ b: Buffer,
                       _ bStrides: [Int], _ out: Buffer, shape: [Int]) {
        if shape.contains(0) { return }
        // Size-1 axes dropped, then axes merged where every operand steps through them as one axis.
        var dims: [(size: Int, c: Int, a: Int, b: Int)] = []
        for i in shape.indices where shape[i] != 1 {
            let d = (size: shape[i], c: conditionStrides[i], a: aStrides[i], b: bStrides[i])
            if let last = dims.last, last.c == d.c * d.size, last.a == d.a * d.size, last.b == d.b * d.size {
                dims[dims.count - 1] = (size: last.size * d.size, c: d.c, a: d.a, b: d.b)
            } else {
                dims.append(d)
            }
        }
        selectLaunch(condition: address(condition), a: address(a), b: address(b), out: address(out),
                     width: out.dtype.byteSize, dims: dims[...])
    }

    /// Launches select over `dims`; beyond rank 6, one launch per index of the outermost axis.
    private func selectLaunch(condition: DevicePointer, a: DevicePointer, b: DevicePointer, out: DevicePointer,
                              width: Int, dims: ArraySlice<(size: Int, c: Int, a: Int, b: Int)>) {
        if dims.count > 6 {
            let d = dims.first!, rest = dims.dropFirst(), inner = rest.reduce(1) { $0 * $1.size }
            for i in 0..<d.size {
                selectLaunch(condition: condition + DevicePointer(i * d.c), a: a + DevicePointer(i * d.a * width),
                             b: b + DevicePointer(i * d.b * width), out: out + DevicePointer(i * inner * width),
                             width: width, dims: rest)
            }
            return
        }
        let padded = Array(repeating: (size: 1, c: 0, a: 0, b: 0), count: 6 - dims.count) + dims
        let total = padded.reduce(1) { $0 * $1.size }
        let args: [KernelArgument] = [.pointer(condition), .pointer(a), .pointer(b), .pointer(out)]
            + padded.map { .int64(Int64($0.size)) } + padded.map { .int64(Int64($0.c)) }
            + padded.map { .int64(Int64($0.a)) } + padded.map { .int64(Int64($0.b)) }
        launch(CUDABackend.movementSource, "select_\(CUDABackend.widthSuffix(width))", grid: Dim3(CUDABackend.blocks(total)), block: Dim3(256), args)
    }

    public func compare(_ op: CompareOp, _ x: Buffer, scalar: Double, _ out: Buffer, count: Int) {
        requireFloat32(x, "compare")
        if count == 0 { return }
        // torch compares a float32 tensor with a Python scalar in float32: the scalar is rounded the same way.
        launch(CUDABackend.movementSource, "compare_f32", grid: Dim3(CUDABackend.blocks(count)), block: Dim3(256), [
            .pointer(address(x)), .float(Float(scalar)), .pointer(address(out)), .int64(Int64(count)),
            .int32(op == .greater ? 0 : 1),
        ])
    }
}
