import Foundation
import Testing
import HasteTensor
@testable import HasteCUDA

/// A stand-in libcublasLt that records what the matmul descriptor is given (attribute id, byte size, the value's
/// bytes as a little-endian integer) and hands back one "algorithm".
private let standInLtSource = #"""
#include <string.h>
#include <stdint.h>
int fake_lt_attrs[16]; long fake_lt_sizes[16]; unsigned long long fake_lt_values[16]; int fake_lt_count;
int cublasLtCreate(void** h) { *h = (void*)0x17; return 0; }
int cublasLtMatmulDescCreate(void** d, int compute, int scale) { *d = (void*)0x21; fake_lt_count = 0; return 0; }
int cublasLtMatmulDescSetAttribute(void* d, int attr, const void* buf, size_t size) {
    unsigned long long v = 0;
    memcpy(&v, buf, size < 8 ? size : 8);
    if (fake_lt_count < 16) { fake_lt_attrs[fake_lt_count] = attr; fake_lt_sizes[fake_lt_count] = (long)size; fake_lt_values[fake_lt_count] = v; }
    fake_lt_count++;
    return 0;
}
int cublasLtMatrixLayoutCreate(void** l, int type, uint64_t rows, uint64_t cols, int64_t ld) { *l = (void*)0x31; return 0; }
int cublasLtMatmulPreferenceCreate(void** p) { *p = (void*)0x41; return 0; }
int cublasLtMatmulPreferenceSetAttribute(void* p, int attr, const void* buf, size_t size) { return 0; }
int cublasLtMatmulPreferenceDestroy(void* p) { return 0; }
int cublasLtMatmulAlgoGetHeuristic(void* h, void* d, void* a, void* b, void* c, void* dd, void* p, int requested, void* results, int* count) {
    memset(results, 0, 96); *count = 1; return 0;
}
int cublasLtMatmul(void* h, void* d, const void* alpha, const void* A, void* Ad, const void* B, void* Bd, const void* beta,
                   const void* C, void* Cd, void* D, void* Dd, const void* algo, void* ws, size_t wsBytes, void* stream) { return 0; }
"""#

/// The epilogue GEMMs' descriptor attributes (`EpilogueGemms.makePlan`, then `run`'s pointers), checked through the
/// stand-in: each value with its documented size — transposes, epilogue and bias type 4 bytes, the bias and aux
/// pointers and the aux leading dimension 8 — and the value itself (they were set from temporary pointers to locals
/// before). Per epilogue: BIAS 4, GELU_AUX_BIAS 164 (bias, aux), GELU_BIAS 36, DGELU_BGRAD 208 (bias gradient, aux),
/// DGELU 192 (aux only), BGRADB 512 (bias gradient only).
@Test func epilogueDescriptorGetsEachAttributeWithItsSize() throws {
    let dir = RuntimeTestSupport.temporaryFolder("fakelt")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    guard try compileStandIn("libcublasLt.so.12", standInLtSource, in: dir) else { return }
    let handle = try #require(dlopen("\(dir)/libcublasLt.so.12", RTLD_NOW | RTLD_LOCAL))
    let lt = CUDALibrarySearch.Loaded(path: "\(dir)/libcublasLt.so.12", origin: "test", handle: handle)
    let gemms = try EpilogueGemms(api: CuBLASLtAPI(lt), workspace: 0x1000)
    let g = GemmDescriptor(transA: true, transB: false, m: 64, n: 32, k: 16, alpha: 1, beta: 0, a: 0x10000, lda: 16, strideA: 0,
                           b: 0x20000, ldb: 16, strideB: 0, c: 0x30000, ldc: 64, strideC: 0, batch: 1, inputs: .bfloat16, output: .bfloat16)
    let bias: DevicePointer = 0x7f12_3456_7800, aux: DevicePointer = 0x7f12_4000_0000
    let (ta, tn, bf16) = (UInt64(CuBLASAPI.opT), UInt64(CuBLASAPI.opN), UInt64(CuBLASAPI.dataType(.bfloat16)))
    let (epi, bp, bt) = (CuBLASLtAPI.descEpilogue, CuBLASLtAPI.descBiasPointer, CuBLASLtAPI.descBiasDataType)
    let (ap, ald) = (CuBLASLtAPI.descAuxPointer, CuBLASLtAPI.descAuxLD)
    // (epilogue, then the attributes after the two transposes: makePlan's, then run's pointers again)
    let cases: [(GemmEpilogue, [(Int32, Int, UInt64)])] = [
        (.bias(bias), [(epi, 4, 4), (bt, 4, bf16), (bp, 8, bias), (bp, 8, bias)]),
        (.geluBias(bias: bias, preActivation: aux), [(epi, 4, 164), (bt, 4, bf16), (bp, 8, bias), (ap, 8, aux), (ald, 8, 64),
                                                     (bp, 8, bias), (ap, 8, aux)]),
        (.geluBias(bias: bias, preActivation: nil), [(epi, 4, 36), (bt, 4, bf16), (bp, 8, bias), (bp, 8, bias)]),
        (.dgelu(preActivation: aux, biasGradient: bias), [(epi, 4, 208), (bt, 4, bf16), (bp, 8, bias), (ap, 8, aux), (ald, 8, 64),
                                                          (bp, 8, bias), (ap, 8, aux)]),
        (.dgelu(preActivation: aux, biasGradient: nil), [(epi, 4, 192), (ap, 8, aux), (ald, 8, 64), (ap, 8, aux)]),
        (.biasGradientB(bias), [(epi, 4, 512), (bt, 4, bf16), (bp, 8, bias), (bp, 8, bias)]),
    ]
    func global<T>(_ name: String, _: T.Type) -> UnsafeMutablePointer<T> { dlsym(handle, name)!.assumingMemoryBound(to: T.self) }
    for (epilogue, want) in cases {
        #expect(gemms.run(g, epilogue: epilogue, tf32: false, stream: nil), "\(epilogue.label): \(gemms.firstRefusal ?? "")")
        let count = Int(global("fake_lt_count", Int32.self).pointee)
        let attrs = (0..<count).map { Int32(global("fake_lt_attrs", Int32.self)[$0]) }
        let sizes = (0..<count).map { global("fake_lt_sizes", Int.self)[$0] }
        let values = (0..<count).map { global("fake_lt_values", UInt64.self)[$0] }
        let full = [(CuBLASLtAPI.descTransA, 4, ta), (CuBLASLtAPI.descTransB, 4, tn)] + want
        #expect(attrs == full.map(\.0) && sizes == full.map(\.1) && values == full.map(\.2),
                "\(epilogue.label): attributes \(attrs), sizes \(sizes), values \(values)")
    }
}
