import HasteTensor

/// The CPU backend behind another device index, every kernel forwarded; subclasses override one kernel to make
/// a deliberately wrong (or noisy) backend, proof that the selftest can fail.
class ForwardingBackend: Backend {
    let base = CPUBackend.shared
    var name: String { "forwarding-cpu" }

    func allocate(byteCount: Int) -> UnsafeMutableRawPointer { base.allocate(byteCount: byteCount) }
    func deallocate(_ address: UnsafeMutableRawPointer, byteCount: Int) { base.deallocate(address, byteCount: byteCount) }
    func copy(from src: Buffer, to dst: Buffer, byteCount: Int) { base.copy(from: src, to: dst, byteCount: byteCount) }
    func copyFromHost(_ host: UnsafeRawPointer, to dst: Buffer, byteCount: Int) { base.copyFromHost(host, to: dst, byteCount: byteCount) }
    func copyToHost(_ src: Buffer, _ host: UnsafeMutableRawPointer, byteCount: Int) { base.copyToHost(src, host, byteCount: byteCount) }
    func fill(_ dst: Buffer, count: Int, value: Double) { base.fill(dst, count: count, value: value) }
    func stridedCopy(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) {
        base.stridedCopy(from: src, srcStrides: srcStrides, to: dst, dstStrides: dstStrides, shape: shape)
    }
    func cast(from src: Buffer, to dst: Buffer, count: Int) { base.cast(from: src, to: dst, count: count) }
    func roundThrough(_ x: Buffer, _ y: Buffer, low: DType, count: Int, shift: Float) {
        base.roundThrough(x, y, low: low, count: count, shift: shift)
    }

    func fillUniform(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) { base.fillUniform(dst, count: count, seed: seed, offset: offset) }
    func fillNormal(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) { base.fillNormal(dst, count: count, seed: seed, offset: offset) }

    func binary(_ op: BinaryOp, _ a: Buffer, _ aStrides: [Int], _ b: Buffer, _ bStrides: [Int], _ out: Buffer, shape: [Int]) {
        base.binary(op, a, aStrides, b, bStrides, out, shape: shape)
    }
    func unary(_ op: UnaryOp, x: Buffer, y: Buffer, count: Int) { base.unary(op, x: x, y: y, count: count) }
    func unaryBackward(_ op: UnaryOp, x: Buffer, y: Buffer, dy: Buffer, dx: Buffer, count: Int) {
        base.unaryBackward(op, x: x, y: y, dy: dy, dx: dx, count: count)
    }
    func axpy(alpha: Double, x: Buffer, y: Buffer, count: Int) { base.axpy(alpha: alpha, x: x, y: y, count: count) }

    func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double, a: Buffer, lda: Int, strideA: Int,
              b: Buffer, ldb: Int, strideB: Int, beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        base.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, strideA: strideA,
                  b: b, ldb: ldb, strideB: strideB, beta: beta, c: c, ldc: ldc, strideC: strideC, batch: batch)
    }

    func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) { base.reduceSum(x, y, outer: outer, reduce: reduce, inner: inner) }
    func reduceMax(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) { base.reduceMax(x, y, outer: outer, reduce: reduce, inner: inner) }
    func reduceMaxBackward(_ x: Buffer, _ y: Buffer, _ dy: Buffer, _ dx: Buffer, outer: Int, reduce: Int, inner: Int) {
        base.reduceMaxBackward(x, y, dy, dx, outer: outer, reduce: reduce, inner: inner)
    }

    func layerNormForward(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, mean: Buffer, rstd: Buffer, rows: Int, cols: Int, eps: Double) {
        base.layerNormForward(x, weight: weight, bias: bias, y, mean: mean, rstd: rstd, rows: rows, cols: cols, eps: eps)
    }
    func layerNormBackward(_ x: Buffer, weight: Buffer?, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                           dweight: Buffer?, dbias: Buffer?, rows: Int, cols: Int) {
        base.layerNormBackward(x, weight: weight, mean: mean, rstd: rstd, dy, dx: dx, dweight: dweight, dbias: dbias, rows: rows, cols: cols)
    }

    func softmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) { base.softmaxForward(x, y, rows: rows, cols: cols) }
    func softmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) { base.softmaxBackward(y, dy, dx, rows: rows, cols: cols) }
    func logSoftmaxForward(_ x: Buffer, _ y: Buffer, rows: Int, cols: Int) { base.logSoftmaxForward(x, y, rows: rows, cols: cols) }
    func logSoftmaxBackward(_ y: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, cols: Int) { base.logSoftmaxBackward(y, dy, dx, rows: rows, cols: cols) }

    func indexSelect(_ x: Buffer, indices: Buffer, _ y: Buffer, outer: Int, size: Int, inner: Int, count: Int) {
        base.indexSelect(x, indices: indices, y, outer: outer, size: size, inner: inner, count: count)
    }
    func indexAdd(_ dy: Buffer, indices: Buffer, _ dx: Buffer, outer: Int, size: Int, inner: Int, count: Int) {
        base.indexAdd(dy, indices: indices, dx, outer: outer, size: size, inner: inner, count: count)
    }
    func select(_ condition: Buffer, _ conditionStrides: [Int], _ a: Buffer, _ aStrides: [Int], _ b: Buffer, _ bStrides: [Int],
                _ out: Buffer, shape: [Int]) {
        base.select(condition, conditionStrides, a, aStrides, b, bStrides, out, shape: shape)
    }
    func compare(_ op: CompareOp, _ x: Buffer, scalar: Double, _ out: Buffer, count: Int) { base.compare(op, x, scalar: scalar, out, count: count) }

    func im2col(x: Buffer, cols: Buffer, batch: Int, geometry: ConvGeometry) { base.im2col(x: x, cols: cols, batch: batch, geometry: geometry) }
    func col2im(cols: Buffer, dx: Buffer, batch: Int, geometry: ConvGeometry) { base.col2im(cols: cols, dx: dx, batch: batch, geometry: geometry) }
    func maxPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry) { base.maxPool2d(x: x, y: y, planes: planes, geometry: geometry) }
    func avgPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry, countIncludePad: Bool) {
        base.avgPool2d(x: x, y: y, planes: planes, geometry: geometry, countIncludePad: countIncludePad)
    }
    func upsampleNearest2x(x: Buffer, y: Buffer, planes: Int, height: Int, width: Int) {
        base.upsampleNearest2x(x: x, y: y, planes: planes, height: height, width: width)
    }
    func upsampleNearest2xBackward(dy: Buffer, dx: Buffer, planes: Int, height: Int, width: Int) {
        base.upsampleNearest2xBackward(dy: dy, dx: dx, planes: planes, height: height, width: width)
    }
    func resample(_ filter: ResizeFilter, x: Buffer, y: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int) {
        base.resample(filter, x: x, y: y, outer: outer, inSize: inSize, outSize: outSize, inner: inner)
    }
    func resampleBackward(_ filter: ResizeFilter, dy: Buffer, dx: Buffer, outer: Int, inSize: Int, outSize: Int, inner: Int) {
        base.resampleBackward(filter, dy: dy, dx: dx, outer: outer, inSize: inSize, outSize: outSize, inner: inner)
    }

    func attentionForward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer?, out: Buffer, shape: AttentionShape, scale: Double) {
        base.attentionForward(q: q, k: k, v: v, probs: probs, out: out, shape: shape, scale: scale)
    }
    func attentionBackward(q: Buffer, k: Buffer, v: Buffer, probs: Buffer, dOut: Buffer, dq: Buffer?, dk: Buffer?, dv: Buffer?,
                           shape: AttentionShape, scale: Double) {
        base.attentionBackward(q: q, k: k, v: v, probs: probs, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: shape, scale: scale)
    }
    func attentionRecomputesProbabilities(_ shape: AttentionShape) -> Bool { base.attentionRecomputesProbabilities(shape) }
    func attentionRoundsOperands(_ shape: AttentionShape, precision: ComputePrecision) -> Bool {
        base.attentionRoundsOperands(shape, precision: precision)
    }
    func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape: AttentionShape, scale: Double) {
        base.attentionForwardLSE(q: q, k: k, v: v, out: out, lse: lse, shape: shape, scale: scale)
    }
    func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                              dq: Buffer?, dk: Buffer?, dv: Buffer?, shape: AttentionShape, scale: Double) {
        base.attentionBackwardLSE(q: q, k: k, v: v, out: out, lse: lse, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: shape, scale: scale)
    }
    func softmaxMatmulForward(logits: Buffer, v: Buffer, probs: Buffer, out: Buffer, shape: AttentionShape) {
        base.softmaxMatmulForward(logits: logits, v: v, probs: probs, out: out, shape: shape)
    }
    func softmaxMatmulBackward(probs: Buffer, v: Buffer, dOut: Buffer, dLogits: Buffer?, dv: Buffer?, shape: AttentionShape) {
        base.softmaxMatmulBackward(probs: probs, v: v, dOut: dOut, dLogits: dLogits, dv: dv, shape: shape)
    }

    func embeddingForward(weight: Buffer, indices: Buffer, out: Buffer, rows: Int, dim: Int, count: Int) {
        base.embeddingForward(weight: weight, indices: indices, out: out, rows: rows, dim: dim, count: count)
    }
    func embeddingBackward(dy: Buffer, indices: Buffer, dWeight: Buffer, rows: Int, dim: Int, count: Int) {
        base.embeddingBackward(dy: dy, indices: indices, dWeight: dWeight, rows: rows, dim: dim, count: count)
    }

    func crossEntropyForward(_ logits: Buffer, targets: Buffer, loss: Buffer, rows: Int, classes: Int) {
        base.crossEntropyForward(logits, targets: targets, loss: loss, rows: rows, classes: classes)
    }
    func crossEntropyBackward(_ logits: Buffer, targets: Buffer, _ dy: Buffer, _ dx: Buffer, rows: Int, classes: Int) {
        base.crossEntropyBackward(logits, targets: targets, dy, dx, rows: rows, classes: classes)
    }

    func adamw(param: Buffer, grad: Buffer, m: Buffer, v: Buffer, count: Int, lr: Double, beta1: Double, beta2: Double,
               eps: Double, weightDecay: Double, step: Int) {
        base.adamw(param: param, grad: grad, m: m, v: v, count: count, lr: lr, beta1: beta1, beta2: beta2, eps: eps,
                   weightDecay: weightDecay, step: step)
    }
    func emaUpdate(ema: Buffer, param: Buffer, count: Int, decay: Double) { base.emaUpdate(ema: ema, param: param, count: count, decay: decay) }
    func sumOfSquares(_ x: Buffer, count: Int) -> Double { base.sumOfSquares(x, count: count) }
    func scale(_ x: Buffer, count: Int, by: Double) { base.scale(x, count: count, by: by) }

    func modulatedLayerNormForward(_ x: Buffer, shift: Buffer, scale: Buffer, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                   batch: Int, tokens: Int, cols: Int, eps: Double, roundedScale: Buffer?) {
        base.modulatedLayerNormForward(x, shift: shift, scale: scale, y, mean: mean, rstd: rstd, batch: batch, tokens: tokens,
                                       cols: cols, eps: eps, roundedScale: roundedScale)
    }
    func modulatedLayerNormBackward(_ x: Buffer, scale: Buffer, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                    residual: Buffer?, dshift: Buffer?, dscale: Buffer?, batch: Int, tokens: Int, cols: Int,
                                    dscaleLow: DType?) {
        base.modulatedLayerNormBackward(x, scale: scale, mean: mean, rstd: rstd, dy, dx: dx, residual: residual, dshift: dshift, dscale: dscale,
                                        batch: batch, tokens: tokens, cols: cols, dscaleLow: dscaleLow)
    }
    func gatedResidualForward(_ x: Buffer, gate: Buffer, _ y: Buffer, _ out: Buffer, batch: Int, tokens: Int, cols: Int, low: DType?) {
        base.gatedResidualForward(x, gate: gate, y, out, batch: batch, tokens: tokens, cols: cols, low: low)
    }
    func gatedResidualBackward(gate: Buffer, _ y: Buffer, _ dout: Buffer, dy: Buffer?, dgate: Buffer?, batch: Int, tokens: Int, cols: Int, low: DType?) {
        base.gatedResidualBackward(gate: gate, y, dout, dy: dy, dgate: dgate, batch: batch, tokens: tokens, cols: cols, low: low)
    }
    func biasGeluTanhForward(_ x: Buffer, bias: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        base.biasGeluTanhForward(x, bias: bias, y, rows: rows, cols: cols)
    }
    func biasGeluTanhBackward(_ x: Buffer, bias: Buffer, _ dy: Buffer, dx: Buffer, dbias: Buffer?, rows: Int, cols: Int) {
        base.biasGeluTanhBackward(x, bias: bias, dy, dx: dx, dbias: dbias, rows: rows, cols: cols)
    }
}

/// Wrong in one kernel only: the nearest-neighbour upsample writes its first output element 1e-3 too high.
final class WrongUpsampleBackend: ForwardingBackend {
    override var name: String { "wrong-upsample" }
    override func upsampleNearest2x(x: Buffer, y: Buffer, planes: Int, height: Int, width: Int) {
        super.upsampleNearest2x(x: x, y: y, planes: planes, height: height, width: width)
        if planes * height * width > 0 { y.pointer(Float.self)[0] += 1e-3 }
    }
}

/// Wrong in the LayerNorm forward only (plain and the fused adaLN one): it normalises with the unbiased variance
/// (divisor cols − 1, the classic slip), i.e. x̂ is √(cols / (cols − 1)) too large (0.8 % at the tiny SiT's 64
/// features).
final class WrongLayerNormBackend: ForwardingBackend {
    override var name: String { "wrong-layernorm" }
    override func layerNormForward(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                   rows: Int, cols: Int, eps: Double) {
        super.layerNormForward(x, weight: weight, bias: bias, y, mean: mean, rstd: rstd, rows: rows, cols: cols, eps: eps)
        guard weight == nil && bias == nil && cols > 1 else { return }     // non-affine: y = x̂ exactly
        let p = y.pointer(Float.self), factor = Float((Double(cols) / Double(cols - 1)).squareRoot())
        for i in 0..<(rows * cols) { p[i] *= factor }
    }
    /// The same slip in the fused adaLN LayerNorm (SiT's blocks normalise through it): x̂ too large by the factor.
    override func modulatedLayerNormForward(_ x: Buffer, shift: Buffer, scale: Buffer, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                            batch: Int, tokens: Int, cols: Int, eps: Double, roundedScale: Buffer?) {
        super.modulatedLayerNormForward(x, shift: shift, scale: scale, y, mean: mean, rstd: rstd, batch: batch, tokens: tokens,
                                        cols: cols, eps: eps, roundedScale: roundedScale)
        guard cols > 1 else { return }
        let p = y.pointer(Float.self), sh = shift.pointer(Float.self), factor = Float((Double(cols) / Double(cols - 1)).squareRoot())
        for r in 0..<(batch * tokens) {
            let s = sh + (r / tokens) * cols
            for j in 0..<cols { p[r * cols + j] = (p[r * cols + j] - s[j]) * factor + s[j] }
        }
    }
}

/// A correct backend whose GEMMs round differently: every output element moves by a pseudo-random ±2 ulp, as
/// a GPU's different summation order would. The training comparison's bound must hold under it.
final class NoisyGemmBackend: ForwardingBackend {
    override var name: String { "noisy-gemm" }
    private var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    override func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double, a: Buffer, lda: Int, strideA: Int,
                       b: Buffer, ldb: Int, strideB: Int, beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        super.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, strideA: strideA,
                   b: b, ldb: ldb, strideB: strideB, beta: beta, c: c, ldc: ldc, strideC: strideC, batch: batch)
        guard c.dtype == .float32 else { return }
        let p = c.pointer(Float.self)
        for i in 0..<batch {
            for r in 0..<m {
                for col in 0..<n {
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    let ulps = Int(state >> 61) - 4                          // −4…3, then clipped to ±2
                    let e = max(-2, min(2, ulps))
                    let j = i * strideC + r * ldc + col
                    var v = p[j]
                    for _ in 0..<abs(e) { v = e > 0 ? v.nextUp : v.nextDown }
                    p[j] = v
                }
            }
        }
    }
}
