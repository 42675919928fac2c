#if canImport(Glibc)
import Glibc
#endif

/// 2-D convolution as im2col + GEMM (torch: `F.conv2d`, groups = 1); the CPU's float32 forward on AVX-512F packs the
/// GEMM's panels straight from the image instead (implicit GEMM, the same bits: CPUConv.swift, CKernels/convpack.c).
/// The backward uses the same column matrix instead of transposed convolutions: dW = dY·colsᵀ, dCols = Wᵀ·dY then
/// col2im, db = Σ dY.
public protocol ConvKernels: AnyObject {
    /// x [batch, channels, height, width] → cols [batch, channels·kh·kw, outHeight·outWidth] with
    /// cols[n, (c·kh + i)·kw + j, oy·outWidth + ox] = x[n, c, oy·stride − padH + i, ox·stride − padW + j],
    /// zero where that falls in the padding (padH, padW = geometry.paddingHeight, .paddingWidth). x and cols
    /// share one dtype: float32, float64 (CPU), or bfloat16 (a copy: real bf16 conv2d, autocast bf16 on CUDA).
    func im2col(x: Buffer, cols: Buffer, batch: Int, geometry: ConvGeometry)
    /// The transpose of `im2col`: dx[n, c, y, x] = Σ of the cols entries that im2col read from (n, c, y, x).
    /// Overwrites dx (pixels no window covers get 0).
    func col2im(cols: Buffer, dx: Buffer, batch: Int, geometry: ConvGeometry)
    /// The forward without a column matrix, where the backend has one (CPU float32 on AVX-512F: implicit GEMM):
    /// y[n] (outChannels × L) = weight (outChannels × K) · im2col(x[n]) + beta·y[n] for images n < batch, bit for bit
    /// what im2col + `gemm` give. Returns false, touching nothing, where it has none (the caller runs those).
    func implicitConv2d(x: Buffer, weight: Buffer, y: Buffer, batch: Int, outChannels: Int, geometry: ConvGeometry,
                        beta: Double) -> Bool
    /// Winograd F(2×2, 3×3) for stride-1 3×3 convs where the backend has it (CPU float32 on AVX-512F): y[n] =
    /// conv(x[n]) (+ bias[k] on channel k, as bias + product, where bias is given) with 2.25× fewer multiply-adds;
    /// within float32 rounding of the direct product, not bit for bit. Returns false, touching nothing, where it
    /// does not apply.
    func winogradConv2d(x: Buffer, weight: Buffer, bias: Buffer?, y: Buffer, batch: Int, outChannels: Int,
                        geometry: ConvGeometry) -> Bool
}

extension ConvKernels {
    public func implicitConv2d(x: Buffer, weight: Buffer, y: Buffer, batch: Int, outChannels: Int, geometry: ConvGeometry,
                               beta: Double) -> Bool { false }
    public func winogradConv2d(x: Buffer, weight: Buffer, bias: Buffer?, y: Buffer, batch: Int, outChannels: Int,
                               geometry: ConvGeometry) -> Bool { false }
}

/// Sizes of one image's convolution: input [channels, height, width], kernel [kernelHeight, kernelWidth],
/// zero padding on both sides of each axis (torch's `padding=(paddingHeight, paddingWidth)`; Inception's
/// (1, 7) kernels take (0, 3)), equal stride on both axes (torch's int `stride`).
public struct ConvGeometry: Sendable, Equatable {
    public let channels: Int, height: Int, width: Int
    public let kernelHeight: Int, kernelWidth: Int
    public let stride: Int, paddingHeight: Int, paddingWidth: Int

    public init(channels: Int, height: Int, width: Int, kernelHeight: Int, kernelWidth: Int, stride: Int,
                paddingHeight: Int, paddingWidth: Int) {
        self.channels = channels; self.height = height; self.width = width
        self.kernelHeight = kernelHeight; self.kernelWidth = kernelWidth
        self.stride = stride; self.paddingHeight = paddingHeight; self.paddingWidth = paddingWidth
    }

    /// x [N, channels, height, width] convolved with weight [Cout, channels, kh, kw] (shapes already checked).
    init(input x: [Int], weight: [Int], stride: Int, padding: (Int, Int)) {
        self.init(channels: x[1], height: x[2], width: x[3], kernelHeight: weight[2], kernelWidth: weight[3], stride: stride,
                  paddingHeight: padding.0, paddingWidth: padding.1)
    }

    /// The same padding on both axes (torch's int `padding`).
    public init(channels: Int, height: Int, width: Int, kernelHeight: Int, kernelWidth: Int, stride: Int, padding: Int) {
        self.init(channels: channels, height: height, width: width, kernelHeight: kernelHeight, kernelWidth: kernelWidth,
                  stride: stride, paddingHeight: padding, paddingWidth: padding)
    }

    /// torch: floor((H + 2·paddingHeight − kh) / stride) + 1, likewise for the width.
    public var outHeight: Int { (height + 2 * paddingHeight - kernelHeight) / stride + 1 }
    public var outWidth: Int { (width + 2 * paddingWidth - kernelWidth) / stride + 1 }
    /// Rows of the column matrix (the GEMM's inner dimension): channels·kh·kw.
    public var patchSize: Int { channels * kernelHeight * kernelWidth }
    /// Columns of the column matrix: output pixels per image.
    public var outPixels: Int { outHeight * outWidth }
    /// A 1×1, stride-1, unpadded convolution reads x itself as its column matrix.
    var isPointwise: Bool { kernelHeight == 1 && kernelWidth == 1 && stride == 1 && paddingHeight == 0 && paddingWidth == 0 }
}

extension Tensor {
    /// torch: `F.conv2d(x, weight, bias, stride=stride, padding=padding)`; x [N, Cin, H, W] (NCHW),
    /// weight [Cout, Cin, kh, kw], bias [Cout] → [N, Cout, Ho, Wo]. groups = 1, zero padding. float32/float64, or
    /// bfloat16 tensors with no gradient to record (bf16 column matrix, bf16 GEMM with float32 accumulation, the
    /// output rounded once): under `Autocast` bf16 on CUDA that is what runs, forward and backward (BF16Conv2dBackward).
    public func conv2d(_ weight: Tensor, _ bias: Tensor? = nil, stride: Int = 1, padding: Int = 0) -> Tensor {
        conv2d(weight, bias, stride: stride, padding: (padding, padding), columnBudget: ConvColumns.budget, implicit: true)
    }

    /// torch: `F.conv2d(x, weight, bias, stride=stride, padding=(padH, padW))`: separate zero padding per axis,
    /// for non-square kernels (Inception's (1, 7) kernel with padding (0, 3), (7, 1) with (3, 0)).
    public func conv2d(_ weight: Tensor, _ bias: Tensor? = nil, stride: Int = 1, padding: (Int, Int)) -> Tensor {
        conv2d(weight, bias, stride: stride, padding: padding, columnBudget: ConvColumns.budget, implicit: true)
    }

    /// `columnBudget` caps the column-matrix elements built at once (tests shrink it to split the batch);
    /// `implicit: false` keeps the forward on im2col + GEMM where the backend has an implicit GEMM (tests compare);
    /// `winograd: false` keeps stride-1 3×3 convs off Winograd F(2×2, 3×3) (default: `ConvAlgorithms.winograd`).
    func conv2d(_ weight: Tensor, _ bias: Tensor?, stride: Int, padding: (Int, Int), columnBudget: Int,
                implicit: Bool = true, winograd: Bool = ConvAlgorithms.winograd) -> Tensor {
        if let low = Autocast.lowering(dtype) {   // Ops/Precision.swift: bf16/fp16 operands, output and gradients
            return autocastGemm(low, [self, weight, bias], {
                $0[0]!.conv2d($0[1]!, $0[2], stride: stride, padding: padding, columnBudget: columnBudget, implicit: implicit,
                              winograd: winograd)
            }, backward: { narrow in
                let g = ConvGeometry(input: shape, weight: weight.shape, stride: stride, padding: padding)
                return BF16Conv2dBackward(x: self, weight: weight, bias: bias, core: Conv2dBackward(
                    x: narrow[0]!, weight: narrow[1]!, bias: nil, geometry: g, columnBudget: columnBudget))
            })
        }
        require(rank == 4 && weight.rank == 4 && shape[1] == weight.shape[1],
                     "conv2d: input \(shape) with weight \(weight.shape) (expected [N, Cin, H, W] and [Cout, Cin, kh, kw])")
        require(bias == nil || bias!.shape == [weight.shape[0]], "conv2d: bias \(bias!.shape) for weight \(weight.shape)")
        require(stride >= 1 && padding.0 >= 0 && padding.1 >= 0,
                "conv2d: stride \(stride) must be ≥ 1 and padding \(padding) ≥ 0")
        require(dtype == weight.dtype && Tensor.gemmDType(dtype, [self, weight, bias], "conv2d") && (bias == nil || bias!.dtype == dtype),
                     "conv2d: dtypes \(dtype), \(weight.dtype)\(bias.map { ", \($0.dtype)" } ?? "") (need one float dtype)")
        require(device == weight.device && (bias == nil || bias!.device == device),
                     "conv2d: input on \(device), weight on \(weight.device)")
        let g = ConvGeometry(input: shape, weight: weight.shape, stride: stride, padding: padding)
        require(g.kernelHeight >= 1 && g.kernelWidth >= 1 && g.height + 2 * padding.0 >= g.kernelHeight
                        && g.width + 2 * padding.1 >= g.kernelWidth,
                     "conv2d: kernel \(weight.shape[2])×\(weight.shape[3]) does not fit input \(shape) with padding \(padding)")
        let x = contiguous(), w = weight.contiguous()
        let n = shape[0], cout = weight.shape[0], k = g.patchSize, l = g.outPixels
        let y = Tensor.empty([n, cout, g.outHeight, g.outWidth], dtype: dtype, device: device)
        let b = bias?.contiguous()
        if winograd && backend.winogradConv2d(x: x.buffer, weight: w.buffer, bias: b?.buffer, y: y.buffer, batch: n,
                                              outChannels: cout, geometry: g) {
            return y.recorded(Conv2dBackward(x: x, weight: w, bias: bias, geometry: g, columnBudget: columnBudget))
        }
        if let b {   // y starts as the bias broadcast over pixels; the GEMM accumulates into it (beta = 1)
            backend.stridedCopy(from: b.buffer, srcStrides: [0, 1, 0], to: y.buffer, dstStrides: [cout * l, l, 1], shape: [n, cout, l])
        }
        if implicit && backend.implicitConv2d(x: x.buffer, weight: w.buffer, y: y.buffer, batch: n, outChannels: cout,
                                              geometry: g, beta: bias == nil ? 0 : 1) {
            return y.recorded(Conv2dBackward(x: x, weight: w, bias: bias, geometry: g, columnBudget: columnBudget))
        }
        ConvColumns.forEachGroup(x, g, budget: columnBudget) { first, count, cols in
            // Y[n] (Cout × L) = W (Cout × K) · cols[n] (K × L), one GEMM per image of the group.
            backend.gemm(transA: false, transB: false, m: cout, n: l, k: k, alpha: 1,
                         a: w.buffer, lda: Swift.max(k, 1), strideA: 0, b: cols, ldb: Swift.max(l, 1), strideB: k * l,
                         beta: bias == nil ? 0 : 1, c: y.buffer.advanced(by: first * cout * l), ldc: Swift.max(l, 1),
                         strideC: cout * l, batch: count)
        }
        return y.recorded(Conv2dBackward(x: x, weight: w, bias: bias, geometry: g, columnBudget: columnBudget))
    }
}

/// Saves x and weight (contiguous), not the column matrix: it is rebuilt from x, a group of images at a
/// time, only when the weight needs a gradient (cols are kh·kw/stride² times the size of x).
struct Conv2dBackward: Backward {
    let x: Tensor, weight: Tensor, bias: Tensor?
    let geometry: ConvGeometry, columnBudget: Int
    var inputs: [Tensor] { bias.map { [x, weight, $0] } ?? [x, weight] }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let dx = x.isTracked ? inputGradient(dy, sums: x.dtype) : nil
        let dw = weight.isTracked ? weightGradient(dy, sums: weight.dtype) : nil
        let db = bias?.isTracked == true ? dy.sum(axes: [2, 3]).sum(axis: 0) : nil   // adjacent axes: no copy of dy
        return bias == nil ? [dx, dw] : [dx, dw, db]
    }

    /// dCols[n] (K × L) = Wᵀ · dY[n], then col2im; a pointwise conv's dCols is dx itself. dCols and dx are `sums`
    /// (the dtype of x, or float32 for bf16 dy and weight: the bf16 backward rounds dx once, after col2im).
    func inputGradient(_ dy: Tensor, sums: DType) -> Tensor {
        let g = geometry, be = dy.backend
        let n = x.shape[0], cout = weight.shape[0], k = g.patchSize, l = g.outPixels
        let dx = Tensor.empty(x.shape, dtype: sums, device: x.device)
        let group = g.isPointwise ? n : ConvColumns.groupSize(g, batch: n, budget: columnBudget)
        let dcols = g.isPointwise ? dx : Tensor.empty([group, k, l], dtype: sums, device: x.device)
        for first in stride(from: 0, to: n, by: group) {
            let count = min(group, n - first)
            let target = g.isPointwise ? dx.buffer.advanced(by: first * k * l) : dcols.buffer
            be.gemm(transA: true, transB: false, m: k, n: l, k: cout, alpha: 1,
                    a: weight.buffer, lda: Swift.max(k, 1), strideA: 0, b: dy.buffer.advanced(by: first * cout * l), ldb: Swift.max(l, 1),
                    strideB: cout * l, beta: 0, c: target, ldc: Swift.max(l, 1), strideC: k * l, batch: count)
            if !g.isPointwise {
                be.col2im(cols: dcols.buffer, dx: dx.buffer.advanced(by: first * g.channels * g.height * g.width),
                          batch: count, geometry: g)
            }
        }
        return dx
    }

    /// dW (Cout × K) = Σ_n dY[n] · cols[n]ᵀ, accumulated image by image in order (beta = 1 after the first) in
    /// `sums` (the weight's dtype, or float32 for bf16 dy and x: cols are built in x's dtype).
    func weightGradient(_ dy: Tensor, sums: DType) -> Tensor {
        let g = geometry, be = dy.backend
        let cout = weight.shape[0], k = g.patchSize, l = g.outPixels
        let dw = Tensor.zeros(weight.shape, dtype: sums, device: weight.device)   // stays 0 for an empty batch
        ConvColumns.forEachGroup(x, g, budget: columnBudget) { first, count, cols in
            for i in 0..<count {
                be.gemm(transA: false, transB: true, m: cout, n: k, k: l, alpha: 1,
                        a: dy.buffer.advanced(by: (first + i) * cout * l), lda: Swift.max(l, 1), strideA: 0,
                        b: cols.advanced(by: i * k * l), ldb: Swift.max(l, 1), strideB: 0,
                        beta: first + i == 0 ? 0 : 1, c: dw.buffer, ldc: Swift.max(k, 1), strideC: 0, batch: 1)
            }
        }
        return dw
    }
}

/// Autocast bf16 conv2d on CUDA: `core` is the float32 backward's code over the bf16 copies of x and the weight,
/// with float32 sums, so dx = bf16(col2im(w̃ᵀ·d̃y)), dw = bf16(Σ_n d̃y[n]·cols(x̃)[n]ᵀ), db = bf16(Σ d̃y): bf16 GEMMs
/// (one per column group for dx, one per image for dw), each gradient rounded once as the composite does.
struct BF16Conv2dBackward: Backward {
    let x: Tensor, weight: Tensor, bias: Tensor?, core: Conv2dBackward
    var inputs: [Tensor] { bias.map { [x, weight, $0] } ?? [x, weight] }

    func gradients(_ dy: Tensor) -> [Tensor?] {
        let grads = bf16Gradients(dy) { dyn in
            [x.isTracked ? core.inputGradient(dyn, sums: .float32) : nil,
             weight.isTracked ? core.weightGradient(dyn, sums: .float32) : nil,
             bias?.isTracked == true ? bf16ChannelSums(dyn, axis: 1) : nil]
        }
        return bias == nil ? Array(grads.prefix(2)) : grads
    }
}

/// Builds column matrices a group of images at a time, so memory stays bounded for big images and the
/// per-call overhead stays small for many small ones.
enum ConvColumns {
    /// Column-matrix elements per group (16 Mi: 64 MiB of float32, 32 MiB of bfloat16).
    static let budget = 1 << 24

    static func groupSize(_ g: ConvGeometry, batch: Int, budget: Int) -> Int {
        Swift.max(1, min(batch, budget / Swift.max(g.patchSize * g.outPixels, 1)))
    }

    /// Calls `body(first, count, cols)` with cols [count, K, L] for images first..<first+count of x.
    static func forEachGroup(_ x: Tensor, _ g: ConvGeometry, budget: Int, _ body: (Int, Int, Buffer) -> Void) {
        let n = x.shape[0], imageCount = g.channels * g.height * g.width
        if g.isPointwise {   // x [N, C, H·W] already is the column matrix
            body(0, n, x.buffer)
            return
        }
        let group = groupSize(g, batch: n, budget: budget)
        let cols = Tensor.empty([group, g.patchSize, g.outPixels], dtype: x.dtype, device: x.device)
        for first in stride(from: 0, to: n, by: group) {
            let count = min(group, n - first)
            x.backend.im2col(x: x.buffer.advanced(by: first * imageCount), cols: cols.buffer, batch: count, geometry: g)
            body(first, count, cols.buffer)
        }
    }
}

/// Which conv2d forward algorithms may run. `winograd`: stride-1 3×3 float32 convs on the CPU (AVX-512F) as Winograd
/// F(2×2, 3×3), the SD-VAE's and most of Inception's 3×3 layers (measured: `haste bench ops` conv rows).
/// HASTE_CONV_WINOGRAD=0 in the environment turns it off for the process (then those convs give the im2col bits).
public enum ConvAlgorithms {
    public static let winograd: Bool = {
        guard let v = getenv("HASTE_CONV_WINOGRAD") else { return true }
        return String(cString: v) != "0"
    }()
}
