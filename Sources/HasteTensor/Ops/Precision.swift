/// Mixed precision (`--mixed-precision no|fp16|bf16|auto`), torch's `torch.autocast(dtype=...)` for the ops that
/// matter: inside `Autocast.run(.bfloat16) { … }` the matrix products — `linear`, `matmul`, `conv2d`,
/// `scaledDotProductAttention` and `attentionWithLogits` (q·kᵀ and softmax·v) — of float32 tensors
///
/// - take their operands rounded to bfloat16 (round to nearest even; fp16 likewise), bias included;
/// - multiply with float32 accumulation (bf16 → fp32 is exact, so a float32 GEMM on rounded operands is a
///   bf16 GEMM with fp32 accumulation; the CUDA backend hands real 2-byte operands to cuBLAS `GemmEx`);
/// - round their output to bfloat16, as autocast's bf16 output tensor does;
/// - in the backward, round the incoming gradient dy to bfloat16, compute the operand gradients with float32
///   accumulation and round each to bfloat16 (torch's gradient of a bf16 tensor is bf16); the gradient then
///   reaches the float32 master weight and is accumulated there in float32.
///
/// Everything else stays float32 on float32 values: LayerNorm/GroupNorm statistics, softmax statistics (inside
/// attention the probabilities are rounded to bf16 only before they multiply v, where `attentionWithLogits`
/// materialises them; the fused `scaledDotProductAttention` keeps them float32 inside the kernel, except CUDA's
/// bf16 tensor-core flash kernels, which round P and dS to bf16 right before their products), the losses
/// (L2 normalise, log-softmax, cosine), elementwise ops and every reduction. Activations are float32 tensors
/// that hold bf16-representable values ("float32 carriers"): every non-GEMM kernel stays float32, and the
/// rounding points are exactly torch's, in the backward too: where torch applies an elementwise op to bf16
/// tensors its gradient is a bf16 tensor, so the attention's softmax backward reads the rounded probabilities and
/// rounds its result, the logits' uses round their gradients before adding them, and adaLN's `gate·branch` rounds
/// each element of the gate's gradient before the sum over tokens (`gradientRounded(to:)`,
/// `lowPrecisionSoftmax`). Master weights, gradients, AdamW state and checkpoints stay float32.
/// fp16 (`.float16`) is the same with IEEE half: values beyond ±65504 round to ±inf, which is why fp16
/// training scales the loss (`LossScaler`, HasteNN Optim/LossScaler.swift).
public enum ComputePrecision: String, Sendable, CaseIterable {
    case float32, bfloat16, float16

    /// The storage type GEMM operands are rounded to (nil for float32).
    public var lowDType: DType? {
        switch self {
        case .float32: return nil
        case .bfloat16: return .bfloat16
        case .float16: return .float16
        }
    }

    /// The reference flag's spelling: `no`, `bf16`, `fp16` (`auto` needs a device: `init(flag:device:)`).
    public init?(flag: String) {
        switch flag {
        case "no": self = .float32
        case "bf16": self = .bfloat16
        case "fp16": self = .float16
        default: return nil
        }
    }

    /// The flag's spelling of this precision (`init(flag:)`'s inverse).
    public var flag: String {
        switch self {
        case .float32: return "no"
        case .bfloat16: return "bf16"
        case .float16: return "fp16"
        }
    }

    /// Every value `--mixed-precision` accepts, `auto` last.
    public static let flags = ["no", "fp16", "bf16", "auto"]

    /// `--mixed-precision` for work on `device`: `auto` is bf16 on CUDA and float32 (`no`) on the CPU, where
    /// rounding to bf16 only adds passes (issue #12's default); the other values as `init(flag:)`.
    public init?(flag: String, device: Device) {
        if flag == "auto" {
            if case .cuda = device { self = .bfloat16 } else { self = .float32 }
            return
        }
        guard let precision = ComputePrecision(flag: flag) else { return nil }
        self = precision
    }
}

/// The precision the matrix-product ops run in, task-local like `GradMode` (torch: `torch.autocast`).
public enum Autocast {
    @TaskLocal static var current = ComputePrecision.float32

    public static var precision: ComputePrecision { current }

    /// Runs `body` with the matrix products in `precision` (torch: `with torch.autocast(dtype=...)`).
    @discardableResult
    public static func run<R>(_ precision: ComputePrecision, _ body: () throws -> R) rethrows -> R {
        try $current.withValue(precision) { try body() }
    }

    /// The dtype a float32 op's operands round to now, or nil (float32 mode, or a float64 op: gradchecks).
    static func lowering(_ dtype: DType) -> DType? { dtype == .float32 ? current.lowDType : nil }

    /// Runs a low-precision composite's float32 core with autocast off (the core must not round again).
    static func core<R>(_ body: () -> R) -> R { $current.withValue(.float32) { body() } }
}

extension Tensor {
    /// This float32 tensor rounded to `low` (bfloat16/float16, round to nearest even) and widened back to
    /// float32; differentiable: the gradient is rounded the same way (torch: the gradient of a bf16 tensor is
    /// bf16). torch: `x.to(torch.bfloat16).float()` on the values, with the bf16 gradient.
    public func rounded(to low: DType) -> Tensor {
        require(dtype == .float32 && (low == .bfloat16 || low == .float16),
                "rounded(to:): \(dtype) → \(low) (need float32 → bfloat16 or float16)")
        return roundedValues(low).recorded(RoundBackward(x: self, low: low))
    }

    /// This op result as torch's autocast leaves an op of low-precision tensors (a bf16 + bf16 sum, a bf16 tensor
    /// times a Python float: a bf16 tensor): rounded to Autocast's low dtype with its gradient (`rounded(to:)`);
    /// unchanged in float32 mode and for a float64 tensor (`Autocast.lowering`).
    public func roundedUnderAutocast() -> Tensor {
        guard let low = Autocast.lowering(dtype) else { return self }
        return rounded(to: low)
    }

    /// The values rounded to `low` and widened back (`roundThrough`: the two casts' values in one pass, without
    /// the `low` tensor between them), no autograd; with `shift` ≠ 0, `(self + shift).roundedValues(low) − shift`
    /// in that one pass (the same bits).
    func roundedValues(_ low: DType, shiftedBy shift: Float = 0) -> Tensor {
        let x = contiguous()
        let y = Tensor.empty(shape, dtype: .float32, device: device)
        backend.roundThrough(x.buffer, y.buffer, low: low, count: count, shift: shift)
        return y
    }

    /// A real `low` copy (2 bytes an element) of this float32 tensor, contiguous, no autograd: the copy made for
    /// the step where `LowPrecisionCopies.current` has one (a parameter cast with its whole arena), else a cast; a
    /// `low` tensor itself (made contiguous).
    func narrowed(_ low: DType) -> Tensor {
        if dtype == low { return contiguous() }               // a gradient the walk handed over rounded already
        if let made = LowPrecisionCopies.current?.copy(of: self, low) { return made }
        let x = contiguous()
        let y = Tensor.empty(shape, dtype: low, device: device)
        backend.cast(from: x.buffer, to: y.buffer, count: count)
        return y
    }
}

extension Tensor {
    /// This tensor's values unchanged (a view: they are already `low` values, an autocast op's output), with the
    /// gradient of this use rounded to `low` on its own. torch: a bf16/fp16 tensor read by a float32 consumer (type
    /// promotion, `.float()`) or by an elementwise op of two low tensors gets a low gradient from that use, and
    /// the gradients of several uses are added as low tensors, each sum rounded.
    func gradientRounded(to low: DType) -> Tensor { detached().recorded(RoundBackward(x: self, low: low)) }

    /// torch's `x.softmax(-1)` of a bf16/fp16 tensor: float32 inside, the probabilities rounded to `low`; the
    /// backward reads those rounded probabilities P̃ and rounds its result: dx = round(P̃·(d̃y − Σ d̃y·P̃)).
    func lowPrecisionSoftmax(_ low: DType) -> Tensor {
        let p = Autocast.core { GradMode.withoutGrad { softmax(axis: -1) } }.roundedValues(low)
        return p.recorded(LowPrecisionSoftmaxBackward(x: self, p: p.detached(), low: low))
    }
}

struct LowPrecisionSoftmaxBackward: Backward {
    let x: Tensor, p: Tensor, low: DType
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        let g = dy.roundedValues(low), dx = Tensor.empty(like: p)
        let cols = p.shape[p.rank - 1], rows = cols == 0 ? 0 : p.count / cols
        if rows > 0 { p.backend.softmaxBackward(p.buffer, g.buffer, dx.buffer, rows: rows, cols: cols) }
        return [dx.roundedValues(low)]
    }
}

/// dx = dy rounded to the same low precision; a dy the walk hands over already rounded (a `low` tensor,
/// `RoundsIncomingGradient`) is passed on as it is.
struct RoundBackward: RoundsIncomingGradient {
    let x: Tensor, low: DType
    var inputs: [Tensor] { [x] }
    var incomingLow: DType { low }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy.dtype == low ? dy : dy.roundedValues(low)] }
}

/// Autocast's GEMM ops (`linear`, `matmul`, `conv2d`). On CUDA in bf16 the operands are cast to real bf16 tensors
/// and the op runs on them as bf16 GEMMs (cuBLAS `GemmStridedBatchedEx`: float32 accumulation, the bf16 output
/// rounded once) widened back to a float32 carrier; when autograd records, `backward(narrowed operands)` is the node
/// (BF16LinearBackward, BF16MatmulBackward, BF16Conv2dBackward: bf16 GEMMs too, through `bf16Gradients`). The values
/// are the composite's up to float32 summation order, without its float32 operand copies. Everything else (the CPU,
/// fp16) runs the composite.
func autocastGemm<B: Backward>(_ low: DType, _ operands: [Tensor?], _ op: ([Tensor?]) -> Tensor,
                               backward: ([Tensor?]) -> B) -> Tensor {
    guard case .cuda = operands[0]!.device, low == .bfloat16 else { return autocastComposite(low, operands, op) }
    let narrow = operands.map { $0?.narrowed(low) }
    let y = Autocast.core { op(narrow) }.to(.float32)
    // `recorded` also when nothing is recorded: a checkpoint's forward (grad off) must note the operands it reads,
    // the parameters among them, or its recompute finds tracked tensors the forward did not report.
    return y.recorded(backward(narrow))
}

/// The backward of an autocast bf16 GEMM op on CUDA: the incoming gradient becomes a real bf16 tensor d̃y (torch's
/// gradient of a bf16 output is bf16), `sums(d̃y)` computes the operand gradients from it with bf16 GEMMs, and each
/// is rounded to bf16 once and returned as a float32 carrier: a bfloat16 result (a GEMM's rounded output) is widened,
/// a float32 one (sums still to be reduced, as col2im or a broadcast batch axis does) is rounded here.
func bf16Gradients(_ dy: Tensor, into: [Tensor?]? = nil, _ sums: (Tensor) -> [Tensor?]) -> [Tensor?] {
    GradMode.withoutGrad { bf16Carriers(sums(dy.narrowed(.bfloat16)), into: into) }
}

/// The raw gradients of `bf16Gradients` for the walk: a bf16 tensor (a GEMM's rounded output) as it is, which the walk
/// reads as its float32 values (widened where a float32 tensor is needed: at the tensor's node, a leaf; added to another
/// term in one pass, `addWidened`; handed as it is to a node that rounds first), a float32 one (sums) rounded once.
/// Where `into` offers a gradient's arena slot (`InPlaceGradientBackward`: contiguous float32, its shape), the float32
/// carrier is written there (the same values) and the slot returned: no float32 temporary and no copy into the slot.
/// The bf16 ones widened into slots go in one call (`widenBF16`: one launch on CUDA for a node's weights and biases).
func bf16Carriers(_ raw: [Tensor?], into: [Tensor?]? = nil) -> [Tensor?] {
    var widen: [(from: Tensor, to: Tensor)] = []
    let out: [Tensor?] = raw.enumerated().map { i, g in
        guard let g else { return nil }
        if let into, i < into.count, let slot = into[i], slot.dtype == .float32, slot.count == g.count {
            let src = g.contiguous()
            if g.dtype == .bfloat16 { widen.append((src, slot)) }
            else { g.backend.roundThrough(src.buffer, slot.buffer, low: .bfloat16, count: g.count, shift: 0) }
            return slot
        }
        return g.dtype == .bfloat16 ? g : g.roundedValues(.bfloat16)     // bf16: as it is (the walk widens it where needed)
    }
    if let backend = widen.first?.from.backend,
       widen.count < 2 || !backend.widenBF16(widen.map { ($0.from.buffer, $0.to.buffer, $0.from.count) }) {
        for (src, slot) in widen { backend.cast(from: src.buffer, to: slot.buffer, count: src.count) }
    }
    return out
}

/// Σ of a bf16 gradient over every axis but `axis`, in float32 (a bias gradient, before `bf16Gradients` rounds it):
/// the trailing axes first, then the leading ones, as conv2d's float32 backward sums.
func bf16ChannelSums(_ dyn: Tensor, axis: Int) -> Tensor {
    // The first sum reads the bf16 values (`sumWidened`: the float32 sums of the widened values, bit for bit,
    // without a float32 copy of dy: 16 384 × 4608 floats for SiT-XL/2's fc1 bias at batch 64).
    if axis + 1 < dyn.rank {
        let s = dyn.sumWidened(axes: Array(axis + 1 ..< dyn.rank))
        return axis > 0 ? s.sum(axes: Array(0 ..< axis)) : s
    }
    return axis > 0 ? dyn.sumWidened(axes: Array(0 ..< axis)) : dyn.to(.float32)
}

/// The composite every autocast op is: round the operands, run the float32 op with autocast off, round the
/// output. `op` receives the rounded operands (nil stays nil).
func autocastComposite(_ low: DType, _ operands: [Tensor?], _ op: ([Tensor?]) -> Tensor) -> Tensor {
    let rounded = operands.map { $0?.rounded(to: low) }
    return Autocast.core { op(rounded) }.rounded(to: low)
}
