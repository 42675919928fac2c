import HasteTensor

extension CUDABackend {
    /// The soft cross-entropy of the softmax family (`Tensor.softCrossEntropy`, the attention-alignment loss of HASTE
    /// per layer pair; torch `-(F.softmax(t, -1) * F.log_softmax(x, -1)).sum(-1)` per row): one block per row pair
    /// (up to 256 columns by warp with the same bits: `soft_cross_entropy_f32_w`, CUDASoftmaxWarp.swift),
    /// grid-stride over rows, CPUSoftmax.swift's `softCrossEntropyRows` formulas: p = softmax(t) (max subtracted,
    /// times 1/Σ), m = max x, Z = Σ exp(x − m), loss[r] = −Σ p·((x − m) − log Z), difference[r, :] = exp(x − m)·(1/Z)
    /// − p. Each thread holds its first `HASTE_SCE_HELD` columns of both rows in registers (whole rows up to 4·256 =
    /// 1 024 columns), so x and t are read from memory once and one exponential is taken per element of each (two
    /// per column, the composite's three); columns past that are read again in each of the three passes and their
    /// exponentials retaken (the same bits). The maxima and the two sums go through one pair of barriers each; the sums run in a fixed tree as in
    /// the softmax kernels: within float32 rounding of the CPU's 16-lane sums, bitwise reproducible run to run.
    ///
    /// Rows are addressed as `RowLayout.start` does, for each view on its own: its outer axes coalesced
    /// (`CUDABackend.coalesce`) and padded in front to 4 (extent 1, stride 0), passed as extents n1…n3 (the
    /// outermost extent is implied by the row count), their `fastDivisor`s and strides s0…s3. `haste_row_walk` keeps
    /// the row's digits in that mixed radix and adds the grid's stride with carries, so no row divides and any
    /// size is exact in 64 bits. A view whose outer axes do not coalesce to 4 (rank 6 or more with no two axes
    /// mergeable) is first copied into a contiguous [rows, cols] block (`rowArguments`): the same values, one
    /// copy more, and the op stays fused.
    static let softCrossEntropyCode = #"""
    /// haste_block_max (MAX) or haste_block_sum (Prelude.swift) of two values at once, sharing one pair of barriers
    /// (same trees, same results); `scratch` is a 64-float shared array; the block calls it uniformly.
    template <bool MAX> __device__ __forceinline__ void haste_block_pair(float* a, float* b, float* scratch) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        const float u = haste_warp_reduce<MAX>(*a), v = haste_warp_reduce<MAX>(*b), none = MAX ? -INFINITY : 0.0f;
        __syncthreads();
        if (lane == 0) { scratch[warp] = u; scratch[32 + warp] = v; }
        __syncthreads();
        *a = haste_warp_reduce<MAX>(lane < warps ? scratch[lane] : none);
        *b = haste_warp_reduce<MAX>(lane < warps ? scratch[32 + lane] : none);
    }

    /// The rows of one view (a RowLayout, coalesced and padded in front to 4 outer axes): extents n[1…3] under an
    /// outermost axis of any extent, strides s[0…3] in elements. c[0…3] are the current row's digits in that mixed
    /// radix (the row starts at Σ c·s), g[0…3] the digits of the grid's stride. `start` takes the first row and the
    /// stride (both < 2³¹, a block index and a grid size) apart with `haste_fdiv` (f[a] = fastDivisor(min(n[a], 2³¹)):
    /// the quotient of a dividend < 2³¹ by a larger extent is 0 either way); `next` adds g with carries (c[a] and
    /// g[a] < n[a], so one subtraction each), no division.
    struct haste_row_walk {
        i64 n[4], s[4], c[4], g[4];
        __device__ __forceinline__ void start(u32 first, u32 step, i64 n1, i64 n2, i64 n3, u64 f1, u64 f2, u64 f3,
                                              i64 s0, i64 s1, i64 s2, i64 s3) {
            n[0] = 0; n[1] = n1; n[2] = n2; n[3] = n3;
            s[0] = s0; s[1] = s1; s[2] = s2; s[3] = s3;
            const u64 f[4] = {0, f1, f2, f3};
            #pragma unroll
            for (int a = 3; a > 0; --a) {
                const u32 q = haste_fdiv(first, f[a]), h = haste_fdiv(step, f[a]);
                c[a] = (i64)(first - q * (u32)n[a]);
                g[a] = (i64)(step - h * (u32)n[a]);
                first = q;
                step = h;
            }
            c[0] = (i64)first;
            g[0] = (i64)step;
        }
        __device__ __forceinline__ i64 at() const { return c[0] * s[0] + c[1] * s[1] + c[2] * s[2] + c[3] * s[3]; }
        __device__ __forceinline__ void next() {
            i64 carry = 0;
            #pragma unroll
            for (int a = 3; a > 0; --a) {
                c[a] += g[a] + carry;
                carry = c[a] >= n[a] ? 1 : 0;
                if (carry) c[a] -= n[a];
            }
            c[0] += g[0] + carry;
        }
    };

    #define HASTE_SCE_HELD 4
    /// The soft cross-entropy's parameters (TX, TT: the logits' and the target's element types, float or u16 = bf16)
    /// and arguments, and its four entry points by what is bf16: nothing, the target (_t16), the logits (_x16), both;
    /// SUFFIX names the variant ("" by block, _w by warp: CUDASoftmaxWarp.swift), BODY is the template that runs it.
    #define HASTE_SCE_PARAMS(TX, TT) const TX* x, const TT* t, float* loss, float* difference, i64 rows, i64 cols, i64 xn1, i64 xn2, i64 xn3, u64 xf1, u64 xf2, u64 xf3, i64 xs0, i64 xs1, i64 xs2, i64 xs3, i64 tn1, i64 tn2, i64 tn3, u64 tf1, u64 tf2, u64 tf3, i64 ts0, i64 ts1, i64 ts2, i64 ts3
    #define HASTE_SCE_ARGS x, t, loss, difference, rows, cols, xn1, xn2, xn3, xf1, xf2, xf3, xs0, xs1, xs2, xs3, tn1, tn2, tn3, tf1, tf2, tf3, ts0, ts1, ts2, ts3
    #define HASTE_SCE_ENTRIES(SUFFIX, BODY) \
    extern "C" __global__ void soft_cross_entropy_f32##SUFFIX(HASTE_SCE_PARAMS(float, float)) { BODY(HASTE_SCE_ARGS); } \
    extern "C" __global__ void soft_cross_entropy_f32_t16##SUFFIX(HASTE_SCE_PARAMS(float, u16)) { BODY(HASTE_SCE_ARGS); } \
    extern "C" __global__ void soft_cross_entropy_f32_x16##SUFFIX(HASTE_SCE_PARAMS(u16, float)) { BODY(HASTE_SCE_ARGS); } \
    extern "C" __global__ void soft_cross_entropy_f32_x16_t16##SUFFIX(HASTE_SCE_PARAMS(u16, u16)) { BODY(HASTE_SCE_ARGS); }
    /// x, t: each row's `cols` entries contiguous, rows placed by the views' walks (x…: the logits', t…: the
    /// target's); loss [rows] and difference [rows, cols] contiguous. The max skips NaN like the softmax's.
    /// The logits and the target float32 or bf16 (u16: the student's aligned logits and the teacher's as autocast
    /// leaves them, widened on load, exact: the float32 carriers' bits).
    template <typename TX, typename TT>
    __device__ __forceinline__ void haste_sce_rows(HASTE_SCE_PARAMS(TX, TT)) {
        __shared__ float scratch[64];
        haste_row_walk xw, tw;
        xw.start((u32)blockIdx.x, (u32)gridDim.x, xn1, xn2, xn3, xf1, xf2, xf3, xs0, xs1, xs2, xs3);
        tw.start((u32)blockIdx.x, (u32)gridDim.x, tn1, tn2, tn3, tf1, tf2, tf3, ts0, ts1, ts2, ts3);
        const i64 held = (i64)HASTE_SCE_HELD * blockDim.x;
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x, xw.next(), tw.next()) {
            const TX* xr = x + xw.at();
            const TT* tr = t + tw.at();
            float* d = difference + r * cols;
            // Pass 1: the maxima (the held columns loaded, −∞ past the row's end).
            float xv[HASTE_SCE_HELD], tv[HASTE_SCE_HELD], ev[HASTE_SCE_HELD];
            float mx = -INFINITY, mt = -INFINITY;
            #pragma unroll
            for (int k = 0; k < HASTE_SCE_HELD; ++k) {
                const i64 j = threadIdx.x + (i64)k * blockDim.x;
                xv[k] = j < cols ? haste_ld(xr, j) : -INFINITY;
                tv[k] = j < cols ? haste_ld(tr, j) : -INFINITY;
                ev[k] = 0.0f;
                if (xv[k] > mx) mx = xv[k];
                if (tv[k] > mt) mt = tv[k];
            }
            for (i64 j = held + threadIdx.x; j < cols; j += blockDim.x) {
                if (haste_ld(xr, j) > mx) mx = haste_ld(xr, j);
                if (haste_ld(tr, j) > mt) mt = haste_ld(tr, j);
            }
            haste_block_pair<true>(&mx, &mt, scratch);
            // Pass 2: xv becomes x − m, ev exp(x − m), tv exp(t − max t); Z and the target's Σ.
            float z = 0.0f, st = 0.0f;
            #pragma unroll
            for (int k = 0; k < HASTE_SCE_HELD; ++k) {
                if (threadIdx.x + (i64)k * blockDim.x < cols) {
                    xv[k] -= mx;
                    ev[k] = expf(xv[k]);
                    tv[k] = expf(tv[k] - mt);
                    z += ev[k];
                    st += tv[k];
                }
            }
            for (i64 j = held + threadIdx.x; j < cols; j += blockDim.x) {
                z += expf(haste_ld(xr, j) - mx);
                st += expf(haste_ld(tr, j) - mt);
            }
            haste_block_pair<false>(&z, &st, scratch);
            // Pass 3: p = exp(t − max t)·(1/Σ), the loss terms p·((x − m) − log Z), the difference e·(1/Z) − p.
            const float logZ = logf(z), invZ = 1.0f / z, invS = 1.0f / st;
            float ce = 0.0f;
            #pragma unroll
            for (int k = 0; k < HASTE_SCE_HELD; ++k) {
                const i64 j = threadIdx.x + (i64)k * blockDim.x;
                if (j < cols) {
                    const float p = tv[k] * invS;
                    ce += p * (xv[k] - logZ);
                    d[j] = ev[k] * invZ - p;
                }
            }
            for (i64 j = held + threadIdx.x; j < cols; j += blockDim.x) {
                const float xs = haste_ld(xr, j) - mx, p = expf(haste_ld(tr, j) - mt) * invS;
                ce += p * (xs - logZ);
                d[j] = expf(xs) * invZ - p;
            }
            ce = haste_block_sum(ce, scratch);
            if (threadIdx.x == 0) loss[r] = -ce;
        }
    }
    HASTE_SCE_ENTRIES(, haste_sce_rows)
    /// The loss's gradient for the leading heads of the logits, as the bf16 tensor the logits' gradient is rounded to
    /// (`softCrossEntropyBackwardLow`): over outer rows o (grid y) and columns c (grid x, U at a time), dx[o, c] =
    /// bf16(difference[o, c] · s) for c < used, 0 for used ≤ c < full; s = *scale, the float32 loss gradient over the
    /// row count, read on the device. The float32 product of the composite (difference × s), rounded once.
    template <int U>
    __device__ __forceinline__ void haste_sce_backward_low(const float* difference, const float* scale, u16* dx, i64 outer,
                                                           i64 used, i64 full) {
        const float s = *scale;
        const i64 usedU = used / U, fullU = full / U;
        for (i64 o = blockIdx.y; o < outer; o += gridDim.y) {
            for (i64 c = blockIdx.x * (i64)blockDim.x + threadIdx.x; c < fullU; c += (i64)gridDim.x * blockDim.x) {
                if (U == 4) {
                    u64 w = 0;
                    if (c < usedU) {
                        const haste_f4 d = ((const haste_f4*)difference)[o * usedU + c];
                        w = (u64)haste_float_to_bf16(d.x * s) | ((u64)haste_float_to_bf16(d.y * s) << 16)
                            | ((u64)haste_float_to_bf16(d.z * s) << 32) | ((u64)haste_float_to_bf16(d.w * s) << 48);
                    }
                    ((u64*)dx)[o * fullU + c] = w;
                } else {
                    dx[o * full + c] = c < used ? haste_float_to_bf16(difference[o * used + c] * s) : (u16)0;
                }
            }
        }
    }
    extern "C" __global__ void soft_cross_entropy_backward_bf16(const float* difference, const float* scale, u16* dx, i64 outer,
                                                                i64 used, i64 full) {
        haste_sce_backward_low<1>(difference, scale, dx, outer, used, full);
    }
    extern "C" __global__ void soft_cross_entropy_backward_bf16_v4(const float* difference, const float* scale, u16* dx, i64 outer,
                                                                   i64 used, i64 full) {
        haste_sce_backward_low<4>(difference, scale, dx, outer, used, full);
    }
    """#

    /// float32 only: float64 is computed on the CPU alone (STYLE §2.3), so on CUDA it never reaches here. The logits
    /// and the target may be bf16 (`soft_cross_entropy_f32_x16`, `_t16`, `_x16_t16`: the student's aligned logits and
    /// a frozen teacher's under autocast, widened on load).
    public func softCrossEntropyRuns(dtype: DType) -> Bool { dtype == .float32 }
    public func softCrossEntropyReadsLow(dtype: DType) -> Bool { dtype == .float32 }

    public func softCrossEntropyForward(x: Buffer, xRows: RowLayout, t: Buffer, tRows: RowLayout, rows: Int, cols: Int,
                                        loss: Buffer, difference: Buffer) {
        if x.dtype != .bfloat16 { requireFloat32(x, "soft_cross_entropy") }
        if t.dtype != .bfloat16 { requireFloat32(t, "soft_cross_entropy") }
        requireFloat32(loss, "soft_cross_entropy"); requireFloat32(difference, "soft_cross_entropy")
        if rows * cols == 0 { return }
        var copies: [Tensor] = []
        let (xAt, xArgs) = rowArguments(x, xRows, rows: rows, cols: cols, copies: &copies)
        let (tAt, tArgs) = rowArguments(t, tRows, rows: rows, cols: cols, copies: &copies)
        let kernel = "soft_cross_entropy_f32" + (x.dtype == .bfloat16 ? "_x16" : "") + (t.dtype == .bfloat16 ? "_t16" : "")
        softmaxRows(kernel, [.pointer(xAt), .pointer(tAt), .pointer(address(loss)), .pointer(address(difference)),
                                               .int64(Int64(rows)), .int64(Int64(cols))] + xArgs + tArgs,
                    rows: rows, cols: cols, repeatable: CUDABackend.separate(outputs: [loss, difference], inputs: [x, t]))
        // Stream order: a copy's block is handed out again only to work queued after this kernel.
        withExtendedLifetime(copies) {}
    }

    public func softCrossEntropyBackwardLow(difference: Buffer, scale: Buffer, dx: Buffer, outer: Int, used: Int, full: Int) -> Bool {
        guard difference.dtype == .float32, scale.dtype == .float32, dx.dtype == .bfloat16, used <= full else { return false }
        if outer * full == 0 { return true }
        let v4 = used % 4 == 0 && full % 4 == 0 && address(difference) % 16 == 0 && address(dx) % 8 == 0
        launch(CUDABackend.softmaxSource, v4 ? "soft_cross_entropy_backward_bf16_v4" : "soft_cross_entropy_backward_bf16",
               grid: Dim3(CUDABackend.blocks(v4 ? full / 4 : full), Swift.min(outer, 65_535)), block: Dim3(256),
               [.pointer(address(difference)), .pointer(address(scale)), .pointer(address(dx)), .int64(Int64(outer)),
                .int64(Int64(used)), .int64(Int64(full))])
        return true
    }

    /// The most outer axes a view of `soft_cross_entropy_f32` may have after coalescing.
    static let softCrossEntropyAxes = 4

    /// The address of a view's first row and its ten walk arguments (n1…n3, their `fastDivisor`s, s0…s3; see
    /// `softCrossEntropyCode`). A view whose outer axes coalesce to more than `softCrossEntropyAxes` is copied
    /// first into a contiguous [rows, cols] block (kept in `copies` until the launch is queued) and passed as that.
    func rowArguments(_ b: Buffer, _ layout: RowLayout, rows: Int, cols: Int,
                      copies: inout [Tensor]) -> (DevicePointer, [KernelArgument]) {
        let limit = CUDABackend.softCrossEntropyAxes
        var (shape, strides) = CUDABackend.coalesce(layout.outerShape, [layout.outerStrides])
        var from = address(b)
        if shape.count > limit {
            let block = Tensor.empty([rows, cols], dtype: b.dtype, device: device)
            let full = layout.outerShape + [cols]
            stridedCopy(from: b, srcStrides: layout.outerStrides + [1], to: block.buffer, dstStrides: Tensor.contiguousStrides(full),
                        shape: full)
            copies.append(block)
            (shape, strides, from) = ([rows], [[cols]], address(block.buffer))
        }
        let pad = limit - shape.count
        let n = [Int](repeating: 1, count: pad) + shape, s = [Int](repeating: 0, count: pad) + strides[0]
        return (from, n[1...].map { .int64(Int64($0)) } + n[1...].map { .uint64(CUDABackend.fastDivisor(Swift.min($0, 1 << 31))) }
                      + s.map { .int64(Int64($0)) })
    }
}
