import Foundation
import HasteTensor

/// GroupNorm (+ SiLU) without a gradient on CUDA (`NormKernels.groupNormInference`: the SD-VAE's encoder and decoder,
/// 30 norms a decode): the statistics of each (sample, group) row (`layer_norm_stats`, the norm family: the block
/// LayerNorm's `haste_row_mean_rstd`, which the warp kernels equal bit for bit), then one pass over the elements
/// (`group_norm_apply`, the elementwise family: one block per (sample, channel) plane) writing
/// silu?(((x − mean)·rstd)·weight[c] + bias[c]) with each step rounded on its own (`__fmul_rn`, `__fadd_rn`: never
/// contracted), as the composite's layerNorm, broadcast multiply, broadcast add and SiLU kernels round them. So the
/// composite's bits, with x read three times and y written once where the composite wrote and read four tensors of
/// x's size. `HASTE_GROUPNORM_FUSED=0` keeps the composite.
extension CUDABackend {
    /// `HASTE_GROUPNORM_FUSED=0`: GroupNorm through the composite on CUDA too, for comparisons (the same bits; a
    /// test switches it: `$groupNormFusedAllowed.withValue`).
    @TaskLocal static var groupNormFusedAllowed = ProcessInfo.processInfo.environment["HASTE_GROUPNORM_FUSED"] != "0"

    /// The norm family's statistics-only kernel (LayerNorm's row moments at blockDim 256).
    static let groupNormStatsCode = #"""
    extern "C" __global__ void layer_norm_stats(const float* x, float* mean, float* rstd, i64 rows, i64 cols, float eps) {
        __shared__ float scratch[32];
        for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
            float m, rs;
            haste_row_mean_rstd(x + r * cols, cols, eps, scratch, &m, &rs);
            if (threadIdx.x == 0) { mean[r] = m; rstd[r] = rs; }
        }
    }
    """#

    /// The elementwise family's pass (it has `haste_unary`, SiLU's formula): plane p = (sample, channel) of
    /// `spatial` contiguous elements, its group's row n·groups + c / cpg; four elements a thread in 16-byte pieces
    /// where spatial is a multiple of 4 and the buffers 16-byte aligned (`v4`).
    static let groupNormApplyCode = #"""
    __device__ __forceinline__ float haste_group_norm_value(float x, float m, float rs, const float* w, const float* b, float wc, float bc, int silu) {
        float v = (x - m) * rs;
        if (w) v = __fmul_rn(v, wc);
        if (b) v = __fadd_rn(v, bc);
        return silu ? haste_unary(12, v, 0.0f, 0.0f) : v;
    }
    extern "C" __global__ void group_norm_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b, float* y, i64 planes, i64 channels, i64 cpg, i64 spatial, int silu, int v4) {
        for (i64 p = blockIdx.x; p < planes; p += gridDim.x) {
            const i64 c = p % channels, row = (p / channels) * (channels / cpg) + c / cpg;
            const float m = mean[row], rs = rstd[row], wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f;
            const float* xp = x + p * spatial;
            float* yp = y + p * spatial;
            if (v4) {
                for (i64 i = threadIdx.x; i < spatial / 4; i += blockDim.x) {
                    const haste_f4 u = ((const haste_f4*)xp)[i];
                    ((haste_f4*)yp)[i] = haste_f4{haste_group_norm_value(u.x, m, rs, w, b, wc, bc, silu), haste_group_norm_value(u.y, m, rs, w, b, wc, bc, silu),
                                                  haste_group_norm_value(u.z, m, rs, w, b, wc, bc, silu), haste_group_norm_value(u.w, m, rs, w, b, wc, bc, silu)};
                }
            } else {
                for (i64 i = threadIdx.x; i < spatial; i += blockDim.x) yp[i] = haste_group_norm_value(xp[i], m, rs, w, b, wc, bc, silu);
            }
        }
    }
    """#

    public func groupNormInference(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, batch: Int, channels: Int,
                                   groups: Int, spatial: Int, eps: Double, silu: Bool) -> Bool {
        guard CUDABackend.groupNormFusedAllowed, ([x, y] + [weight, bias].compactMap { $0 }).allSatisfy({ $0.dtype == .float32 }),
              groups > 0, channels % groups == 0 else { return false }
        let rows = batch * groups, cols = channels / groups * spatial, planes = batch * channels
        if rows * cols == 0 { return true }
        let statBytes = rows * 4
        let mean = allocator.allocate(byteCount: statBytes), rstd = allocator.allocate(byteCount: statBytes)
        launch(CUDABackend.normSource, "layer_norm_stats", grid: Dim3(CUDABackend.rowBlocks(rows)), block: Dim3(256),
               [.pointer(address(x)), .pointer(mean), .pointer(rstd), .int64(Int64(rows)), .int64(Int64(cols)), .float(Float(eps))])
        let v4 = spatial % 4 == 0 && address(x) % 16 == 0 && address(y) % 16 == 0
        launch(CUDABackend.elementwiseSource, "group_norm_apply", grid: Dim3(CUDABackend.rowBlocks(planes)), block: Dim3(256),
               [.pointer(address(x)), .pointer(mean), .pointer(rstd), .pointer(weight.map(address) ?? 0), .pointer(bias.map(address) ?? 0),
                .pointer(address(y)), .int64(Int64(planes)), .int64(Int64(channels)), .int64(Int64(channels / groups)),
                .int64(Int64(spatial)), .int32(silu ? 1 : 0), .int32(v4 ? 1 : 0)])
        allocator.release(mean, byteCount: statBytes)   // one stream, in order: the kernels above run first
        allocator.release(rstd, byteCount: statBytes)
        return true
    }
}
