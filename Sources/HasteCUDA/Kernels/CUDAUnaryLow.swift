import Foundation
import HasteTensor

/// The bf16 unary kernels' host side (Autocast's bf16 MLP activations: `Tensor.unaryLowValues`,
/// `unaryBackwardLowValues`) and the entry points specialised per op; the generic kernels are in the elementwise
/// family's code (CUDAElementwise.swift).
extension CUDABackend {
    /// The bf16 unary ops with entry points of their own (`unary_bf16_v8_<code>`): SiT's MLP activation (13,
    /// geluTanh) and DINOv2's (14, gelu), each run over every hidden element of a step forward and backward.
    static let unarySpecialized: [Int32] = [13, 14]

    /// `unary_bf16_v4`'s formula and rounding with the op a compile-time constant and eight elements a thread: the
    /// generic kernels switch on the op per element (118 branches in their sm_90 SASS, the chains of the four
    /// elements one after another); here the switch folds away, the eight chains interleave, and x, dy, y move in
    /// 16-byte pieces (n8 = n / 8, every address 16-byte aligned: the host checks). The same bits.
    static let specializedUnaryCode = #"""
    template <int OP>
    __device__ __forceinline__ void haste_unary_bf16_v8(const haste_v16* x, haste_v16* y, i64 n8, float p0, float p1) {
        HASTE_GRID_STRIDE_LOOP(i, n8) {
            const haste_v16 w = x[i];
            const u64 in[2] = {w.lo, w.hi};
            u64 r[2] = {0, 0};
            #pragma unroll
            for (int h = 0; h < 2; h++) {
                #pragma unroll
                for (int j = 0; j < 4; j++)
                    r[h] |= (u64)haste_float_to_bf16(haste_unary(OP, haste_bf16_to_float((u16)(in[h] >> (16 * j))), p0, p1)) << (16 * j);
            }
            y[i] = haste_v16{r[0], r[1]};
        }
    }
    template <int OP>
    __device__ __forceinline__ void haste_unary_backward_bf16_v8(const haste_v16* x, const haste_v16* dy, haste_v16* dx, i64 n8,
                                                                 float p0, float p1, float p2) {
        HASTE_GRID_STRIDE_LOOP(i, n8) {
            const haste_v16 w = x[i], g = dy[i];
            const u64 in[2] = {w.lo, w.hi}, gs[2] = {g.lo, g.hi};
            u64 r[2] = {0, 0};
            #pragma unroll
            for (int h = 0; h < 2; h++) {
                #pragma unroll
                for (int j = 0; j < 4; j++) {
                    const float d = haste_unary_derivative(OP, haste_bf16_to_float((u16)(in[h] >> (16 * j))), 0.0f, p0, p1, p2);
                    r[h] |= (u64)haste_float_to_bf16(haste_bf16_to_float((u16)(gs[h] >> (16 * j))) * d) << (16 * j);
                }
            }
            dx[i] = haste_v16{r[0], r[1]};
        }
    }
    """# + "\n" + unarySpecialized.map { c in """
        extern "C" __global__ void unary_bf16_v8_\(c)(const haste_v16* x, haste_v16* y, i64 n8, float p0, float p1) {
            haste_unary_bf16_v8<\(c)>(x, y, n8, p0, p1); }
        extern "C" __global__ void unary_backward_bf16_v8_\(c)(const haste_v16* x, const haste_v16* dy, haste_v16* dx, i64 n8, float p0, float p1, float p2) {
            haste_unary_backward_bf16_v8<\(c)>(x, dy, dx, n8, p0, p1, p2); }
        """ }.joined(separator: "\n") + "\n"

    /// `HASTE_UNARY_SPECIALIZED=0`: the bf16 unary ops always through the generic kernels, for comparisons (the same
    /// bits; a test switches it: `$unarySpecializedAllowed.withValue`).
    @TaskLocal static var unarySpecializedAllowed = ProcessInfo.processInfo.environment["HASTE_UNARY_SPECIALIZED"] != "0"

    /// The entry point, units and op argument of a bf16 unary launch: the op's own eight-wide kernel (the op compiled
    /// in: no argument) where it has one and the count and addresses allow, else the generic four-wide or
    /// one-at-a-time kernel with the op's code.
    func unaryLowKernel(_ base: String, code: Int32, count: Int, _ buffers: [Buffer]) -> (name: String, units: Int, op: [KernelArgument]) {
        if CUDABackend.unarySpecializedAllowed && CUDABackend.unarySpecialized.contains(code) && count % 8 == 0
            && buffers.allSatisfy({ address($0) % 16 == 0 }) {
            return ("\(base)_v8_\(code)", count / 8, [])
        }
        let v4 = count % 4 == 0 && buffers.allSatisfy({ address($0) % 8 == 0 })
        return (v4 ? "\(base)_v4" : base, v4 ? count / 4 : count, [.int32(code)])
    }

    public func unaryLow(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int) -> Bool {
        guard x.dtype == .bfloat16, y.dtype == .bfloat16, op.runsOnLowValues else { return false }
        if count <= 0 { return true }
        let (code, p0, p1) = CUDABackend.unaryCode(op)
        let k = unaryLowKernel("unary_bf16", code: code, count: count, [x, y])
        launch(CUDABackend.elementwiseSource, k.name, grid: Dim3(CUDABackend.blocks(k.units)), block: Dim3(256),
               [.pointer(address(x)), .pointer(address(y)), .int64(Int64(k.units))] + k.op + [.float(p0), .float(p1)])
        return true
    }

    public func unaryBackwardLow(_ op: UnaryOp, x: Buffer, dy: Buffer, dx: Buffer, count: Int) -> Bool {
        guard x.dtype == .bfloat16, dy.dtype == .bfloat16, dx.dtype == .bfloat16, op.runsOnLowValues else { return false }
        if count <= 0 { return true }
        let (code, p0, p1, p2) = CUDABackend.unaryBackwardCode(op)
        let k = unaryLowKernel("unary_backward_bf16", code: code, count: count, [x, dy, dx])
        launch(CUDABackend.elementwiseSource, k.name, grid: Dim3(CUDABackend.blocks(k.units)), block: Dim3(256),
               [.pointer(address(x)), .pointer(address(dy)), .pointer(address(dx)), .int64(Int64(k.units))] + k.op
                   + [.float(p0), .float(p1), .float(p2)])
        return true
    }
}
