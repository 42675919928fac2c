import Glibc
import Testing
@testable import HasteTensor

/// Stride-1 3×3 geometries Winograd F(2×2, 3×3) takes: odd output sizes (partial tiles on the right and bottom),
/// padding 0 and 1 per axis, a batch, K = 9·C past one KC block of the sgemm (C = 300), bias and none, rows of
/// tiles shorter than, equal to and longer than the transforms' 16 tiles at a time (tw = 12, 16, 21).
private let winogradCases: [(x: [Int], w: [Int], bias: Bool, padding: (Int, Int))] = [
    ([2, 16, 20, 23], [16, 16, 3, 3], true, (1, 1)),
    ([1, 24, 9, 8], [20, 24, 3, 3], false, (0, 0)),
    ([1, 17, 7, 33], [33, 17, 3, 3], true, (1, 0)),
    ([1, 300, 6, 6], [16, 300, 3, 3], false, (1, 1)),
    ([3, 16, 5, 4], [18, 16, 3, 3], true, (0, 1)),
    ([1, 16, 6, 41], [16, 16, 3, 3], true, (1, 1)),
]

private func bits(_ t: Tensor) -> [UInt32] { t.scalars(as: Float.self).map(\.bitPattern) }

/// conv2d takes Winograd for these geometries, and its result is within 8·(9C + 2)·2⁻²⁴ of the largest |x|·|w|
/// sum of the float64 definition (8× the bound of any float32 summation order of the direct product: the
/// transforms add a few roundings of sums of up to 4 tile values each). A wrong transform is off by O(1).
@Test func winogradConv2dIsWithinFloat32RoundingOfTheDefinition() {
    guard CPUKernels.level == 2 else { return }
    var seed: UInt64 = 1200
    for c in winogradCases {
        let (x, w, b, g, y, what) = convOperands(x: c.x, w: c.w, bias: c.bias, stride: 1, padding: c.padding, seed: seed)
        seed += 3
        #expect(CPUBackend.shared.winogradConv2d(x: x.buffer, weight: w.buffer, bias: b?.buffer, y: y.buffer, batch: c.x[0],
                                                 outChannels: c.w[0], geometry: g), "\(what): Winograd not taken")
        let got = x.conv2d(w, b, stride: 1, padding: c.padding)
        #expect(bits(y) == bits(got), "\(what): direct entry differs from conv2d")
        if let b {   // the bias added in the output transform: the bits of the product plus the bias, added after
            let plain = x.conv2d(w, nil, stride: 1, padding: c.padding)
            #expect(bits(got) == bits(plain + b.reshaped([1, c.w[0], 1, 1])), "\(what): bias folded differently")
        }
        var ref = directConv2d(x.to(.float64), w.to(.float64), stride: 1, padding: c.padding)
        if let b { ref = ref + b.to(.float64).reshaped([1, c.w[0], 1, 1]) }
        let mag = directConv2d(Tensor(x.scalars(as: Float.self).map { Double(abs($0)) }, shape: c.x),
                               Tensor(w.scalars(as: Float.self).map { Double(abs($0)) }, shape: c.w), stride: 1, padding: c.padding)
        let bound = 8 * Double(9 * c.x[1] + 2) * 0x1p-24 * (mag.scalars(as: Double.self).max()! + (b == nil ? 0 : 4))
        let err = zip(got.scalars(as: Float.self), ref.scalars(as: Double.self)).map { abs(Double($0) - $1) }.max()!
        #expect(err <= bound, "\(what): max error \(err) > \(bound)")
        // and the direct product (winograd: false) is the im2col result within the same bound
        let direct = x.conv2d(w, b, stride: 1, padding: c.padding, columnBudget: ConvColumns.budget, winograd: false)
        let gap = zip(got.scalars(as: Float.self), direct.scalars(as: Float.self)).map { abs(Double($0) - Double($1)) }.max()!
        #expect(gap <= 2 * bound && gap > 0, "\(what): Winograd and the direct product differ by \(gap)")
    }
}

/// The same bits when the tile rows are taken in chunks (one tile row at a time) and on repeats.
@Test func winogradChunksAndRepeatsGiveTheSameBits() {
    guard CPUKernels.level == 2 else { return }
    let x = Tensor.randn([2, 16, 21, 19], seed: 1300), w = Tensor.randn([24, 16, 3, 3], seed: 1301)
    let whole = bits(x.conv2d(w, nil, stride: 1, padding: 1))
    let g = ConvGeometry(input: x.shape, weight: w.shape, stride: 1, padding: (1, 1))
    let y = Tensor.empty([2, 24, g.outHeight, g.outWidth])
    #expect(CPUBackend.shared.winogradConv2d(x: x.buffer, weight: w.buffer, bias: nil, y: y.buffer, batch: 2, outChannels: 24,
                                             geometry: g, chunkFloats: 1), "Winograd not taken")
    #expect(bits(y) == whole, "tile rows one at a time differ from the whole image")
    #expect(bits(x.conv2d(w, nil, stride: 1, padding: 1)) == whole, "a repeat differs")
}

/// Geometries and operands Winograd does not take leave y untouched and conv2d on the other paths.
@Test func winogradDeclinesOtherConvs() {
    let declined: [(x: [Int], w: [Int], stride: Int, padding: (Int, Int), dtype: DType)] = [
        ([1, 16, 9, 9], [16, 16, 3, 3], 2, (1, 1), .float32),     // stride 2
        ([1, 16, 9, 9], [16, 16, 1, 7], 1, (0, 3), .float32),     // not 3×3
        ([1, 8, 9, 9], [16, 8, 3, 3], 1, (1, 1), .float32),       // too few input channels
        ([1, 16, 9, 9], [8, 16, 3, 3], 1, (1, 1), .float32),      // too few output channels
        ([1, 16, 9, 9], [16, 16, 3, 3], 1, (2, 2), .float32),     // padding 2
        ([1, 16, 9, 9], [16, 16, 3, 3], 1, (1, 1), .float64),
    ]
    for d in declined {
        let x = Tensor.randn(d.x, dtype: d.dtype, seed: 5), w = Tensor.randn(d.w, dtype: d.dtype, seed: 6)
        let g = ConvGeometry(input: d.x, weight: d.w, stride: d.stride, padding: d.padding)
        let y = Tensor.full([d.x[0], d.w[0], g.outHeight, g.outWidth], .nan, dtype: d.dtype)
        let before = y.to(.float64).scalars(as: Double.self).count
        #expect(!CPUBackend.shared.winogradConv2d(x: x.buffer, weight: w.buffer, bias: nil, y: y.buffer, batch: d.x[0],
                                                  outChannels: d.w[0], geometry: g), "\(d) taken")
        #expect(y.to(.float64).scalars(as: Double.self).filter(\.isNaN).count == before, "\(d): y written")
    }
    // a geometry it takes, with a bias of another dtype
    let x = Tensor.randn([1, 16, 9, 9], seed: 5), w = Tensor.randn([16, 16, 3, 3], seed: 6)
    let g = ConvGeometry(input: x.shape, weight: w.shape, stride: 1, padding: (1, 1))
    let y = Tensor.full([1, 16, 9, 9], .nan)
    #expect(!CPUBackend.shared.winogradConv2d(x: x.buffer, weight: w.buffer, bias: Tensor.zeros([16], dtype: .float64).buffer,
                                              y: y.buffer, batch: 1, outChannels: 16, geometry: g), "float64 bias taken")
    let untouched = y.scalars(as: Float.self).allSatisfy { $0.isNaN }
    #expect(untouched, "float64 bias: y written")
}
