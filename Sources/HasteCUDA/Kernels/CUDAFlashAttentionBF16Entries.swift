import Foundation
import HasteTensor

/// The tensor-core flash families (CUDAFlashAttentionBF16.swift: the kernels, their notes) and their entry points.
extension CUDABackend {
    /// Two families over the same code, each with only its own entry points (NVRTC compiles what a program
    /// instantiates: one family is half the compile time): the synchronous tile loads, and the cp.async streaming.
    static let flashAttentionBF16Source = KernelSource(family: "flashAttentionBF16", kernels: flashBF16Kernels(""),
                                                       code: flashBF16Code + "\n" + flashBF16Entries(async: false), minimumArchitecture: 80)
    static let flashAttentionBF16AsyncSource = KernelSource(family: "flashAttentionBF16Async", kernels: flashBF16Kernels("async_"),
                                                            code: flashBF16Code + "\n" + flashBF16Entries(async: true), minimumArchitecture: 80)
    /// The same two over bf16 operands (q, k, v, dOut as bf16 buffers: `attentionTakesBF16Operands`).
    static let flashAttentionBF16In16Source = KernelSource(family: "flashAttentionBF16In16", kernels: flashBF16Kernels("in16_"),
                                                           code: flashBF16Code + "\n" + flashBF16Entries(async: false, input16: true),
                                                           minimumArchitecture: 80)
    static let flashAttentionBF16AsyncIn16Source = KernelSource(family: "flashAttentionBF16AsyncIn16", kernels: flashBF16Kernels("async_in16_"),
                                                                code: flashBF16Code + "\n" + flashBF16Entries(async: true, input16: true),
                                                                minimumArchitecture: 80)
    /// The cp.async family over bf16 operands copying straight into double-buffered pair tiles (`DIRECT`: no stage,
    /// no packing pass, one barrier per streamed tile): where Dh and Dv are multiples of 8 (`flashBF16Direct`).
    static let flashAttentionBF16DirectIn16Source = KernelSource(family: "flashAttentionBF16DirectIn16",
                                                                 kernels: flashBF16Kernels("direct_in16_") + flashBF16Kernels("direct_in16_", whole: true),
                                                                 code: flashBF16Code + "\n" + flashBF16Entries(async: true, input16: true, direct: true),
                                                                 minimumArchitecture: 80)
    /// `whole`: the direct family's entry points for shapes whose Dh and Dv both pad to the width (`flashBF16Whole`):
    /// "…_d80w".
    static func flashBF16Kernels(_ infix: String, whole: Bool = false) -> [String] {
        ["forward", "backward_dq", "backward_dkdv"].flatMap { k in
            ["d64", "d80", "d96", "d128"].map { "attention_flash_bf16_\(infix)\(k)_\($0)\(whole ? "w" : "")" }
        } + (infix.hasPrefix("direct") ? ["d64", "d80", "d96", "d128"].flatMap { d in
            ["s", "sl"].map { "attention_flash_bf16_\(infix)backward_dkdv_\(d)\(whole ? "w" : "")\($0)" }
        } : [])
    }
    /// Where an operand's heads lie (`AttentionLayouts`): the direct bf16 family and the TF32 forward take them, the
    /// other families contiguous [batch, T, D] operands.
    static let flashLayoutCode = #"""
    /// Element (b = n·heads + h, t, d) of an operand at n·n_ + h·h_ + t·t_ + d.
    struct tc_lay { i64 n_, h_, t_; };
    struct tc_layouts { i64 heads; tc_lay q, k, v, o, dq, dk, dv; };
    /// Head b's first row of an operand: by its layout (DIRECT), or of a contiguous [batch, t, cols] tensor.
    template <bool DIRECT, typename P>
    __device__ __forceinline__ P* tc_head(P* p, const tc_layouts& L, const tc_lay& l, i64 b, i64 t, int cols) {
        return DIRECT ? p + (b / L.heads) * l.n_ + (b % L.heads) * l.h_ : p + b * t * cols;
    }
    """#

    /// The layouts as entry-point parameters (heads, then (batch, head, token) strides of q, k, v, dOut, dq, dk, dv:
    /// what `layoutArguments` passes) and as the `tc_layouts` argument built from them.
    static let flashLayoutParameters = "i64 heads" + ["q", "k", "v", "o", "gq", "gk", "gv"]
        .map { x in ["n", "h", "t"].map { ", i64 l\(x)\($0)" }.joined() }.joined()
    static let flashLayoutArgument = "tc_layouts{heads" + ["q", "k", "v", "o", "gq", "gk", "gv"]
        .map { x in ", {l\(x)n, l\(x)h, l\(x)t}" }.joined() + "}"

    /// The entry points of one variant per register width (the float32 family's signatures, and dk/dv's `dqp`).
    /// `input16`: q, k, v and dOut as bf16 buffers and dq, dk, dv rounded to bf16 (`attention_flash_bf16[_async]_in16_*`),
    /// else float32 carriers and float32 gradients.
    static func flashBF16Entries(async: Bool, input16: Bool = false, direct: Bool = false) -> String {
        let flag = async ? "true" : "false", d = direct ? "true" : "false"
        let name = "attention_flash_bf16\(direct ? "_direct" : async ? "_async" : "")\(input16 ? "_in16" : "")"
        let t = input16 ? "u16" : "float"
        // The direct family takes every operand's head layout (`AttentionLayouts`); the others contiguous operands.
        let sizes = "i64 batch, i64 tq, i64 tk, int dh, int dv, float scale" + (direct ? ", " + flashLayoutParameters : "")
        let passed = "batch, tq, tk, dh, dv, scale, " + (direct ? flashLayoutArgument : "tc_layouts{}")
        let inputs = "const \(t)* q, const \(t)* k, const \(t)* v", stats = "const \(t)* dout, const float* lse, const float* delta"
        // The direct family's forward also takes the merged bf16 output (by the dOut layout, or null); its dk/dv takes
        // bf16 dq and a count per (head, query tile): dq summed by each query tile's last block (tc_dq_last_block)
        // where the host passes them, else by the partials' own kernel.
        let lastBlock = direct ? ", \(t)* dq, unsigned* dqcount" : "", lastArgs = direct ? ", dq, dqcount" : ""
        // The direct family also has WHOLE entry points ("…_d80w"): compile-time tile widths (`tc_width`), and the
        // forward with two m-tiles per warp (query tiles of 128 rows).
        return [64, 80, 96, 128].flatMap { w in (direct ? ["", "w"] : [""]).map { suffix in
            let whole = suffix.isEmpty ? "false" : "true", mt = suffix.isEmpty ? 1 : 2
            return """
            extern "C" __global__ void \(name)_forward_d\(w)\(suffix)(\(inputs), float* out, float* lse, \(sizes)\(direct ? ", \(t)* o16" : "")) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_forward<\(w), \(flag), \(t), \(d), \(whole), \(mt)>(smem, q, k, v, out, lse, \(passed)\(direct ? ", o16" : "")); }
            extern "C" __global__ void \(name)_backward_dq_d\(w)\(suffix)(\(inputs), \(stats), \(t)* dq, \(sizes)) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_backward_dq<\(w), \(flag), \(t), \(t), \(d), \(whole)>(smem, q, k, v, dout, lse, delta, dq, \(passed)); }
            extern "C" __global__ void \(name)_backward_dkdv_d\(w)\(suffix)(\(inputs), \(stats), \(t)* dk, \(t)* dv_out, float* dqp, \(sizes)\(lastBlock)) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_backward_dkdv<\(w), \(flag), \(t), \(t), \(d), \(whole)>(smem, q, k, v, dout, lse, delta, dk, dv_out, dqp, \(passed)\(lastArgs)); }
            """ + (direct ? """

            extern "C" __global__ void \(name)_backward_dkdv_d\(w)\(suffix)s(\(inputs), \(stats), \(t)* dk, \(t)* dv_out, float* dqp, \(sizes)\(lastBlock)) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_backward_dkdv<\(w), \(flag), \(t), \(t), \(d), \(whole), true>(smem, q, k, v, dout, lse, delta, dk, dv_out, dqp, \(passed)\(lastArgs)); }
            extern "C" __global__ void \(name)_backward_dkdv_d\(w)\(suffix)sl(\(inputs), \(stats), \(t)* dk, \(t)* dv_out, float* dqp, \(sizes)\(lastBlock)) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_backward_dkdv<\(w), \(flag), \(t), \(t), \(d), \(whole), true, false>(smem, q, k, v, dout, lse, delta, dk, dv_out, dqp, \(passed)\(lastArgs)); }
            """ : "") } }.joined(separator: "\n") + "\n"
    }

    /// True where `precision`'s flash kernels run on the tensor cores: bf16 carriers on sm_80 and later (mma.sync
    /// m16n8k16 .bf16 is an sm_80 instruction); otherwise the float32 kernels take the carriers as they are.
    func flashUsesTensorCores(_ precision: ComputePrecision) -> Bool {
        precision == .bfloat16 && driver.computeCapability >= 80
    }

    /// The tensor-core kernels pack every operand with `haste_pack_bf16x2` (round to nearest even) as they load it.
    public func attentionRoundsOperands(_ shape: AttentionShape, precision: ComputePrecision) -> Bool {
        attentionRecomputesProbabilities(shape) && flashUsesTensorCores(precision)
    }

    /// "d64", "d80" (SiT-XL/2's 72), "d96" or "d128": the register tile width for max(Dh, Dv) ≤ 128.
    static func flashBF16Variant(_ s: AttentionShape) -> String {
        let d = Swift.max(s.headDim, s.valueDim)
        return d <= 64 ? "d64" : d <= 80 ? "d80" : d <= 96 ? "d96" : "d128"
    }

    /// Shared memory words of the bf16 kernels (see the file notes); `staged` adds the tiles in flight of the
    /// `_async` entry points (64 rows of Dh and of Dv, float32, or bf16 with `input16`).
    /// `direct`: the second buffers of the streamed pair tiles (64 rows of sq and of sv words) in the stage's place.
    /// `forwardRows`: the forward's query rows per block (128: the direct WHOLE forward, two m-tiles per warp).
    static func flashBF16SharedWords(_ s: AttentionShape, staged: Bool = false, input16: Bool = false,
                                     direct: Bool = false, forwardRows: Int = 64) -> (forward: Int, dq: Int, dkdv: Int) {
        let kh = (s.headDim + 15) / 16 * 16, kv = (s.valueDim + 15) / 16 * 16
        let rows = 64 * (kh / 2 + 4) * 2, values = 64 * (kv / 2 + 4)
        let stage = direct ? 64 * (kh / 2 + 4 + kv / 2 + 4) : staged ? 64 * (s.headDim + s.valueDim) / (input16 ? 2 : 1) : 0
        // staged: dk/dv double-buffers lse and D.
        return (rows + (forwardRows - 64) * (kh / 2 + 4) + values + stage, rows + 2 * values + stage,
                rows + 2 * values + (staged || direct ? 256 : 128) + stage)
    }

    /// Whether Dh and Dv both pad to the register width (`flashBF16Variant`: SiT's 72 → d80, 64 → d64), unless
    /// `HASTE_FLASH_WHOLE=0`: the direct family's WHOLE entry points ("…_d80w") then take the tile widths as
    /// compile-time constants.
    static func flashBF16Whole(_ s: AttentionShape) -> Bool {
        let w = Int(flashBF16Variant(s).dropFirst())!
        return flashWholeAllowed && (s.headDim + 15) / 16 * 16 == w && (s.valueDim + 15) / 16 * 16 == w
    }

    /// Whether the `_direct_in16_` kernels (cp.async straight into double-buffered pair tiles) replace the `_async_`
    /// ones: bf16 operands whose rows are whole 16-byte pieces (Dh, Dv multiples of 8: `flashBF16Async` checked the
    /// alignment), within the device's shared memory (`words`: the kernel's entry of `flashBF16SharedWords(s,
    /// direct: true)`), unless `HASTE_FLASH_DIRECT=0`. The same bits as the `_async_in16_` kernels.
    func flashBF16Direct(_ s: AttentionShape, words: Int, async: Bool, input16: Bool) -> Bool {
        async && input16 && CUDABackend.flashDirectAllowed && s.headDim % 8 == 0 && s.valueDim % 8 == 0
            && words * 4 <= driver.maxSharedBytes
    }

    /// Whether the `_async` kernels (cp.async double buffering of the streamed tiles) may replace the tensor-core
    /// ones: Dh and Dv multiples of 4 and every streamed tensor 16-byte aligned (whole 16-byte pieces), and the
    /// staged shared memory within the device's limit for `words` (the kernel's entry of
    /// `flashBF16SharedWords(s, staged: true)`).
    func flashBF16Async(_ s: AttentionShape, words: Int, _ buffers: [Buffer]) -> Bool {
        let per = 16 / buffers[0].dtype.byteSize     // elements per 16-byte piece: 4 float32, 8 bf16
        return s.headDim % per == 0 && s.valueDim % per == 0 && words * 4 <= driver.maxSharedBytes
            && buffers.allSatisfy { address($0) % 16 == 0 } && CUDABackend.flashAsyncAllowed
    }

    /// True where the flash operands are bf16 buffers (`attentionTakesBF16Operands`: the tensor-core kernels only),
    /// false for float32 carriers; mixed or other dtypes stop.
    func flashInputs16(_ buffers: [Buffer], tensorCores: Bool, _ op: String) -> Bool {
        if buffers.allSatisfy({ $0.dtype == .float32 }) { return false }
        if tensorCores && buffers.allSatisfy({ $0.dtype == .bfloat16 }) { return true }
        CUDABackend.fail("\(op) on \(device): operands \(buffers.map(\.dtype)) (all float32, or all bfloat16 with bf16 tensor-core kernels)")
    }

    /// The tensor-core flash kernels take q, k, v and dOut as bf16 buffers too.
    public func attentionTakesBF16Operands(_ shape: AttentionShape) -> Bool {
        attentionRoundsOperands(shape, precision: .bfloat16)
    }

    /// The family and kernel-name prefix of the flash kernels: float32, bf16 tensor cores, or (`async`) their
    /// cp.async streaming variant.
    func flashFamily(tensorCores: Bool, async: Bool, input16: Bool = false, direct: Bool = false) -> (source: KernelSource, prefix: String) {
        if direct { return (CUDABackend.flashAttentionBF16DirectIn16Source, "attention_flash_bf16_direct_in16_") }
        if input16 {
            return async ? (CUDABackend.flashAttentionBF16AsyncIn16Source, "attention_flash_bf16_async_in16_")
                : (CUDABackend.flashAttentionBF16In16Source, "attention_flash_bf16_in16_")
        }
        return async ? (CUDABackend.flashAttentionBF16AsyncSource, "attention_flash_bf16_async_")
            : tensorCores ? (CUDABackend.flashAttentionBF16Source, "attention_flash_bf16_")
            : (CUDABackend.flashAttentionSource, "attention_flash_")
    }

    /// `HASTE_FLASH_ASYNC=0`: the synchronous kernels everywhere, for comparisons (both give the same bits; a test
    /// switches it for its own task: `$flashAsyncAllowed.withValue`).
    @TaskLocal static var flashAsyncAllowed = ProcessInfo.processInfo.environment["HASTE_FLASH_ASYNC"] != "0"
    /// `HASTE_FLASH_DIRECT=0`: the `_async_in16_` kernels (through the stage) where the `_direct_in16_` ones would run,
    /// for comparisons (the same bits; a test switches it for its own task: `$flashDirectAllowed.withValue`).
    @TaskLocal static var flashDirectAllowed = ProcessInfo.processInfo.environment["HASTE_FLASH_DIRECT"] != "0"
}
