import Foundation
import HasteTensor

/// The cuBLASLt functions of a GEMM with an epilogue (`GemmEpilogue`: the bias added as PyTorch's `addmm` →
/// `gemm_and_bias` does for `F.linear`, GELU and its gradient, bias gradients). Resolved from the libcublasLt that
/// `CuBLASAPI` loaded; cublasLt.h's values (12.x and 13.x alike): handles and descriptors are opaque pointers, enums
/// Int32, the heuristic result 96 bytes (`cublasLtMatmulAlgo_t` 64, workspace size 8, status 4, waves 4, reserved
/// 16). The attribute and epilogue numbers are checked against the 12.9 header (`CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_*`
/// 11 and 12; `CUBLASLT_EPILOGUE_*` as below).
struct CuBLASLtAPI {
    typealias Handle = OpaquePointer
    static let descTransA: Int32 = 3, descTransB: Int32 = 4, descEpilogue: Int32 = 7        // cublasLtMatmulDescAttributes_t
    static let descBiasPointer: Int32 = 8, descBiasDataType: Int32 = 26
    static let descAuxPointer: Int32 = 11, descAuxLD: Int32 = 12                              // EPILOGUE_AUX_POINTER, _LD
    /// cublasLtEpilogue_t: BIAS 4, GELU_BIAS 36, GELU_AUX_BIAS 164, DGELU 192, DGELU_BGRAD 208, BGRADB 512.
    static func epilogueValue(_ e: GemmEpilogue) -> UInt32 {
        switch e {
        case .bias: return 4
        case let .geluBias(_, aux): return aux == nil ? 36 : 164
        case let .dgelu(_, bg): return bg == nil ? 192 : 208
        case .biasGradientB: return 512
        }
    }
    static let prefMaxWorkspace: Int32 = 1                                                   // cublasLtMatmulPreferenceAttributes_t
    static let prefAlignmentA: Int32 = 5, prefAlignmentB: Int32 = 6, prefAlignmentC: Int32 = 7, prefAlignmentD: Int32 = 8
    static let compute32FFastTF32: Int32 = 77                                                // CUBLAS_COMPUTE_32F_FAST_TF32
    static let heuristicResultBytes = 96

    let create: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    /// (desc*, computeType, scaleType)
    let descCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32, Int32) -> Int32
    let descSet: @convention(c) (OpaquePointer?, Int32, UnsafeRawPointer, Int) -> Int32
    /// (layout*, type, rows, cols, ld)
    let layoutCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32, UInt64, UInt64, Int64) -> Int32
    let preferenceCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    let preferenceSet: @convention(c) (OpaquePointer?, Int32, UnsafeRawPointer, Int) -> Int32
    let preferenceDestroy: @convention(c) (OpaquePointer?) -> Int32
    /// (handle, desc, A, B, C, D layouts, preference, requested, results[], returned*)
    let heuristic: @convention(c) (Handle?, OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?,
                                   OpaquePointer?, Int32, UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
    /// (handle, desc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo, workspace, workspace bytes, stream)
    let matmul: @convention(c) (Handle?, OpaquePointer?, UnsafeRawPointer, UnsafeRawPointer?, OpaquePointer?, UnsafeRawPointer?,
                                OpaquePointer?, UnsafeRawPointer, UnsafeRawPointer?, OpaquePointer?, UnsafeMutableRawPointer?,
                                OpaquePointer?, UnsafeRawPointer?, UnsafeMutableRawPointer?, Int, OpaquePointer?) -> Int32

    init(_ lt: CUDALibrarySearch.Loaded) throws {
        let k = CUDALibraryKind.cublasLt
        create = try lt.symbol("cublasLtCreate", k)
        descCreate = try lt.symbol("cublasLtMatmulDescCreate", k); descSet = try lt.symbol("cublasLtMatmulDescSetAttribute", k)
        layoutCreate = try lt.symbol("cublasLtMatrixLayoutCreate", k)
        preferenceCreate = try lt.symbol("cublasLtMatmulPreferenceCreate", k)
        preferenceSet = try lt.symbol("cublasLtMatmulPreferenceSetAttribute", k)
        preferenceDestroy = try lt.symbol("cublasLtMatmulPreferenceDestroy", k)
        heuristic = try lt.symbol("cublasLtMatmulAlgoGetHeuristic", k); matmul = try lt.symbol("cublasLtMatmul", k)
    }
}

/// The epilogue GEMMs of one `CUDADriver`: a cuBLASLt handle, a 32 MiB workspace (cuBLAS's own default on
/// sm_90), and per problem (shape, dtypes, epilogue, the operands' alignments) the descriptors and the algorithm the
/// heuristic chose, made once. A problem cuBLASLt turns down (no algorithm, or a failing call) is remembered and
/// `run` returns false for it, so the caller computes it its other way. Not thread-safe: the driver locks.
final class EpilogueGemms {
    struct Key: Hashable {
        var transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
        var inputs: DType, output: DType, tf32: Bool, epilogue: UInt32
        var alignA: UInt32, alignB: UInt32, alignC: UInt32, alignBias: UInt32, alignAux: UInt32   // `alignment` of each address
    }
    /// The epilogue's vector (bias or bias gradient; 0 where none) and auxiliary matrix (0 where none).
    static func pointers(_ e: GemmEpilogue) -> (vector: DevicePointer, aux: DevicePointer) {
        switch e {
        case let .bias(b): return (b, 0)
        case let .geluBias(b, aux): return (b, aux ?? 0)
        case let .dgelu(aux, bg): return (bg ?? 0, aux)
        case let .biasGradientB(bg): return (bg, 0)
        }
    }
    struct Plan { let desc: OpaquePointer, a: OpaquePointer, b: OpaquePointer, d: OpaquePointer, algo: [UInt8] }

    let api: CuBLASLtAPI
    let handle: OpaquePointer
    let workspace: DevicePointer
    static let workspaceBytes = 32 << 20
    private var plans: [Key: Plan] = [:]
    private var refused: Set<Key> = []
    /// The first refusal, for `haste doctor`-style messages ("cublasLtMatmulAlgoGetHeuristic: no algorithm …").
    private(set) var firstRefusal: String?

    init(api: CuBLASLtAPI, workspace: DevicePointer) throws {
        var h: OpaquePointer?
        let s = api.create(&h)
        guard s == 0, let h else { throw CUDAError("cublasLtCreate failed (status \(s))") }
        self.api = api; handle = h; self.workspace = workspace
    }

    /// The largest power of two (≤ 256) dividing a device address: the alignment cuBLASLt may assume.
    static func alignment(_ p: DevicePointer) -> UInt32 {
        p == 0 ? 256 : UInt32(Swift.min(256, 1 << p.trailingZeroBitCount))
    }

    /// Queues D = epilogue(alpha·op(A)·op(B)) (C = D, beta 0; batch 1) on `stream`; false, with nothing queued,
    /// where cuBLASLt has no algorithm for it or refuses the call.
    func run(_ g: GemmDescriptor, epilogue: GemmEpilogue, tf32: Bool, stream: OpaquePointer?) -> Bool {
        let (vector, aux) = Self.pointers(epilogue)
        let key = Key(transA: g.transA, transB: g.transB, m: g.m, n: g.n, k: g.k, lda: g.lda, ldb: g.ldb, ldc: g.ldc,
                      inputs: g.inputs, output: g.output, tf32: tf32, epilogue: CuBLASLtAPI.epilogueValue(epilogue),
                      alignA: Self.alignment(g.a), alignB: Self.alignment(g.b), alignC: Self.alignment(g.c),
                      alignBias: Self.alignment(vector), alignAux: Self.alignment(aux))
        if refused.contains(key) { return false }
        guard let plan = plans[key] ?? makePlan(key, vector: vector, aux: aux) else { refused.insert(key); return false }
        plans[key] = plan
        var alpha = g.alpha, beta: Float = 0
        func ptr(_ a: DevicePointer) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(a)) }
        // This call's addresses (the plan was made for the first call's, with the same alignments).
        var set: Int32 = 0
        for (attribute, address) in [(CuBLASLtAPI.descBiasPointer, vector), (CuBLASLtAPI.descAuxPointer, aux)]
            where address != 0 && set == 0 {
            var pointer = address
            set = api.descSet(plan.desc, attribute, &pointer, 8)
        }
        let status = set != 0 ? set : plan.algo.withUnsafeBytes { algo in
            api.matmul(handle, plan.desc, &alpha, ptr(g.a), plan.a, ptr(g.b), plan.b, &beta, ptr(g.c), plan.d, ptr(g.c), plan.d,
                       algo.baseAddress, ptr(workspace), EpilogueGemms.workspaceBytes, stream)
        }
        if status != 0 {
            refuse(key, "cublasLtMatmul (epilogue \(epilogue.label), \(g.label)) returned status \(status)")
            return false
        }
        return true
    }

    private func refuse(_ key: Key, _ why: String) {
        refused.insert(key); plans[key] = nil
        if firstRefusal == nil { firstRefusal = why }
    }

    /// The descriptors and the heuristic's first algorithm; nil (remembered by the caller) where any step fails.
    private func makePlan(_ key: Key, vector: DevicePointer, aux: DevicePointer) -> Plan? {
        func fail(_ what: String, _ s: Int32) -> Plan? {
            if firstRefusal == nil {
                firstRefusal = "\(what) returned status \(s) for \(key.inputs)→\(key.output) \(key.m)×\(key.n)×\(key.k), epilogue \(key.epilogue)"
            }
            return nil
        }
        let ab = CuBLASAPI.dataType(key.inputs), cd = CuBLASAPI.dataType(key.output)
        let compute = key.inputs == .float32 && key.tf32 ? CuBLASLtAPI.compute32FFastTF32 : CuBLASAPI.compute32F
        var desc: OpaquePointer?, la: OpaquePointer?, lb: OpaquePointer?, ld: OpaquePointer?, pref: OpaquePointer?
        var s = api.descCreate(&desc, compute, CuBLASAPI.r32F)
        if s != 0 { return fail("cublasLtMatmulDescCreate", s) }
        let ta: Int32 = key.transA ? CuBLASAPI.opT : CuBLASAPI.opN, tb: Int32 = key.transB ? CuBLASAPI.opT : CuBLASAPI.opN
        // Each value as 8 bytes alive for the call only (withUnsafeBytes); a 4-byte attribute reads the first four,
        // the low half on the little-endian hosts CUDA runs on.
        var attributes = [(CuBLASLtAPI.descTransA, UInt64(ta), 4), (CuBLASLtAPI.descTransB, UInt64(tb), 4),
                          (CuBLASLtAPI.descEpilogue, UInt64(key.epilogue), 4)]
        if vector != 0 { attributes += [(CuBLASLtAPI.descBiasDataType, UInt64(cd), 4), (CuBLASLtAPI.descBiasPointer, vector, 8)] }
        // The GELU input matrix: D's dtype (the default aux type) and D's leading dimension (a multiple of 8).
        if aux != 0 { attributes += [(CuBLASLtAPI.descAuxPointer, aux, 8), (CuBLASLtAPI.descAuxLD, UInt64(key.ldc), 8)] }
        for (attribute, value, size) in attributes {
            s = withUnsafeBytes(of: value) { api.descSet(desc, attribute, $0.baseAddress!, size) }
            if s != 0 { return fail("cublasLtMatmulDescSetAttribute(\(attribute))", s) }
        }
        let (rowsA, colsA) = key.transA ? (key.k, key.m) : (key.m, key.k)
        let (rowsB, colsB) = key.transB ? (key.n, key.k) : (key.k, key.n)
        s = api.layoutCreate(&la, ab, UInt64(rowsA), UInt64(colsA), Int64(key.lda))
        if s == 0 { s = api.layoutCreate(&lb, ab, UInt64(rowsB), UInt64(colsB), Int64(key.ldb)) }
        if s == 0 { s = api.layoutCreate(&ld, cd, UInt64(key.m), UInt64(key.n), Int64(key.ldc)) }
        if s != 0 { return fail("cublasLtMatrixLayoutCreate", s) }
        s = api.preferenceCreate(&pref)
        if s != 0 { return fail("cublasLtMatmulPreferenceCreate", s) }
        defer { _ = api.preferenceDestroy(pref) }
        var bytes = UInt64(EpilogueGemms.workspaceBytes)
        s = api.preferenceSet(pref, CuBLASLtAPI.prefMaxWorkspace, &bytes, 8)
        let prefs = [CuBLASLtAPI.prefAlignmentA, CuBLASLtAPI.prefAlignmentB, CuBLASLtAPI.prefAlignmentC, CuBLASLtAPI.prefAlignmentD]
        for (attribute, alignment) in zip(prefs, [key.alignA, key.alignB, key.alignC, key.alignC]) where s == 0 {   // D = C
            var a = alignment
            s = api.preferenceSet(pref, attribute, &a, 4)
        }
        if s != 0 { return fail("cublasLtMatmulPreferenceSetAttribute", s) }
        var result = [UInt8](repeating: 0, count: CuBLASLtAPI.heuristicResultBytes)
        var count: Int32 = 0
        s = result.withUnsafeMutableBytes { api.heuristic(handle, desc, la, lb, ld, ld, pref, 1, $0.baseAddress!, &count) }
        if s != 0 || count < 1 { return fail("cublasLtMatmulAlgoGetHeuristic (\(count) algorithms)", s) }
        let state = result.withUnsafeBytes { $0.load(fromByteOffset: 72, as: Int32.self) }
        if state != 0 { return fail("cublasLtMatmulAlgoGetHeuristic's first result", state) }
        return Plan(desc: desc!, a: la!, b: lb!, d: ld!, algo: Array(result[0..<64]))
    }
}
