import Glibc
import CKernels
import Testing
@testable import HasteTensor

/// Geometries for the implicit-GEMM conv2d: x shape, weight shape, bias, stride, padding. They cover output rows
/// wider and narrower than a 32-pixel panel (contiguous loads, gathers across rows), odd sizes, padding wider than
/// the kernel reaches (all-zero rows), stride 2, 1×7 / 7×1, 1×1 with stride or padding, several KC blocks of K
/// (Cin·kh·kw > 256), several column blocks (L > the packed width), batch > 1 (item-parallel and one by one).
private let implicitCases: [(x: [Int], w: [Int], bias: Bool, stride: Int, padding: (Int, Int))] = [
    ([2, 3, 7, 7], [5, 3, 3, 3], true, 1, (1, 1)),
    ([1, 4, 37, 45], [6, 4, 3, 3], false, 1, (1, 1)),
    ([3, 5, 33, 64], [17, 5, 3, 3], true, 1, (1, 1)),
    ([1, 3, 9, 9], [5, 3, 3, 3], true, 2, (1, 1)),
    ([2, 6, 35, 71], [9, 6, 3, 3], false, 2, (0, 0)),
    ([1, 40, 19, 23], [30, 40, 3, 3], true, 1, (1, 1)),          // K = 360: two KC blocks
    ([1, 30, 17, 17], [20, 30, 3, 3], false, 2, (0, 0)),         // Inception's stride-2 reduction
    ([2, 12, 17, 17], [8, 12, 1, 7], true, 1, (0, 3)),
    ([2, 12, 17, 17], [8, 12, 7, 1], false, 1, (3, 0)),
    ([1, 9, 40, 40], [7, 9, 1, 1], true, 2, (0, 0)),
    ([1, 9, 13, 15], [7, 9, 1, 1], false, 1, (1, 2)),
    ([1, 3, 6, 5], [4, 3, 3, 3], true, 1, (3, 4)),               // rows and columns entirely in the padding
    ([1, 2, 8, 8], [3, 2, 8, 8], false, 1, (0, 0)),              // a single output pixel
    ([1, 8, 96, 96], [16, 8, 3, 3], true, 1, (1, 1)),            // L = 9216 > one column block of packed B
    ([1, 2, 3, 300], [3, 2, 3, 5], false, 1, (1, 2)),
]

private func bits(_ t: Tensor) -> [UInt32] { t.scalars(as: Float.self).map(\.bitPattern) }

/// One conv case's random operands (seeds `seed`, +1, +2), its geometry, an empty output and a label.
func convOperands(x: [Int], w: [Int], bias: Bool, stride: Int, padding: (Int, Int), seed: UInt64)
    -> (x: Tensor, w: Tensor, b: Tensor?, g: ConvGeometry, y: Tensor, what: String) {
    let g = ConvGeometry(input: x, weight: w, stride: stride, padding: padding)
    return (Tensor.randn(x, seed: seed), Tensor.randn(w, seed: seed + 1), bias ? Tensor.randn([w[0]], seed: seed + 2) : nil, g,
            Tensor.empty([x[0], w[0], g.outHeight, g.outWidth]), "x \(x) w \(w) stride \(stride) padding \(padding)")
}

/// The implicit GEMM gives the bits of im2col + sgemm (the packed panels are the same floats), through conv2d at the
/// pool's thread count. Runs where the CPU has AVX-512F and HASTE_CPU_KERNELS is not `portable`.
@Test func implicitConv2dIsBitwiseIm2colGemm() {
    guard CPUKernels.level == 2 else { return }
    var seed: UInt64 = 900
    for c in implicitCases {
        let (x, w, b, g, y, what) = convOperands(x: c.x, w: c.w, bias: c.bias, stride: c.stride, padding: c.padding, seed: seed)
        seed += 3
        #expect(CPUBackend.shared.implicitConv2d(x: x.buffer, weight: w.buffer, y: y.buffer, batch: c.x[0], outChannels: c.w[0],
                                                 geometry: g, beta: 0), "\(what): implicit GEMM not taken")
        let implicit = x.conv2d(w, b, stride: c.stride, padding: c.padding, columnBudget: ConvColumns.budget, implicit: true,
                                winograd: false)
        let explicit = x.conv2d(w, b, stride: c.stride, padding: c.padding, columnBudget: ConvColumns.budget, implicit: false,
                                winograd: false)
        #expect(bits(implicit) == bits(explicit), "\(what): implicit GEMM differs from im2col + GEMM")
        #expect(bits(y) == bits(explicit) || b != nil, "\(what): direct entry differs")
        var ref = directConv2d(x.to(.float64), w.to(.float64), stride: c.stride, padding: c.padding)
        if let b { ref = ref + b.to(.float64).reshaped([1, c.w[0], 1, 1]) }
        expectClose(implicit.to(.float64), ref, atol: 1e-4, rtol: 1e-4, what)   // and both are right
    }
}

/// The same bits for every split of the product between threads (1, 2, 3 pieces; 0: the serial entry), the im2col
/// path's bits, and for repeats.
@Test func implicitConv2dIsBitwiseIdenticalForEveryThreadSplit() {
    guard CPUKernels.level == 2 else { return }
    var seed: UInt64 = 950
    for c in implicitCases where c.x[0] == 1 {
        let x = Tensor.randn(c.x, seed: seed), w = Tensor.randn(c.w, seed: seed + 1)
        seed += 2
        let g = ConvGeometry(input: c.x, weight: c.w, stride: c.stride, padding: c.padding)
        let want = bits(x.conv2d(w, nil, stride: c.stride, padding: c.padding, columnBudget: ConvColumns.budget, implicit: false,
                                winograd: false))
        let conv = haste_conv_geometry(channels: g.channels, height: g.height, width: g.width, kernel_h: g.kernelHeight,
                                       kernel_w: g.kernelWidth, stride: g.stride, pad_h: g.paddingHeight, pad_w: g.paddingWidth,
                                       out_h: g.outHeight, out_w: g.outWidth)
        for parts in [0, 1, 2, 3, 2] {
            var y = [Float](repeating: .nan, count: c.w[0] * g.outPixels)
            y.withUnsafeMutableBufferPointer { yp in
                let s = AVX512Sgemm(transA: false, transB: false, m: c.w[0], n: g.outPixels, k: g.patchSize, alpha: 1,
                                    a: w.buffer.pointer(Float.self), lda: g.patchSize, b: x.buffer.pointer(Float.self),
                                    ldb: g.outPixels, beta: 0, c: yp.baseAddress!, ldc: g.outPixels, conv: conv)
                CPUBackend.withGemmMutex { if parts == 0 { s.runSerial() } else { s.run(parts: parts) } }
            }
            #expect(y.map(\.bitPattern) == want, "x \(c.x) w \(c.w): \(parts) pieces differ from im2col + GEMM")
        }
    }
}

/// Where the backend has no implicit GEMM for the operands, it says so and writes nothing: float64, bfloat16 and
/// the pointwise conv (whose column matrix is x itself) keep im2col + GEMM.
@Test func implicitConv2dDeclinesOtherOperands() {
    let g = ConvGeometry(channels: 2, height: 5, width: 5, kernelHeight: 3, kernelWidth: 3, stride: 1, padding: 1)
    for dtype in [DType.float64, .bfloat16] {
        let x = Tensor.zeros([1, 2, 5, 5], dtype: dtype), w = Tensor.zeros([3, 2, 3, 3], dtype: dtype)
        let y = Tensor.full([1, 3, 5, 5], 7, dtype: dtype)
        #expect(!CPUBackend.shared.implicitConv2d(x: x.buffer, weight: w.buffer, y: y.buffer, batch: 1, outChannels: 3,
                                                  geometry: g, beta: 0), "\(dtype) taken")
        #expect(y.to(.float32).scalars(as: Float.self).allSatisfy { $0 == 7 }, "\(dtype): y written")
    }
    let p = ConvGeometry(channels: 2, height: 5, width: 5, kernelHeight: 1, kernelWidth: 1, stride: 1, padding: 0)
    let x = Tensor.zeros([1, 2, 5, 5]), w = Tensor.zeros([3, 2, 1, 1]), y = Tensor.zeros([1, 3, 5, 5])
    #expect(!CPUBackend.shared.implicitConv2d(x: x.buffer, weight: w.buffer, y: y.buffer, batch: 1, outChannels: 3,
                                              geometry: p, beta: 0), "pointwise taken")
}
