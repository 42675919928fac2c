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
    static let flashAttentionBF16DirectIn16Source = KernelSource(family: "flashAttentionBF16DirectIn16", kernels: flashBF16Kernels("direct_in16_"),
                                                                 code: flashBF16Code + "\n" + flashBF16Entries(async: true, input16: true, direct: true),
                                                                 minimumArchitecture: 80)
    static func flashBF16Kernels(_ infix: String) -> [String] {
        ["forward", "backward_dq", "backward_dkdv"].flatMap { k in ["d64", "d80", "d96", "d128"].map { "attention_flash_bf16_\(infix)\(k)_\($0)" } }
    }
    /// The entry points of one variant per register width (the float32 family's signatures, and dk/dv's `dqp`).
    /// `input16`: q, k, v and dOut as bf16 buffers and dq, dk, dv rounded to bf16 (`attention_flash_bf16[_async]_in16_*`),
    /// else float32 carriers and float32 gradients.
    static func flashBF16Entries(async: Bool, input16: Bool = false, direct: Bool = false) -> String {
        let flag = async ? "true" : "false", d = direct ? "true" : "false"
        let name = "attention_flash_bf16\(direct ? "_direct" : async ? "_async" : "")\(input16 ? "_in16" : "")"
        let t = input16 ? "u16" : "float"
        // The direct family takes every operand's head layout (`AttentionLayouts`); the others contiguous operands.
        let sizes = "i64 batch, i64 tq, i64 tk, int dh, int dv, float scale" + (direct ? ", i64 heads" + ["q", "k", "v", "o", "gq", "gk", "gv"]
            .map { x in ["n", "h", "t"].map { ", i64 l\(x)\($0)" }.joined() }.joined() : "")
        let passed = "batch, tq, tk, dh, dv, scale, " + (direct ? "tc_layouts{heads" + ["q", "k", "v", "o", "gq", "gk", "gv"]
            .map { x in ", {l\(x)n, l\(x)h, l\(x)t}" }.joined() + "}" : "tc_layouts{}")
        let inputs = "const \(t)* q, const \(t)* k, const \(t)* v", stats = "const \(t)* dout, const float* lse, const float* delta"
        return [64, 80, 96, 128].map { w in """
            extern "C" __global__ void \(name)_forward_d\(w)(\(inputs), float* out, float* lse, \(sizes)) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_forward<\(w), \(flag), \(t), \(d)>(smem, q, k, v, out, lse, \(passed)); }
            extern "C" __global__ void \(name)_backward_dq_d\(w)(\(inputs), \(stats), \(t)* dq, \(sizes)) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_backward_dq<\(w), \(flag), \(t), \(t), \(d)>(smem, q, k, v, dout, lse, delta, dq, \(passed)); }
            extern "C" __global__ void \(name)_backward_dkdv_d\(w)(\(inputs), \(stats), \(t)* dk, \(t)* dv_out, float* dqp, \(sizes)) {
                HASTE_DYNAMIC_SHARED(u32, smem); tc_backward_dkdv<\(w), \(flag), \(t), \(t), \(d)>(smem, q, k, v, dout, lse, delta, dk, dv_out, dqp, \(passed)); }
            """ }.joined(separator: "\n") + "\n"
    }
}
