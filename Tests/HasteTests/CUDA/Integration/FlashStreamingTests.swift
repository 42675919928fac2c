import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The bf16 flash-attention kernels that stream their tiles with cp.async (`attention_flash_bf16_async_*`) give the
/// synchronous kernels' bits: output and dq, dk, dv, over partial tiles, several key and query tiles (so the stage
/// is refilled while in use), Dh ≠ Dv, and every register width. The emulator poisons a cp.async destination until
/// the issuing thread's wait, so a missing wait or barrier changes the result.
@Suite struct FlashStreamingTests {
    static func run(_ shape: (n: Int, h: Int, tq: Int, tk: Int, dh: Int, dv: Int)) -> [[UInt32]] {
        let (n, h, tq, tk, dh, dv) = shape
        let q = (Tensor.randn([n, h, tq, dh], seed: 1) * 1.7).to(EmulatedCUDA.device)
        let k = (Tensor.randn([n, h, tk, dh], seed: 2) * 1.7).to(EmulatedCUDA.device)
        let v = (Tensor.randn([n, h, tk, dv], seed: 3) * 1.7).to(EmulatedCUDA.device)
        let dout = Tensor.randn([n, h, tq, dv], seed: 4).to(EmulatedCUDA.device)
        for t in [q, k, v] { t.requiresGrad = true }
        let out = Autocast.run(.bfloat16) { Tensor.scaledDotProductAttention(q, k, v) }
        (out * dout).sum().backward()
        return [out, q.grad!, k.grad!, v.grad!].map { $0.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
    }

    @Test func streamedTilesGiveTheSynchronousKernelsBits() {
        let s = AttentionShape(batch: 2, queries: 130, keys: 150, headDim: 72, valueDim: 40)
        let words = CUDABackend.flashBF16SharedWords(s, staged: true)
        let inputs = [0, 1, 2].map { _ in Tensor.zeros([4096]).to(EmulatedCUDA.device).buffer }
        #expect(EmulatedCUDA.backend.flashBF16Async(s, words: words.dkdv, inputs), "the streaming kernels apply here")
        for shape in [(1, 2, 130, 150, 72, 40), (1, 1, 70, 129, 64, 64), (1, 1, 65, 66, 96, 88), (1, 1, 40, 70, 128, 100)] {
            let plain = CUDABackend.$flashAsyncAllowed.withValue(false) { Self.run(shape) }
            let streamed = CUDABackend.$flashAsyncAllowed.withValue(true) { Self.run(shape) }
            for (i, name) in ["out", "dq", "dk", "dv"].enumerated() { #expect(streamed[i] == plain[i], "\(name) \(shape)") }
        }
    }
}

/// The tensor-core flash kernels on bf16 operands (`attention_flash_bf16[_async]_in16_*`, `attentionTakesBF16Operands`)
/// give the bits of the float32-carrier kernels on the same bf16 values: out and lse as they are, dq, dk, dv as
/// theirs rounded to bf16 (the bf16 kernels write them rounded); streamed and
/// synchronous, every register width, partial and several tiles, Dh ≠ Dv, head dims not a multiple of 8 (no
/// streaming), odd (one element at a time), and keys past the fused-dq limit (the dq kernel).
@Suite(.serialized) struct FlashBF16OperandTests {
    static func run(_ shape: (n: Int, h: Int, tq: Int, tk: Int, dh: Int, dv: Int), bf16: Bool, scale: Double? = nil,
                    seed: UInt64 = 0) -> [[UInt32]] {
        let (n, h, tq, tk, dh, dv) = shape
        let be = EmulatedCUDA.backend, dev = EmulatedCUDA.device
        func operand(_ s: [Int], _ seed: UInt64, _ scale: Double) -> Tensor {
            let x = (Tensor.randn(s, seed: seed) * scale).to(.bfloat16).to(dev)
            return bf16 ? x : x.to(.float32)
        }
        let q = operand([n, h, tq, dh], seed + 1, 1.7), k = operand([n, h, tk, dh], seed + 2, 1.7), v = operand([n, h, tk, dv], seed + 3, 1.7)
        let dout = operand([n, h, tq, dv], seed + 4, 1)
        let s = AttentionShape(batch: n * h, queries: tq, keys: tk, headDim: dh, valueDim: dv), scale = scale ?? 1 / Double(dh).squareRoot()
        #expect(be.attentionTakesBF16Operands(s))
        let out = Tensor.empty([n, h, tq, dv], dtype: .float32, device: dev), lse = Tensor.empty([n, h, tq], dtype: .float32, device: dev)
        be.attentionForwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, shape: s, scale: scale,
                               precision: .bfloat16)
        let g = bf16 ? DType.bfloat16 : .float32
        let dq = Tensor.empty([n, h, tq, dh], dtype: g, device: dev), dk = Tensor.empty([n, h, tk, dh], dtype: g, device: dev)
        let dvv = Tensor.empty([n, h, tk, dv], dtype: g, device: dev)
        be.attentionBackwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, dOut: dout.buffer,
                                dq: dq.buffer, dk: dk.buffer, dv: dvv.buffer, shape: s, scale: scale, precision: .bfloat16)
        // The gradients as bf16 values either way (the carrier kernels' float32 ones rounded once).
        let grads = [dq, dk, dvv].map { $0.to(.bfloat16).to(.float32) }
        return ([out, lse] + grads).map { $0.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
    }

    /// The direct kernels (`attention_flash_bf16_direct_in16_*`: cp.async straight into double-buffered pair tiles,
    /// one barrier per streamed tile) give the staged `_async_in16_` kernels' bits, where Dh and Dv are multiples of
    /// 8: several and partial query and key tiles (both buffers in use, rows past Tq and Tk zeroed), Dh ≠ Dv, Dh not
    /// a multiple of 16 (the padding zeroed once per block), every register width, the dq kernel (300 keys), and
    /// SiT-XL/2's head (256 keys, Dh 72). Where Dh and Dv pad to the width, the direct kernels are the WHOLE entry
    /// points (compile-time widths; the forward's 128-row query tiles, two m-tiles a warp) against the general
    /// staged ones, also with a negative scale.
    @Test func directTilesGiveTheStagedKernelsBits() {
        let shapes = [(1, 2, 130, 150, 72, 40), (1, 1, 70, 129, 64, 64), (1, 1, 65, 300, 96, 88), (1, 1, 40, 70, 128, 104),
                      (2, 1, 70, 256, 72, 72), (1, 2, 200, 130, 64, 64)]   // the last: two 128-row tiles of the WHOLE forward
        for shape in shapes {
            let s = AttentionShape(batch: shape.0 * shape.1, queries: shape.2, keys: shape.3, headDim: shape.4, valueDim: shape.5)
            let words = CUDABackend.flashBF16SharedWords(s, direct: true)
            #expect(EmulatedCUDA.backend.flashBF16Direct(s, words: words.dkdv + 64 * 36, async: true, input16: true), "\(shape)")
            // A negative scale too where Dh and Dv pad to the width (the WHOLE kernels): S scaled before the max.
            let scales: [Double?] = CUDABackend.flashBF16Whole(s) ? [nil, -0.2] : [nil]
            for scale in scales {
                let label = scale.map { "\($0)" } ?? "1/√Dh"
                let staged = CUDABackend.$flashDirectAllowed.withValue(false) { Self.run(shape, bf16: true, scale: scale) }
                let direct = CUDABackend.$flashDirectAllowed.withValue(true) { Self.run(shape, bf16: true, scale: scale) }
                for (i, name) in ["out", "lse", "dq", "dk", "dv"].enumerated() {
                    #expect(direct[i] == staged[i], "\(name) \(shape) scale \(label)")
                }
            }
        }
        // Not for head dims that are not a multiple of 8, nor for float32 carriers.
        let odd = AttentionShape(batch: 1, queries: 64, keys: 64, headDim: 12, valueDim: 8)
        #expect(!EmulatedCUDA.backend.flashBF16Direct(odd, words: 0, async: true, input16: true))
        #expect(!EmulatedCUDA.backend.flashBF16Direct(AttentionShape(batch: 1, queries: 64, keys: 64, headDim: 64, valueDim: 64),
                                                       words: 0, async: true, input16: false))
    }

    /// The direct dk/dv kernels summing dq themselves (each query tile's last block: `tc_dq_last_block`) give the
    /// bits of the partials' summing kernel (`HASTE_FLASH_DQ_LAST_BLOCK=0`): 2 to 4 key tiles, several and partial
    /// query tiles, WHOLE and general entry points. A run on other values comes between (its partials are what a
    /// block summing too early would find in the recycled partial buffer: the emulator runs blocks in order).
    @Test func dqByTheLastBlockGivesTheSummingKernelsBits() {
        CUDABackend.$flashDQSerial.withValue(false) { Self.lastBlockAgainstSummingKernel() }   // whatever HASTE_FLASH_DQ_SERIAL says
    }

    static func lastBlockAgainstSummingKernel() {
        for shape in [(1, 2, 130, 150, 72, 40), (2, 1, 200, 256, 72, 72), (1, 1, 70, 129, 64, 64), (1, 3, 65, 66, 96, 88)] {
            let summed = CUDABackend.$flashDQLastBlockAllowed.withValue(false) { Self.run(shape, bf16: true) }
            _ = CUDABackend.$flashDQLastBlockAllowed.withValue(false) { Self.run(shape, bf16: true, seed: 10) }
            let last = CUDABackend.$flashDQLastBlockAllowed.withValue(true) { Self.run(shape, bf16: true) }
            for (i, name) in ["out", "lse", "dq", "dk", "dv"].enumerated() { #expect(last[i] == summed[i], "\(name) \(shape)") }
        }
        let (dev, driver, be) = Self.hostOnly
        let s = AttentionShape(batch: 4, queries: 256, keys: 256, headDim: 72, valueDim: 72)
        let x = Tensor.empty([4, 256, 72], dtype: .bfloat16, device: dev), o = Tensor.empty([4, 256, 72], dtype: .float32, device: dev)
        let l = Tensor.empty([4, 256], dtype: .float32, device: dev)
        let before = driver.launches["attention_flash_dq_sum_out16", default: 0]
        be.attentionBackwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: l.buffer, dOut: x.buffer, dq: x.buffer,
                                dk: x.buffer, dv: x.buffer, shape: s, scale: 0.1, precision: .bfloat16)
        #expect(driver.launches["attention_flash_dq_sum_out16", default: 0] == before)
        CUDABackend.$flashDQLastBlockAllowed.withValue(false) {
            be.attentionBackwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: l.buffer, dOut: x.buffer, dq: x.buffer,
                                    dk: x.buffer, dv: x.buffer, shape: s, scale: 0.1, precision: .bfloat16)
        }
        #expect(driver.launches["attention_flash_dq_sum_out16", default: 0] == before + 1)
    }

    /// The serial dq sum (one dk/dv block per head walking its key tiles in order, dq a float32 running sum each
    /// thread owns: `tc_dq_serial`, `HASTE_FLASH_DQ_SERIAL`) gives the summing kernel's bits: 1 to 4 key tiles,
    /// several and partial query tiles, WHOLE and general entry points, several heads. A run on other values comes
    /// between: the running sum's buffer is recycled, so a first key tile that added to it instead of storing shows.
    /// Both serial entry points: the running sum loaded before the barrier and dS·K ("…s") and right before the adds ("…sl").
    @Test func dqSeriallyGivesTheSummingKernelsBits() {
        for shape in [(1, 2, 130, 150, 72, 40), (2, 1, 200, 256, 72, 72), (1, 1, 70, 129, 64, 64), (1, 3, 65, 66, 96, 88),
                      (2, 2, 100, 60, 64, 64)] {
            let summed = CUDABackend.$flashDQSerial.withValue(false) {
                CUDABackend.$flashDQLastBlockAllowed.withValue(false) { Self.run(shape, bf16: true) }
            }
            for early in [true, false] {                 // the running sum loaded before dS·K ("…s") or after ("…sl")
                CUDABackend.$flashDQEarlyLoad.withValue(early) {
                    _ = CUDABackend.$flashDQSerial.withValue(true) { Self.run(shape, bf16: true, seed: 10) }
                    let serial = CUDABackend.$flashDQSerial.withValue(true) { Self.run(shape, bf16: true) }
                    for (i, name) in ["out", "lse", "dq", "dk", "dv"].enumerated() {
                        #expect(serial[i] == summed[i], "\(name) \(shape), early load \(early)")
                    }
                }
            }
        }
    }

    /// Unforced, the serial dq sum runs where a block per head fills the GPU about as well as a block per (key tile,
    /// head): SiT-XL/2's 16 heads × batch 64 or 256 on 132 multiprocessors (grid 1 × heads, no count to zero), not
    /// 4 heads (grid 4 × 4, the last-block counts zeroed).
    @Test func serialDQRunsWhereTheHeadsFillTheGPU() {
        CUDABackend.$flashDQSerial.withValue(nil) {       // the rule, whatever HASTE_FLASH_DQ_SERIAL says
            CUDABackend.$flashDQEarlyLoad.withValue(true) { Self.serialDQChoice() }
            CUDABackend.$flashDQEarlyLoad.withValue(false) { Self.serialDQChoice(early: false) }
        }
    }

    static func serialDQChoice(early: Bool = true) {
        let (dev, driver, be) = Self.hostOnly
        #expect(driver.multiprocessors == 132)
        #expect(be.flashDQSerialFits(heads: 1024, keyTiles: 4) && be.flashDQSerialFits(heads: 4096, keyTiles: 4))
        #expect(be.flashDQSerialFits(heads: 8, keyTiles: 1))
        #expect(!be.flashDQSerialFits(heads: 300, keyTiles: 4) && !be.flashDQSerialFits(heads: 4, keyTiles: 4))
        // Serially, the entry point compiled for the running sum alone ("…s"; "…sl" with HASTE_FLASH_DQ_EARLY_LOAD=0).
        let kernel = "attention_flash_bf16_direct_in16_backward_dkdv_d80w"
        for (heads, grid, fills, entry) in [(1024, Dim3(1, 1024), 0, kernel + (early ? "s" : "sl")), (4, Dim3(4, 4), 1, kernel)] {
            let s = AttentionShape(batch: heads, queries: 256, keys: 256, headDim: 72, valueDim: 72)
            let x = Tensor.empty([heads, 256, 72], dtype: .bfloat16, device: dev), o = Tensor.empty([heads, 256, 72], dtype: .float32, device: dev)
            let l = Tensor.empty([heads, 256], dtype: .float32, device: dev)
            let before = driver.launches["fill_4", default: 0]
            be.attentionBackwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: l.buffer, dOut: x.buffer, dq: x.buffer,
                                    dk: x.buffer, dv: x.buffer, shape: s, scale: 0.1, precision: .bfloat16)
            let g = driver.lastLaunch[entry]?.grid
            #expect(g?.x == grid.x && g?.y == grid.y, "\(heads) heads: grid \(String(describing: g))")
            #expect(driver.launches["fill_4", default: 0] == before + fills, "\(heads) heads")
        }
    }

    /// A host-only CUDA backend of its own (launches recorded, nothing computed) for the host's choice of entry point.
    static let hostOnly: (device: Device, driver: HostOnlyDriver, backend: CUDABackend) = {
        let driver = HostOnlyDriver(), backend = CUDABackend(driver: driver, device: .cuda(11))
        Backends.register(backend, for: .cuda(11))
        return (.cuda(11), driver, backend)
    }()

    /// Where Dh and Dv both pad to the register width (SiT-XL/2's 72 → d80, 64 → d64) the direct kernels run their
    /// WHOLE entry points (compile-time tile widths), the forward over query tiles of 128 rows (its grid and its
    /// shared memory: Q 128 rows, K and V two buffers of 64, 44 words a row); else the general ones over 64.
    @Test func wholeShapesTakeTheWholeEntryPoints() {
        let (dev, driver, be) = Self.hostOnly
        for (dh, dv, suffix, rows) in [(72, 72, "d80w", 128), (64, 64, "d64w", 128), (72, 40, "d80", 64), (40, 40, "d64", 64)] {
            let (n, h, t) = (2, 16, 256)
            let s = AttentionShape(batch: n * h, queries: t, keys: t, headDim: dh, valueDim: dv)
            let q = Tensor.empty([n, h, t, dh], dtype: .bfloat16, device: dev), k = Tensor.empty([n, h, t, dh], dtype: .bfloat16, device: dev)
            let v = Tensor.empty([n, h, t, dv], dtype: .bfloat16, device: dev), dout = Tensor.empty([n, h, t, dv], dtype: .bfloat16, device: dev)
            let out = Tensor.empty([n, h, t, dv], dtype: .float32, device: dev), lse = Tensor.empty([n, h, t], dtype: .float32, device: dev)
            be.attentionForwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, shape: s, scale: 0.1,
                                   precision: .bfloat16)
            CUDABackend.$flashDQSerial.withValue(false) {   // a block per (key tile, head), whatever HASTE_FLASH_DQ_SERIAL says
                be.attentionBackwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, dOut: dout.buffer,
                                        dq: q.buffer, dk: k.buffer, dv: v.buffer, shape: s, scale: 0.1, precision: .bfloat16)
            }
            #expect(CUDABackend.flashBF16Whole(s) == suffix.hasSuffix("w"), "\(s)")
            let forward = driver.lastLaunch["attention_flash_bf16_direct_in16_forward_\(suffix)"]
            #expect(forward?.grid == Dim3(t / rows, n * h), "\(suffix): \(String(describing: forward))")
            let sq = (dh + 15) / 16 * 16 / 2 + 4, sv = (dv + 15) / 16 * 16 / 2 + 4
            #expect(forward?.sharedBytes == 4 * (rows * sq + 2 * 64 * sq + 2 * 64 * sv), "\(suffix): \(String(describing: forward))")
            #expect(driver.lastLaunch["attention_flash_bf16_direct_in16_backward_dkdv_\(suffix)"]?.grid == Dim3(t / 64, n * h), "\(suffix)")
        }
        #expect(driver.lastLaunch["attention_flash_bf16_direct_in16_forward_d80w"]?.sharedBytes == 67_584)   // SiT-XL/2's head
        // HASTE_FLASH_WHOLE=0: the general entry points (64-row forward tiles) for the same shape.
        let s = AttentionShape(batch: 5, queries: 192, keys: 192, headDim: 72, valueDim: 72)
        let x = Tensor.empty([5, 192, 72], dtype: .bfloat16, device: dev), o = Tensor.empty([5, 192, 72], dtype: .float32, device: dev)
        CUDABackend.$flashWholeAllowed.withValue(false) {
            be.attentionForwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: nil, shape: s, scale: 0.1, precision: .bfloat16)
        }
        #expect(driver.lastLaunch["attention_flash_bf16_direct_in16_forward_d80"]?.grid == Dim3(3, 5))
        be.attentionForwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: nil, shape: s, scale: 0.1, precision: .bfloat16)
        #expect(driver.lastLaunch["attention_flash_bf16_direct_in16_forward_d80w"]?.grid == Dim3(2, 5))
        // Where the 128-row forward's shared memory (Dh 128: 104 448 bytes) exceeds the device's (sm_86: 99 KiB), the
        // general direct forward (87 040 bytes) runs instead.
        let small = HostOnlyDriver(maxSharedBytes: 99 * 1024), smallBackend = CUDABackend(driver: small, device: .cuda(12))
        Backends.register(smallBackend, for: .cuda(12))
        let s128 = AttentionShape(batch: 2, queries: 256, keys: 256, headDim: 128, valueDim: 128)
        let x128 = Tensor.empty([2, 256, 128], dtype: .bfloat16, device: .cuda(12))
        let o128 = Tensor.empty([2, 256, 128], dtype: .float32, device: .cuda(12))
        smallBackend.attentionForwardLSE(q: x128.buffer, k: x128.buffer, v: x128.buffer, out: o128.buffer, lse: nil, shape: s128,
                                         scale: 0.1, precision: .bfloat16)
        #expect(small.lastLaunch["attention_flash_bf16_direct_in16_forward_d128w"] == nil
                && small.lastLaunch["attention_flash_bf16_direct_in16_forward_d128"]?.sharedBytes == 87_040, "\(small.lastLaunch.keys)")
        let y128 = Tensor.empty([2, 256, 128], dtype: .bfloat16, device: dev), p128 = Tensor.empty([2, 256, 128], dtype: .float32, device: dev)
        be.attentionForwardLSE(q: y128.buffer, k: y128.buffer, v: y128.buffer, out: p128.buffer, lse: nil, shape: s128, scale: 0.1,
                               precision: .bfloat16)
        #expect(driver.lastLaunch["attention_flash_bf16_direct_in16_forward_d128w"]?.sharedBytes == 104_448)
    }

    /// The direct kernels reading the heads where they lie (`attentionForwardLSE`/`attentionBackwardLSE(…, layouts:)`,
    /// the bf16 attention branch: q, k, v inside qkv's [N, T, 3·D] output, dOut inside proj's [N, T, D] dx, dq, dk, dv
    /// written into qkv's gradient): the bits of the same kernels on contiguous copies of the heads. SiT-XL/2's head
    /// (72) with fused dq (80 tokens) and with the dq kernel (300), and 3 heads of 64; the forward's bf16 output merged
    /// into tokens (`out16`) is the merging cast of its float32 out.
    @Test func layoutsReadAndWriteTheHeadsInPlace() {
        let be = EmulatedCUDA.backend, dev = EmulatedCUDA.device
        for (n, t, heads, dh) in [(2, 80, 2, 72), (1, 300, 2, 72), (2, 70, 3, 64)] {
            let d = heads * dh, scale = 1 / Double(dh).squareRoot()
            let s = AttentionShape(batch: n * heads, queries: t, keys: t, headDim: dh, valueDim: dh)
            let qkv = (Tensor.randn([n, t, 3 * d], seed: 5) * 1.7).to(.bfloat16).to(dev)
            let dO = Tensor.randn([n, t, d], seed: 6).to(.bfloat16).to(dev)
            // Copies: the heads out, the contiguous calls, the gradients merged back.
            let (q, k, v) = (qkv.heads(0, of: 3, heads, bf16: true), qkv.heads(1, of: 3, heads, bf16: true), qkv.heads(2, of: 3, heads, bf16: true))
            let out = Tensor.empty([n, heads, t, dh], dtype: .float32, device: dev), lse = Tensor.empty([n, heads, t], dtype: .float32, device: dev)
            be.attentionForwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, shape: s, scale: scale, precision: .bfloat16)
            let dOut = dO.heads(0, of: 1, heads, bf16: true)
            let (dq, dk, dv) = (Tensor.empty(like: q), Tensor.empty(like: k), Tensor.empty(like: v))
            be.attentionBackwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: out.buffer, lse: lse.buffer, dOut: dOut.buffer,
                                    dq: dq.buffer, dk: dk.buffer, dv: dv.buffer, shape: s, scale: scale, precision: .bfloat16)
            let merged = Tensor.empty([n, t, 3 * d], dtype: .bfloat16, device: dev)
            for (i, g) in [dq, dk, dv].enumerated() { g.mergeHeads(into: merged, i) }
            // In place.
            let layouts = AttentionLayouts.packed(tokens: t, heads: heads, headDim: dh)
            let slot = { (x: Tensor, i: Int) in BF16SelfAttentionTape.slot(x, i) }
            let out2 = Tensor.empty(like: out), lse2 = Tensor.empty(like: lse), grads = Tensor.empty([n, t, 3 * d], dtype: .bfloat16, device: dev)
            let o16 = Tensor.empty([n, t, d], dtype: .bfloat16, device: dev), o16Merged = Tensor.empty([n, t, d], dtype: .bfloat16, device: dev)
            out.mergeHeads(into: o16Merged, 0)                 // the merge the bf16 attention branch did itself
            let ranForward = be.attentionForwardLSE(q: slot(qkv, 0), k: slot(qkv, 1), v: slot(qkv, 2), out: out2.buffer, lse: lse2.buffer,
                                                    shape: s, scale: scale, layouts: layouts, out16: o16.buffer)
            let ranBackward = be.attentionBackwardLSE(q: slot(qkv, 0), k: slot(qkv, 1), v: slot(qkv, 2), out: out2.buffer, lse: lse2.buffer,
                                                      dOut: dO.buffer, dq: slot(grads, 0), dk: slot(grads, 1), dv: slot(grads, 2),
                                                      shape: s, scale: scale, layouts: layouts)
            // Sampling's call: no float32 out (nil: the kernel stores none), no lse; the same merged bf16 out.
            let o16Alone = Tensor.empty([n, t, d], dtype: .bfloat16, device: dev)
            let ranAlone = be.attentionForwardLSE(q: slot(qkv, 0), k: slot(qkv, 1), v: slot(qkv, 2), out: nil, lse: nil,
                                                  shape: s, scale: scale, layouts: layouts, out16: o16Alone.buffer)
            // D from the rounded output (HASTE_FLASH_D_FROM_LOW_OUTPUT=1): õ read where the forward merged it (o16, by
            // dOut's layout) gives the contiguous call's bits on a float32 carrier of õ's values.
            let rounded = out.to(.bfloat16).to(.float32)
            let (rq, rk, rv) = (Tensor.empty(like: q), Tensor.empty(like: k), Tensor.empty(like: v))
            be.attentionBackwardLSE(q: q.buffer, k: k.buffer, v: v.buffer, out: rounded.buffer, lse: lse.buffer, dOut: dOut.buffer,
                                    dq: rq.buffer, dk: rk.buffer, dv: rv.buffer, shape: s, scale: scale, precision: .bfloat16)
            let roundedMerged = Tensor.empty([n, t, 3 * d], dtype: .bfloat16, device: dev)
            for (i, g) in [rq, rk, rv].enumerated() { g.mergeHeads(into: roundedMerged, i) }
            let grads16 = Tensor.empty([n, t, 3 * d], dtype: .bfloat16, device: dev)
            let ranOut16 = be.attentionBackwardLSE(q: slot(qkv, 0), k: slot(qkv, 1), v: slot(qkv, 2), out: o16.buffer, lse: lse2.buffer,
                                                   dOut: dO.buffer, dq: slot(grads16, 0), dk: slot(grads16, 1), dv: slot(grads16, 2),
                                                   shape: s, scale: scale, layouts: layouts)
            let what = "n \(n) t \(t) heads \(heads) dh \(dh)"
            #expect(ranForward && ranBackward && ranAlone && ranOut16, "\(what): the direct kernels take the packed layouts")
            #expect(floatBits(grads16) == floatBits(roundedMerged), "\(what): (dq | dk | dv) with D from the bf16 output")
            let same = [floatBits(out2) == floatBits(out), floatBits(lse2) == floatBits(lse), floatBits(grads) == floatBits(merged), floatBits(o16) == floatBits(o16Merged),
                        floatBits(o16Alone) == floatBits(o16Merged)]
            #expect(same == [true, true, true, true, true], "\(what): out, lse, (dq | dk | dv), bf16 out merged into tokens (with, without out)")
        }
        // Declined (nothing launched): strides that are not whole 16-byte pieces, float32 operands, the switch off.
        let s = AttentionShape(batch: 2, queries: 8, keys: 8, headDim: 12, valueDim: 12)
        let odd = AttentionLayouts.packed(tokens: 8, heads: 2, headDim: 12)
        let x = Tensor.zeros([1, 8, 72], dtype: .bfloat16).to(dev), o = Tensor.empty([2, 8, 12], dtype: .float32, device: dev)
        #expect(!be.attentionForwardLSE(q: x.buffer, k: x.buffer, v: x.buffer, out: o.buffer, lse: nil, shape: s, scale: 1, layouts: odd, out16: nil))
        let f = Tensor.zeros([1, 8, 48]).to(dev), s16 = AttentionShape(batch: 2, queries: 8, keys: 8, headDim: 8, valueDim: 8)
        #expect(!be.attentionForwardLSE(q: f.buffer, k: f.buffer, v: f.buffer, out: o.buffer, lse: nil, shape: s16, scale: 1,
                                        layouts: .packed(tokens: 8, heads: 2, headDim: 8), out16: nil))
        #expect(CUDABackend.$flashStridedAllowed.withValue(false) { !be.flashLayoutsFit(.packed(tokens: 8, heads: 2, headDim: 8), s16) })
    }

    @Test func bf16OperandsGiveTheCarrierKernelsBits() {
        let shapes = [(1, 2, 130, 150, 72, 40), (1, 1, 70, 129, 64, 64), (1, 1, 65, 300, 96, 88), (1, 1, 40, 70, 128, 104),
                      (2, 1, 33, 20, 12, 6), (1, 2, 17, 19, 5, 7)]
        for shape in shapes {
            for async in [true, false] {
                let (carriers, operands) = CUDABackend.$flashAsyncAllowed.withValue(async) {
                    (Self.run(shape, bf16: false), Self.run(shape, bf16: true))
                }
                for (i, name) in ["out", "lse", "dq", "dk", "dv"].enumerated() {
                    #expect(operands[i] == carriers[i], "\(name) \(shape) streaming allowed \(async)")
                }
            }
        }
    }
}
