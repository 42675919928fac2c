import CKernels

/// A frozen linear layer's weight [out, in] rewritten in place into the CPU GEMM's packed layout of op(B) = Wᵀ
/// (CKernels/sgemm.c: for each K block of haste_sgemm_kc_step(in) rows, NR-wide column panels), so that a forward
/// pass reads it straight into the micro-kernel instead of transposing and packing every weight on every call.
/// What it is for: the HASTE teacher (DINOv2, frozen, forward only), whose 86 M weights were packed again on
/// every training step (2.2% of a SiT-B/2 bs4 +align step on 2 threads, more of the SiT-S/2 rows, measured with
/// perf: the teacher's share of haste_sgemm_pack_b). In place: no second copy of the weights, so no more memory.
///
/// While packed the weight tensor's values are not W: only `Tensor.linear(packed:bias:)` may read it, and only
/// without a gradient to record; `unpack()` restores W bit for bit. The products give the bits of `linear(W, b)`
/// (the same kernel, K blocks and order: packing moves values, it adds none).
public final class PackedLinearWeight: @unchecked Sendable {
    public let weight: Tensor
    public let outFeatures: Int, inFeatures: Int
    public private(set) var isPacked = true

    /// Packs `weight` in place; nil where the CPU GEMM cannot (not float32 on the CPU, a CPU without AVX-512F or
    /// HASTE_CPU_KERNELS=portable, a view that is not contiguous, or out not a multiple of the panel width:
    /// HASTE_SGEMM_NR = 48, where the panels' padding would need more room than W has).
    public init?(_ weight: Tensor) {
        guard weight.rank == 2, weight.dtype == .float32, weight.device == .cpu, weight.isContiguous,
              CPUKernels.level == 2, AVX512Sgemm.available, !weight.requiresGrad else { return nil }
        let outF = weight.shape[0], inF = weight.shape[1], nr = Int(HASTE_SGEMM_NR)
        guard outF > 0, inF > 0, outF % nr == 0 else { return nil }
        (self.weight, outFeatures, inFeatures) = (weight, outF, inF)
        let w = weight.buffer.pointer(Float.self), count = outF * inF
        let copy = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { copy.deallocate() }
        copy.update(from: w, count: count)
        let step = haste_sgemm_kc_step(inF)
        for p0 in stride(from: 0, to: inF, by: step) {     // K block p0 at p0 · out: kc × out floats, panels of kc × NR
            haste_sgemm_pack_b(1, copy, inF, p0, Swift.min(step, inF - p0), 0, outF, w + p0 * outF)
        }
    }

    /// W back in its [out, in] layout, bit for bit; the weight is an ordinary tensor again.
    public func unpack() {
        guard isPacked else { return }
        let outF = outFeatures, inF = inFeatures, nr = Int(HASTE_SGEMM_NR), count = outF * inF
        let w = weight.buffer.pointer(Float.self)
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { packed.deallocate() }
        packed.update(from: w, count: count)
        let step = haste_sgemm_kc_step(inF)
        for p0 in stride(from: 0, to: inF, by: step) {
            let kc = Swift.min(step, inF - p0), block = packed + p0 * outF
            for j in 0..<outF {                            // W[j][p0 + p] = block[(j / NR) · kc · NR + p · NR + j % NR]
                let panel = block + (j / nr) * kc * nr + j % nr
                for p in 0..<kc { w[j * inF + p0 + p] = panel[p * nr] }
            }
        }
        isPacked = false
    }
}

extension Tensor {
    /// `linear(W, bias)` with W packed (`PackedLinearWeight`): the same bits, without packing W. Forward only: nothing
    /// to record (a frozen encoder's input, or under `noGrad`), and not under `Autocast` (its rounded copy of W needs W).
    public func linear(packed: PackedLinearWeight, bias: Tensor? = nil) -> Tensor {
        require(packed.isPacked, "linear(packed:): the weight \(packed.weight.shape) was unpacked")
        require(rank >= 1 && shape[rank - 1] == packed.inFeatures,
                "linear(packed:): input \(shape) with weight [\(packed.outFeatures), \(packed.inFeatures)]")
        require(!packed.weight.requiresGrad && !(GradMode.isEnabled && (isTracked || bias?.isTracked == true)),
                "linear(packed:): a packed weight serves forward passes without gradients (a frozen teacher); input \(shape) is tracked")
        require(Autocast.precision == .float32, "linear(packed:): not under autocast (\(Autocast.precision))")
        require(dtype == .float32 && device == .cpu && (bias == nil || (bias!.dtype == .float32 && bias!.device == .cpu)),
                "linear(packed:): float32 on the CPU, got \(dtype) on \(device)")
        require(bias == nil || bias!.shape == [packed.outFeatures], "linear(packed:): bias \(bias!.shape) for \(packed.outFeatures) outputs")
        let x = contiguous(), outF = packed.outFeatures, inF = packed.inFeatures
        let rows = count / Swift.max(inF, 1)
        let y = Tensor.empty(Array(shape.dropLast()) + [outF], dtype: .float32, device: device)
        guard rows > 0 else { return y }
        let b = bias?.contiguous()
        withExtendedLifetime((x, b, packed)) {
            AVX512Sgemm.runPrepacked(m: rows, n: outF, k: inF, a: x.buffer.pointer(Float.self),
                                     packed: packed.weight.buffer.pointer(Float.self),
                                     bias: b.map { UnsafePointer($0.buffer.pointer(Float.self)) }, c: y.buffer.pointer(Float.self))
        }
        return y
    }
}
