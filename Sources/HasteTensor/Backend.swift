/// A backend is a narrow set of kernels (STYLE §2.3): buffers, counts and scalar parameters; no shape
/// checks, no autograd, no allocation policy. Each op family declares its kernels in its own protocol
/// (next to the op, in `Ops/`), and `Backend` is their union. The CPU backend is the reference; every other
/// backend is tested against it. No default implementations: a new backend must provide every kernel.
public protocol Backend: AnyObject, MemoryKernels, RandomKernels, ElementwiseKernels, MatmulKernels,
    ReduceKernels, NormKernels, SoftmaxKernels, MovementKernels, ConvKernels, PoolKernels, ResizeKernels,
    AttentionKernels, EmbeddingKernels, LossKernels, OptimizerKernels, FusedKernels
{
    /// Short name for messages and `haste doctor` ("cpu", "cuda").
    var name: String { get }
    /// What the backend chose by timing on its device so far, in the order it chose ("tuned …: each way's time → the
    /// one kept": CUDA's `LaunchTuner`), for logs; none on the CPU.
    var tuningDecisions: [String] { get }
}

extension Backend {
    public var tuningDecisions: [String] { [] }
}

/// Memory: allocation, copies, fills and dtype conversion.
public protocol MemoryKernels: AnyObject {
    func allocate(byteCount: Int) -> UnsafeMutableRawPointer
    func deallocate(_ address: UnsafeMutableRawPointer, byteCount: Int)
    /// Copies `byteCount` bytes between two buffers of this backend.
    func copy(from src: Buffer, to dst: Buffer, byteCount: Int)
    func copyFromHost(_ host: UnsafeRawPointer, to dst: Buffer, byteCount: Int)
    func copyToHost(_ src: Buffer, _ host: UnsafeMutableRawPointer, byteCount: Int)
    /// dst[i] = value for i < count, in dst's dtype.
    func fill(_ dst: Buffer, count: Int, value: Double)
    /// Copies the `shape`-sized view of src (element strides `srcStrides` from src.offset) into the view of dst
    /// with `dstStrides`. Same dtype. Gathers (contiguous dst) and scatters (slices, cat) alike.
    func stridedCopy(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int])
    /// Converts `count` elements from src.dtype to dst.dtype (float→int truncates toward zero, like torch).
    func cast(from src: Buffer, to dst: Buffer, count: Int)
    /// y = x cast to `low` (bfloat16 or float16) and back to float32, in one pass: the values of a cast to a
    /// `low` buffer and a cast back, bit for bit. With `shift` ≠ 0, y = float32(low(x + shift)) − shift, each step
    /// rounded as the composite `(x + shift).roundedValues(low) − shift` rounds it (a float32 add, the round trip,
    /// a float32 subtract): Autocast's bf16 1 + scale of adaLN's modulation (shift 1). x, y float32, `count`
    /// elements (y may be x).
    func roundThrough(_ x: Buffer, _ y: Buffer, low: DType, count: Int, shift: Float)
    /// `stridedCopy` with a cast between float32 and bfloat16 (src and dst of those two dtypes, one of each; to
    /// bfloat16 rounds to nearest even as `cast` does): Autocast's head splits and merges straight from and into
    /// bf16 GEMM operands. Returns false where the backend has no such kernel for these views (the default); the
    /// caller then copies and casts in separate passes (`Tensor.stridedCast`, the same values).
    func stridedCast(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) -> Bool
    /// out = low(float32(a) + float32(b)), `count` contiguous elements of one low dtype (bfloat16): torch's sum of two
    /// bf16 tensors, the float32 sum rounded once (the autograd walk's sum of two bf16 gradient terms, Graph.swift
    /// `gradientSum`). Returns false where the backend has no such kernel (the default).
    func addLow(_ a: Buffer, _ b: Buffer, _ out: Buffer, count: Int) -> Bool
    /// `cast` of each (bfloat16 → float32) pair, as few launches as the backend can: the weight and bias gradients a
    /// bf16 node writes into their arena slots at once (`bf16Carriers`; a SiT block's MLP writes four). The same
    /// values (widening is exact). Returns false where the backend has no such kernel (the default); the caller then
    /// casts each pair.
    func widenBF16(_ pairs: [(from: Buffer, to: Buffer, count: Int)]) -> Bool
    /// out (rows, k·width) = the k = pieces.count pieces side by side, each a contiguous (rows, width) float32 buffer
    /// (nil: zeros), in out's dtype (float32, or bfloat16 rounded to nearest even as `cast` rounds): the gradient of an
    /// adaLN modulation from its pieces' (`Tensor.columnPieces`). Returns false where the backend has no such kernel
    /// (the default); the caller then copies each piece (and casts).
    func gatherColumns(_ pieces: [Buffer?], rows: Int, width: Int, into out: Buffer) -> Bool
    /// out = float32(a) + float32(b), `count` contiguous elements, a and b each float32 or bfloat16 (at least one bf16),
    /// out float32: the walk's sum of two gradient terms of a float32 tensor where a bf16 GEMM returned one as it is
    /// (Graph.swift `gradientSum`), without widening it first. Returns false where the backend has no such kernel (the
    /// default); the caller widens, then adds (the same values).
    func addWidened(_ a: Buffer, _ b: Buffer, _ out: Buffer, count: Int) -> Bool
}

extension MemoryKernels {
    public func stridedCast(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) -> Bool { false }
    public func addLow(_ a: Buffer, _ b: Buffer, _ out: Buffer, count: Int) -> Bool { false }
    public func widenBF16(_ pairs: [(from: Buffer, to: Buffer, count: Int)]) -> Bool { false }
    public func gatherColumns(_ pieces: [Buffer?], rows: Int, width: Int, into out: Buffer) -> Bool { false }
    public func addWidened(_ a: Buffer, _ b: Buffer, _ out: Buffer, count: Int) -> Bool { false }
}
