import COpenBLAS

/// Matrix products. torch: `a @ b` (`torch.matmul`), `F.linear(x, w, b)`.
public protocol MatmulKernels: AnyObject {
    /// Row-major C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i] for i < batch, where op transposes when asked;
    /// A[i] starts at a.offset + i·strideA (elements), likewise B and C. m×k · k×n → m×n.
    func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
              a: Buffer, lda: Int, strideA: Int, b: Buffer, ldb: Int, strideB: Int,
              beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int)
    /// Two independent products (disjoint outputs, neither reading the other's), in either order or at once, each
    /// exactly as `gemm` computes it: the CPU runs a pair of large float32 products on halves of its threads (a
    /// linear layer's dX and dW), which keeps each product's packed operands in one core's caches.
    func gemmPair(_ first: GemmCall, _ second: GemmCall)
    /// A linear layer's forward with its bias, y[r, :] = bias + x[r, :]·Wᵀ (x rows × inF, weight outF × inF, bias
    /// outF, y rows × outF; contiguous, one dtype): bit for bit the bias copied into every row of y and then `gemm`
    /// with beta 1 (`linearWithBiasComposite`, the default). The CPU's AVX-512 GEMM adds the bias as it stores its
    /// first K block instead: no prefill pass over y, no read of it.
    func linearWithBias(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer, y: Buffer)
    /// A linear layer with GELU(tanh) after its bias, in one GEMM (cuBLASLt's GELU epilogue on CUDA): y =
    /// geluTanh(u), u = x·Wᵀ + bias in float32 (not u rounded first, as the linear-then-activation composite reads
    /// it), and where `preActivation` is given, u rounded into it (what the backward's `geluTanhInputGradient`
    /// reads). Shapes as `linearWithBias`. False, with nothing written, where the backend has no such GEMM.
    func linearBiasGeluTanh(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer,
                            preActivation: Buffer?, y: Buffer) -> Bool
    /// The gradient at a GELU(tanh)'s input h [rows, hidden] from the next linear layer's output gradient dy
    /// [rows, outF] and weight [outF, hidden], in one GEMM: dh = (dy·W)·geluTanh′(h), dy·W in float32 (not rounded
    /// first), and where `biasGradient` is given, Σ_rows dh over the unrounded dh, rounded (the bias gradient of
    /// the linear layer before the GELU). False, with nothing written, where the backend has no such GEMM.
    func geluTanhInputGradient(rows: Int, outF: Int, hidden: Int, dy: Buffer, weight: Buffer, preActivation: Buffer,
                               dh: Buffer, biasGradient: Buffer?) -> Bool
    /// A linear layer's weight and bias gradients from one GEMM: dW = dyᵀ·x [outF, inF] and db = Σ_rows dy [outF]
    /// (float32 sums, rounded to db's dtype). False, with nothing written, where the backend has no such GEMM.
    func linearWeightAndBiasGradients(rows: Int, inF: Int, outF: Int, dy: Buffer, x: Buffer, dw: Buffer, db: Buffer) -> Bool
    /// Which of those three this backend may run (it may still turn a problem down): callers allocate their outputs
    /// only then.
    var gemmEpilogues: GemmEpilogueSupport { get }
}

/// The elementwise steps a backend's GEMMs may take in their epilogues (`MatmulKernels.gemmEpilogues`).
public struct GemmEpilogueSupport: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// `linearBiasGeluTanh`, `geluTanhInputGradient`.
    public static let geluTanh = GemmEpilogueSupport(rawValue: 1)
    /// `linearWeightAndBiasGradients`.
    public static let biasGradient = GemmEpilogueSupport(rawValue: 2)
}

extension MatmulKernels {
    public func linearBiasGeluTanh(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer,
                                   preActivation: Buffer?, y: Buffer) -> Bool { false }
    public func geluTanhInputGradient(rows: Int, outF: Int, hidden: Int, dy: Buffer, weight: Buffer, preActivation: Buffer,
                                      dh: Buffer, biasGradient: Buffer?) -> Bool { false }
    public func linearWeightAndBiasGradients(rows: Int, inF: Int, outF: Int, dy: Buffer, x: Buffer, dw: Buffer, db: Buffer) -> Bool { false }
    public var gemmEpilogues: GemmEpilogueSupport { [] }
}

extension MatmulKernels where Self: MemoryKernels {
    public func linearWithBias(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer, y: Buffer) {
        linearWithBiasComposite(rows: rows, inF: inF, outF: outF, x: x, weight: weight, bias: bias, y: y)
    }

    /// The bias copied into every row of y (rows of y start as the bias), then the GEMM accumulates (beta = 1).
    public func linearWithBiasComposite(rows: Int, inF: Int, outF: Int, x: Buffer, weight: Buffer, bias: Buffer, y: Buffer) {
        stridedCopy(from: bias, srcStrides: [0, 1], to: y, dstStrides: [outF, 1], shape: [rows, outF])
        gemm(transA: false, transB: true, m: rows, n: outF, k: inF, alpha: 1, a: x, lda: Swift.max(inF, 1), strideA: 0,
             b: weight, ldb: Swift.max(inF, 1), strideB: 0, beta: 1, c: y, ldc: Swift.max(outF, 1), strideC: 0, batch: 1)
    }
}

/// The arguments of one `gemm` call.
public struct GemmCall {
    public var transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double
    public var a: Buffer, lda: Int, strideA: Int, b: Buffer, ldb: Int, strideB: Int
    public var beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int

    public init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double, a: Buffer, lda: Int, strideA: Int,
                b: Buffer, ldb: Int, strideB: Int, beta: Double, c: Buffer, ldc: Int, strideC: Int, batch: Int) {
        self.transA = transA; self.transB = transB; self.m = m; self.n = n; self.k = k; self.alpha = alpha
        self.a = a; self.lda = lda; self.strideA = strideA; self.b = b; self.ldb = ldb; self.strideB = strideB
        self.beta = beta; self.c = c; self.ldc = ldc; self.strideC = strideC; self.batch = batch
    }
}

extension MatmulKernels {
    public func gemm(_ g: GemmCall) {
        gemm(transA: g.transA, transB: g.transB, m: g.m, n: g.n, k: g.k, alpha: g.alpha, a: g.a, lda: g.lda,
             strideA: g.strideA, b: g.b, ldb: g.ldb, strideB: g.strideB, beta: g.beta, c: g.c, ldc: g.ldc,
             strideC: g.strideC, batch: g.batch)
    }

    /// One after the other (backends without a concurrent pair).
    public func gemmPair(_ first: GemmCall, _ second: GemmCall) {
        gemm(first)
        gemm(second)
    }
}

/// A matrix operand as BLAS sees it: no copy when the tensor or its last-two-axes transpose is contiguous.
struct MatrixOperand {
    let tensor: Tensor      // the storage owner, contiguous in `trans` layout
    let trans: Bool
    let ld: Int
    init(_ x: Tensor) {
        let r = x.shape[x.rank - 2], c = x.shape[x.rank - 1]
        if x.isContiguous {
            tensor = x; trans = false; ld = Swift.max(c, 1)
        } else if x.transposed(-1, -2).detached().isContiguous {
            tensor = x; trans = true; ld = Swift.max(r, 1)
        } else {
            tensor = x.contiguous(); trans = false; ld = Swift.max(c, 1)
        }
    }
    var buffer: Buffer { Buffer(storage: tensor.storage, offset: tensor.offset, dtype: tensor.dtype) }
}

extension Tensor {
    /// torch: `torch.matmul(a, b)` for rank ≥ 2 operands with broadcast batch axes.
    public func matmul(_ other: Tensor) -> Tensor {
        if let low = Autocast.lowering(dtype) {
            return autocastGemm(low, [self, other], { $0[0]!.matmul($0[1]!) },
                                backward: { BF16MatmulBackward(a: self, b: other, an: $0[0]!, bn: $0[1]!) })
        }
        return matmul(other, into: dtype)
    }

    /// `matmul` with its output in `outDType`: the operands' dtype, or float32 for bfloat16 operands (the unrounded
    /// float32 sums that BF16MatmulBackward reduces over broadcast batch axes before rounding once).
    func matmul(_ other: Tensor, into outDType: DType) -> Tensor {
        require(rank >= 2 && other.rank >= 2 && shape[rank - 1] == other.shape[other.rank - 2],
                     "matmul: \(shape) × \(other.shape): inner dimensions differ (or rank < 2)")
        require(dtype == other.dtype && Tensor.gemmDType(dtype, [self, other], "matmul"), "matmul: dtypes \(dtype) and \(other.dtype)")
        require(device == other.device, "matmul: operands on \(device) and \(other.device)")
        require(outDType == dtype || (dtype == .bfloat16 && outDType == .float32), "matmul: \(dtype) operands into \(outDType)")
        let m = shape[rank - 2], k = shape[rank - 1], n = other.shape[other.rank - 1]
        guard let batchShape = broadcastShape(Array(shape.dropLast(2)), Array(other.shape.dropLast(2))) else {
            fatalError("matmul: batch axes of \(shape) and \(other.shape) do not broadcast")
        }
        let batch = batchShape.reduce(1, *)
        let out = Tensor.empty(batchShape + [m, n], dtype: outDType, device: device)
        // A 2-D right operand folds a contiguous left batch into rows: one GEMM.
        if other.rank == 2 && isContiguous {
            let a = MatrixOperand(self.reshaped([batch * m, k]).detached()), b = MatrixOperand(other)
            Tensor.gemm(a, b, m: batch * m, n: n, k: k, out: out, batch: 1)
        } else {
            let a = MatrixOperand(expandedBatch(batchShape)), b = MatrixOperand(other.expandedBatch(batchShape))
            Tensor.gemm(a, b, m: m, n: n, k: k, out: out, batch: batch)
        }
        return out.recorded(MatmulBackward(a: self, b: other))
    }

    /// This tensor with batch axes broadcast to `batchShape` (copied only when broadcasting is needed).
    func expandedBatch(_ batchShape: [Int]) -> Tensor {
        let target = batchShape + shape.suffix(2)
        return target == shape ? self : expanded(target).contiguous()
    }

    /// float32/float64, or bfloat16 (bf16 × bf16 → bf16, float32 accumulation: cuBLAS GemmEx on CUDA, widened sgemm
    /// on the CPU) on operands with no gradient to record: differentiable bf16 GEMMs go through `Autocast`.
    static func gemmDType(_ dtype: DType, _ operands: [Tensor?], _ op: String) -> Bool {
        if dtype.isComputeFloat { return true }
        guard dtype == .bfloat16 else { return false }
        require(!GradMode.isEnabled || !operands.contains { $0?.isTracked == true },
                "\(op): bfloat16 operands that require grad (differentiate in float32 under Autocast.run(.bfloat16) instead)")
        return true
    }

    static func gemm(_ a: MatrixOperand, _ b: MatrixOperand, m: Int, n: Int, k: Int, out: Tensor, batch: Int,
                     alpha: Double = 1, beta: Double = 0) {
        out.backend.gemm(transA: a.trans, transB: b.trans, m: m, n: n, k: k, alpha: alpha,
                         a: a.buffer, lda: a.ld, strideA: a.tensor.rank == 2 ? 0 : m * k,
                         b: b.buffer, ldb: b.ld, strideB: b.tensor.rank == 2 ? 0 : k * n,
                         beta: beta, c: out.buffer, ldc: Swift.max(n, 1), strideC: m * n, batch: batch)
    }

    /// torch: `F.linear(x, weight, bias)` = x·weightᵀ + bias; x [..., in], weight [out, in], bias [out].
    /// Under `Autocast` (Ops/Precision.swift) operands, output and gradients are rounded to bf16/fp16.
    public func linear(_ weight: Tensor, _ bias: Tensor? = nil) -> Tensor {
        if let low = Autocast.lowering(dtype) {
            return autocastGemm(low, [self, weight, bias], { $0[0]!.linear($0[1]!, $0[2]) },
                                backward: { BF16LinearBackward(x: self, weight: weight, bias: bias, xn: $0[0]!, wn: $0[1]!) })
        }
        require(weight.rank == 2 && rank >= 1 && shape[rank - 1] == weight.shape[1],
                     "linear: input \(shape) with weight \(weight.shape) (expected [..., \(weight.rank == 2 ? weight.shape[1] : -1)])")
        require(bias == nil || bias!.shape == [weight.shape[0]], "linear: bias \(bias!.shape) for weight \(weight.shape)")
        require(dtype == weight.dtype && Tensor.gemmDType(dtype, [self, weight, bias], "linear") && (dtype != .bfloat16 || bias == nil || bias!.dtype == dtype),
                "linear: dtypes \(dtype), \(weight.dtype)\(bias.map { ", \($0.dtype)" } ?? "")")
        require(device == weight.device && (bias == nil || bias!.device == device),
                "linear: input on \(device), weight on \(weight.device)\(bias.map { ", bias on \($0.device)" } ?? "")")
        let x = contiguous(), w = weight.contiguous()
        let rows = count / Swift.max(shape[rank - 1], 1), inF = weight.shape[1], outF = weight.shape[0]
        let y = Tensor.empty(Array(shape.dropLast()) + [outF], dtype: dtype, device: device)
        if let bias {
            backend.linearWithBias(rows: rows, inF: inF, outF: outF, x: x.buffer, weight: w.buffer, bias: bias.contiguous().buffer,
                                   y: y.buffer)
        } else {
            backend.gemm(transA: false, transB: true, m: rows, n: outF, k: inF, alpha: 1,
                         a: x.buffer, lda: Swift.max(inF, 1), strideA: 0, b: w.buffer, ldb: Swift.max(inF, 1), strideB: 0,
                         beta: 0, c: y.buffer, ldc: Swift.max(outF, 1), strideC: 0, batch: 1)
        }
        return y.recorded(LinearBackward(x: x, weight: w, bias: bias))
    }
}

/// dA = dY·Bᵀ, dB = Aᵀ·dY, reduced over broadcast batch axes.
struct MatmulBackward: Backward {
    let a: Tensor, b: Tensor
    var inputs: [Tensor] { [a, b] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let da = a.isTracked ? dy.matmul(b.detached().transposed(-1, -2)).unbroadcast(to: a.shape) : nil
        let db = b.isTracked ? a.detached().transposed(-1, -2).matmul(dy).unbroadcast(to: b.shape) : nil
        return [da, db]
    }
}

/// Autocast bf16 matmul on CUDA (`autocastGemm`): dA = bf16(d̃Y·B̃ᵀ), dB = bf16(Ãᵀ·d̃Y) (~ = rounded to bf16) as bf16
/// GEMMs, each with a bf16 output, or with float32 sums that are reduced over broadcast batch axes and then rounded.
struct BF16MatmulBackward: Backward {
    let a: Tensor, b: Tensor, an: Tensor, bn: Tensor
    var inputs: [Tensor] { [a, b] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        bf16Gradients(dy) { dyn in
            func product(_ l: Tensor, _ r: Tensor, for shape: [Int]) -> Tensor {
                let full = Array(dyn.shape.dropLast(2)) + [l.shape[l.rank - 2], r.shape[r.rank - 1]]
                return full == shape ? l.matmul(r) : l.matmul(r, into: .float32).unbroadcast(to: shape)
            }
            return [a.isTracked ? product(dyn, bn.transposed(-1, -2), for: a.shape) : nil,
                    b.isTracked ? product(an.transposed(-1, -2), dyn, for: b.shape) : nil]
        }
    }
}

/// Autocast bf16 linear on CUDA (`autocastGemm`): dx = bf16(d̃y·w̃), dw = bf16(d̃yᵀ·x̃), db = bf16(Σ d̃y) (~ = rounded
/// to bf16), dx and dw as bf16 GEMMs; dw and db written into their arena slots where the walk offers them. It rounds
/// its incoming gradient first (`RoundsIncomingGradient`): a term already rounded (the adaLN modulation's pieces'
/// gradients, gathered in bf16: `Tensor.columnPieces`) comes as it is, without a float32 carrier and a cast.
struct BF16LinearBackward: InPlaceGradientBackward, RoundsIncomingGradient {
    let x: Tensor, weight: Tensor, bias: Tensor?, xn: Tensor, wn: Tensor
    var incomingLow: DType { .bfloat16 }
    var inputs: [Tensor] { bias.map { [x, weight, $0] } ?? [x, weight] }
    func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, into: inputs.map { _ in nil }) }

    func gradients(_ dy: Tensor, into: [Tensor?]) -> [Tensor?] {
        let outF = weight.shape[0], inF = weight.shape[1], rows = dy.count / Swift.max(outF, 1)
        let grads = bf16Gradients(dy, into: into) { dyn in
            let g = bf16LinearGradients(dyn.reshaped([rows, outF]), x: xn.reshaped([rows, inF]), w: wn, input: x.isTracked,
                                        weight: weight.isTracked, bias: bias?.isTracked == true)
            return [g.dx?.reshaped(x.shape), g.dw, g.db]
        }
        return bias == nil ? Array(grads.prefix(2)) : grads
    }
}

/// Saves x and weight (contiguous); dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy. dW and db go straight into their
/// parameter slots when the walk offers them (the same kernels, so the same values).
struct LinearBackward: InPlaceGradientBackward {
    let x: Tensor, weight: Tensor, bias: Tensor?
    var inputs: [Tensor] { bias.map { [x, weight, $0] } ?? [x, weight] }
    func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, into: inputs.map { _ in nil }) }

    func gradients(_ dy: Tensor, into: [Tensor?]) -> [Tensor?] {
        let inF = weight.shape[1], outF = weight.shape[0], rows = dy.count / Swift.max(outF, 1)
        let be = dy.backend
        func output(_ k: Int, like t: Tensor) -> Tensor { into[k] ?? Tensor.empty(t.shape, dtype: t.dtype, device: t.device) }
        var dx: Tensor? = nil, dw: Tensor? = nil, db: Tensor? = nil
        var calls: [GemmCall] = []
        if x.isTracked {
            let g = Tensor.empty(x.shape, dtype: x.dtype, device: x.device)
            calls.append(GemmCall(transA: false, transB: false, m: rows, n: inF, k: outF, alpha: 1, a: dy.buffer,
                                  lda: Swift.max(outF, 1), strideA: 0, b: weight.buffer, ldb: Swift.max(inF, 1), strideB: 0,
                                  beta: 0, c: g.buffer, ldc: Swift.max(inF, 1), strideC: 0, batch: 1))
            dx = g
        }
        if weight.isTracked {
            let g = output(1, like: weight)
            calls.append(GemmCall(transA: true, transB: false, m: outF, n: inF, k: rows, alpha: 1, a: dy.buffer,
                                  lda: Swift.max(outF, 1), strideA: 0, b: x.buffer, ldb: Swift.max(inF, 1), strideB: 0,
                                  beta: 0, c: g.buffer, ldc: Swift.max(inF, 1), strideC: 0, batch: 1))
            dw = g
        }
        if calls.count == 2 { be.gemmPair(calls[0], calls[1]) } else { calls.forEach { be.gemm($0) } }
        if let bias, bias.isTracked {
            let g = output(2, like: bias)
            be.reduceSum(dy.buffer, g.buffer, outer: 1, reduce: rows, inner: outF)
            db = g
        }
        return bias == nil ? [dx, dw] : [dx, dw, db]
    }
}
