import Foundation
import HasteTensor

/// The flash-attention families' host side (CUDAFlashAttention.swift: the float32 kernels; CUDAFlashAttentionBF16.swift:
/// the tensor-core ones): which family, width and shared memory a call takes, its arguments, and the operands'
/// layouts for the direct kernels (`AttentionLayouts`: heads read and written where they lie).
extension CUDABackend {
    public func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape s: AttentionShape,
                                    scale: Double) {
        attentionForwardLSE(q: q, k: k, v: v, out: out, lse: lse, shape: s, scale: scale, precision: .float32)
    }

    /// bf16 carriers on sm_80+ take the tensor-core kernels (CUDAFlashAttentionBF16.swift), everything else the
    /// float32 ones.
    public func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer?, shape s: AttentionShape,
                                    scale: Double, precision: ComputePrecision) {
        _ = flashForward(q: q, k: k, v: v, out: out, lse: lse, shape: s, scale: scale, precision: precision, layouts: nil, out16: nil)
    }

    /// In place (`layouts`): the direct kernels only (bf16 operands whose rows are whole 16-byte pieces); `out16`
    /// (bf16, by `layouts.dOut`) written by the same kernel, and with it `out` may be nil (no float32 out stored).
    public func attentionForwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer?, lse: Buffer?, shape s: AttentionShape,
                                    scale: Double, layouts: AttentionLayouts, out16: Buffer?) -> Bool {
        flashForward(q: q, k: k, v: v, out: out, lse: lse, shape: s, scale: scale, precision: .bfloat16, layouts: layouts, out16: out16)
    }

    /// The forward launch; with `layouts`, only where the direct kernels take them (else false, nothing launched).
    private func flashForward(q: Buffer, k: Buffer, v: Buffer, out: Buffer?, lse: Buffer?, shape s: AttentionShape,
                              scale: Double, precision: ComputePrecision, layouts: AttentionLayouts?, out16: Buffer?) -> Bool {
        if let out16, out16.dtype != .bfloat16 { CUDABackend.fail("flash attention on \(device): a \(out16.dtype) merged output (bfloat16 only)") }
        if out == nil && (out16 == nil || layouts == nil) { CUDABackend.fail("flash attention on \(device): no output (a nil out needs out16 in place)") }
        for b in [out, lse].compactMap({ $0 }) { requireFloat32(b, "flash attention") }
        let variant = flashVariant(s, "flash attention")
        let tensorCores = flashUsesTensorCores(precision)
        if layouts != nil && !(tensorCores && [q, k, v].allSatisfy { $0.dtype == .bfloat16 }) { return false }
        if !tensorCores && flashUsesTF32(s, lse: lse, [q, k, v]), let out {  // float32, no gradient, TF32 allowed (never in place)
            flashForwardTF32(q: q, k: k, v: v, out: out, shape: s, scale: scale)
            return true
        }
        let input16 = flashInputs16([q, k, v], tensorCores: tensorCores, "flash attention")
        let (dh, dv) = (s.headDim, s.valueDim)
        let width = tensorCores ? CUDABackend.flashBF16Variant(s) : variant
        let staged = CUDABackend.flashBF16SharedWords(s, staged: true, input16: input16).forward
        let async = tensorCores && flashBF16Async(s, words: staged, [q, k, v])
        // The direct WHOLE forward (`flashBF16Whole`) takes query tiles of 128 rows (two m-tiles per warp), where
        // their shared memory fits the device (else the general direct forward, 64 rows).
        let wholeWords = CUDABackend.flashBF16SharedWords(s, direct: true, forwardRows: 128).forward
        let generalWords = CUDABackend.flashBF16SharedWords(s, direct: true).forward
        let whole = CUDABackend.flashBF16Whole(s) && wholeWords * 4 <= driver.maxSharedBytes
        let directWords = whole ? wholeWords : generalWords
        let direct = flashBF16Direct(s, words: directWords, async: async, input16: input16)
        if let layouts, !(direct && flashLayoutsFit(layouts, s)) { return false }
        if s.batch == 0 || s.queries == 0 { return true }
        let family = flashFamily(tensorCores: tensorCores, async: async, input16: input16, direct: direct)
        // The WHOLE entry point (128-row query tiles) or the general one (64): the same bits; the tuner times both
        // at the shape's first call (WHOLE first).
        let rowChoices = direct && whole ? [128, 64] : [64]
        tuned("flash forward \(family.prefix)\(width) batch·heads \(s.batch), Tq \(s.queries), Tk \(s.keys), Dh \(dh), Dv \(dv)"
                + (layouts.map(CUDABackend.layoutsKey) ?? "") + (out == nil ? " no out" : "") + (lse == nil ? " no lse" : "") + (out16 == nil ? "" : " out16"),
              rowChoices.map { LaunchTuner.Candidate($0 == 128 ? "WHOLE entry, 128-row tiles" : "general entry, 64-row tiles") },
              count: rowChoices.count, repeatable: CUDABackend.separate(outputs: [out, lse, out16], inputs: [q, k, v])) { i in
            let rows = rowChoices[i]
            let words = direct ? (rows == 128 ? wholeWords : generalWords)
                : async ? staged : tensorCores ? CUDABackend.flashBF16SharedWords(s).forward
                : CUDABackend.flashF32ForwardWords(s)           // Qs, Ks | Vs | Ps | row statistics
            launch(family.source, "\(family.prefix)forward_\(width)\(rows == 128 ? "w" : "")", grid: flashGrid(tiles: s.queries, s, rows: rows),
                   block: Dim3(128), sharedBytes: words * 4,
                   [.pointer(address(q)), .pointer(address(k)), .pointer(address(v)), .pointer(out.map(address) ?? 0),
                    .pointer(lse.map(address) ?? 0), .int64(Int64(s.batch)), .int64(Int64(s.queries)),
                    .int64(Int64(s.keys)), .int32(Int32(dh)), .int32(Int32(dv)), .float(Float(scale))]
                    + (direct ? CUDABackend.layoutArguments(layouts ?? .contiguous(s)) + [.pointer(out16.map(address) ?? 0)] : []))
        }
        return true
    }

    /// A tuner key's part for in-place operands: " in place, strides" and each operand's (batch, head, token) strides.
    static func layoutsKey(_ l: AttentionLayouts) -> String {
        " in place, \(l.heads) heads, strides" + [l.q, l.k, l.v, l.dOut, l.dq, l.dk, l.dv].map { " \($0.batch)/\($0.head)/\($0.token)" }.joined()
    }

    /// The direct kernels' layout arguments: heads, then (batch, head, token) strides of q, k, v, dOut, dq, dk, dv.
    static func layoutArguments(_ l: AttentionLayouts) -> [KernelArgument] {
        [.int64(Int64(l.heads))] + [l.q, l.k, l.v, l.dOut, l.dq, l.dk, l.dv].flatMap {
            [KernelArgument.int64(Int64($0.batch)), .int64(Int64($0.head)), .int64(Int64($0.token))]
        }
    }

    /// Whether the direct kernels take these layouts: whole 16-byte pieces per row (every stride a multiple of 8
    /// bf16 elements; the buffers' 16-byte alignment is `flashBF16Async`'s), heads dividing the batch,
    /// `HASTE_FLASH_STRIDED` not 0.
    func flashLayoutsFit(_ l: AttentionLayouts, _ s: AttentionShape) -> Bool {
        CUDABackend.flashStridedAllowed && l.heads >= 1 && s.batch % l.heads == 0
            && [l.q, l.k, l.v, l.dOut, l.dq, l.dk, l.dv].allSatisfy { [$0.batch, $0.head, $0.token].allSatisfy { $0 >= 0 && $0 % 8 == 0 } }
    }

    /// `HASTE_FLASH_DQ_LAST_BLOCK=0`: the direct dk/dv kernels' dq partials summed by `attention_flash_dq_sum_out16`
    /// again instead of by each query tile's last block, for comparisons (the same bits; a test switches it:
    /// `$flashDQLastBlockAllowed.withValue`).
    @TaskLocal static var flashDQLastBlockAllowed = ProcessInfo.processInfo.environment["HASTE_FLASH_DQ_LAST_BLOCK"] != "0"

    /// `HASTE_FLASH_DQ_EARLY_LOAD=0`: the serial dq sum's entry points that load the running sum after the dS·K
    /// product, right before adding to it ("…sl": one exposed round trip a query tile; before 2026-12-07 two, one per
    /// half), instead of before the barrier and the product ("…s"), for comparisons (the same bits; a test switches
    /// it: `$flashDQEarlyLoad.withValue`).
    @TaskLocal static var flashDQEarlyLoad = ProcessInfo.processInfo.environment["HASTE_FLASH_DQ_EARLY_LOAD"] != "0"

    /// `HASTE_FLASH_DQ_SERIAL`: 1 makes the direct dk/dv kernels sum dq serially wherever they give it (one block
    /// per head walking its key tiles in order, `tc_dq_serial`), 0 never (each query tile's last block, or the
    /// summing kernel); unset, `flashDQSerialFits` chooses. The same bits every way (a test switches it:
    /// `$flashDQSerial.withValue`).
    @TaskLocal static var flashDQSerial: Bool? = {
        switch ProcessInfo.processInfo.environment["HASTE_FLASH_DQ_SERIAL"] { case "0": false; case "1": true; default: nil }
    }()

    /// Whether one dk/dv block per head (walking its `keyTiles` in order, dq a running sum that one thread owns per
    /// element: no partials per key tile, fences, counts or summing pass) fills the GPU about as well as a block
    /// per (key tile, head): in waves of 2 blocks per multiprocessor (dk/dv's 255 registers × 128 threads), the
    /// serial grid may take at most a quarter more waves of its longer blocks. SiT-XL/2 (16 heads, 4 key tiles) on
    /// 132 multiprocessors: batch 64, 16 waves either way; batch 256, 64 against 63. A rule only: the tuner tries
    /// the other ways too where the device can time them (`flashDQSums`, `LaunchTuner`).
    func flashDQSerialFits(heads: Int, keyTiles: Int) -> Bool {
        if let forced = CUDABackend.flashDQSerial { return forced }
        let slots = 2 * driver.multiprocessors
        let serial = (heads + slots - 1) / slots * keyTiles, parallel = (heads * keyTiles + slots - 1) / slots
        return 4 * serial <= 5 * parallel
    }

    /// The ways the dk/dv kernel may give dq for a call, the heuristic's first (`flashDQSerialFits`), as the switches
    /// allow (`HASTE_FLASH_DQ_SERIAL`, `HASTE_FLASH_DQ_LAST_BLOCK`, `HASTE_FLASH_DQ_EARLY_LOAD`); the same bits
    /// every way. Only the direct kernels have more than one.
    func flashDQSums(direct: Bool, fusedDQ: Bool, input16: Bool, heads: Int, keyTiles: Int) -> [FlashDQSum] {
        guard fusedDQ else { return [.none] }
        guard direct else { return [keyTiles > 1 || input16 ? .kernel : .straight] }
        let parallel: FlashDQSum = CUDABackend.flashDQLastBlockAllowed ? .lastBlock : .kernel
        let serial: [FlashDQSum] = CUDABackend.flashDQEarlyLoad ? [.serial, .serialLate] : [.serialLate]
        switch CUDABackend.flashDQSerial {
        case true?: return serial
        case false?: return [parallel]
        case nil: return flashDQSerialFits(heads: heads, keyTiles: keyTiles) ? serial + [parallel] : [parallel] + serial
        }
    }

    /// `HASTE_FLASH_WHOLE=0`: the direct kernels' general entry points where the WHOLE ones would run (run-time tile
    /// widths, 64-row forward tiles), for comparisons (the same bits; a test switches it: `$flashWholeAllowed.withValue`).
    @TaskLocal static var flashWholeAllowed = ProcessInfo.processInfo.environment["HASTE_FLASH_WHOLE"] != "0"

    /// `HASTE_FLASH_STRIDED=0`: the bf16 attention branch copies its heads out and back (`attentionForwardLSE(…,
    /// layouts:)` declines), and so does float32 TF32 attention from qkv (`packedQKVAttentionRuns` false), for
    /// comparisons; the same bits (a test switches it for its own task: `$flashStridedAllowed.withValue`).
    @TaskLocal static var flashStridedAllowed = ProcessInfo.processInfo.environment["HASTE_FLASH_STRIDED"] != "0"

    public func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                                     dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double) {
        attentionBackwardLSE(q: q, k: k, v: v, out: out, lse: lse, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: s,
                             scale: scale, precision: .float32)
    }

    public func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                                     dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double,
                                     precision: ComputePrecision) {
        _ = flashBackward(q: q, k: k, v: v, out: out, lse: lse, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: s, scale: scale,
                          precision: precision, layouts: nil)
    }

    /// In place (`layouts`): the direct kernels only; `out` float32 contiguous, or the forward's bf16 output merged
    /// into tokens (its `out16`, read by `layouts.dOut`: D from the rounded output).
    public func attentionBackwardLSE(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                                     dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double,
                                     layouts: AttentionLayouts) -> Bool {
        flashBackward(q: q, k: k, v: v, out: out, lse: lse, dOut: dOut, dq: dq, dk: dk, dv: dv, shape: s, scale: scale,
                      precision: .bfloat16, layouts: layouts)
    }

    /// The backward launches; with `layouts`, only where the direct kernels take them (else false, nothing launched).
    private func flashBackward(q: Buffer, k: Buffer, v: Buffer, out: Buffer, lse: Buffer, dOut: Buffer,
                               dq: Buffer?, dk: Buffer?, dv: Buffer?, shape s: AttentionShape, scale: Double,
                               precision: ComputePrecision, layouts: AttentionLayouts?) -> Bool {
        requireFloat32(lse, "flash attention backward")
        let out16 = out.dtype == .bfloat16 && layouts != nil          // õ merged into tokens, read as dOut is
        if !out16 { requireFloat32(out, "flash attention backward") }
        let variant = flashVariant(s, "flash attention backward")
        let tensorCores = flashUsesTensorCores(precision)
        if layouts != nil && !(tensorCores && ([q, k, v, dOut] + [dq, dk, dv].compactMap { $0 }).allSatisfy { $0.dtype == .bfloat16 }) { return false }
        let input16 = flashInputs16([q, k, v, dOut], tensorCores: tensorCores, "flash attention backward")
        for g in [dq, dk, dv].compactMap({ $0 }) where g.dtype != (input16 ? .bfloat16 : .float32) {
            CUDABackend.fail("flash attention backward on \(device): a \(g.dtype) gradient for \(input16 ? "bf16" : "float32") operands (gradients take the operands' dtype)")
        }
        let (tq, tk, dh, dvd) = (s.queries, s.keys, s.headDim, s.valueDim)
        let rows = s.batch * tq
        // bf16, up to flashFusedDQTiles key tiles: dk/dv's kernel also gives dq, one partial per key tile (summed
        // below), where the dq kernel would compute S and dP again. Longer keys: the dq kernel (the partials grow
        // with Tk·Tq).
        let keyTiles = (tk + 63) / 64
        let fusedDQ = tensorCores && dq != nil && tq > 0 && tk > 0 && keyTiles <= CUDABackend.flashFusedDQTiles
        let dsWords = fusedDQ ? 64 * 36 : 0
        let bf16Words = CUDABackend.flashBF16SharedWords(s), stagedWords = CUDABackend.flashBF16SharedWords(s, staged: true, input16: input16)
        // The _async kernels stream K and V (dq) or q and dOut (dk/dv) through cp.async.
        let asyncDQ = tensorCores && flashBF16Async(s, words: stagedWords.dq, [k, v])
        let asyncDKDV = tensorCores && flashBF16Async(s, words: stagedWords.dkdv + dsWords, [q, dOut])
        let directWords = CUDABackend.flashBF16SharedWords(s, direct: true)
        let directDQ = flashBF16Direct(s, words: directWords.dq, async: asyncDQ, input16: input16)
        let directDKDV = flashBF16Direct(s, words: directWords.dkdv + dsWords, async: asyncDKDV, input16: input16)
        let dqKernel = dq != nil && tq > 0 && !fusedDQ, dkdvKernel = (dk != nil || dv != nil || fusedDQ) && tk > 0
        if let layouts, !(flashLayoutsFit(layouts, s) && (!dqKernel || directDQ) && (!dkdvKernel || directDKDV)) { return false }
        if s.batch == 0 || (dq == nil && dk == nil && dv == nil) { return true }
        let lay = layouts ?? .contiguous(s)
        // D = rowsum(dOut ⊙ out) [batch·Tq] (FlashAttention-2's preprocessing), from the caching allocator.
        let deltaBytes = Swift.max(rows, 1) * 4
        let delta = allocator.allocate(byteCount: deltaBytes)
        if rows > 0 {
            let dOutRows: [KernelArgument] = input16 ? [.int64(Int64(tq)), .int64(Int64(lay.heads)), .int64(Int64(lay.dOut.batch)),
                                                        .int64(Int64(lay.dOut.head)), .int64(Int64(lay.dOut.token))] : []
            let kernel = out16 ? "attention_flash_row_dot_o16" : input16 ? "attention_flash_row_dot_in16" : "attention_flash_row_dot"
            // 8 warps a block; the bf16 kernels' take flashDotRows rows each, of dv ≤ flashMaxHeadDim (their chunks)
            require(!input16 || dvd <= CUDABackend.flashMaxHeadDim, "attention_flash_row_dot_in16: dv \(dvd) > \(CUDABackend.flashMaxHeadDim)")
            let rowsPerBlock = input16 ? 8 * CUDABackend.flashDotRows : 8
            launch(CUDABackend.flashAttentionSource, kernel, grid: Dim3(CUDABackend.blocks(rows, threads: rowsPerBlock)),
                   block: Dim3(256), [.pointer(address(dOut)), .pointer(address(out)), .pointer(delta),
                                      .int64(Int64(rows)), .int64(Int64(dvd))] + dOutRows)
        }
        let sizes: [KernelArgument] = [.int64(Int64(s.batch)), .int64(Int64(tq)), .int64(Int64(tk)), .int32(Int32(dh)),
                                       .int32(Int32(dvd)), .float(Float(scale))]
        let inputs: [KernelArgument] = [.pointer(address(q)), .pointer(address(k)), .pointer(address(v)),
                                        .pointer(address(dOut)), .pointer(address(lse)), .pointer(delta)]
        let width = tensorCores ? CUDABackend.flashBF16Variant(s) : variant
        let whole = CUDABackend.flashBF16Whole(s) ? "w" : ""   // the direct kernels' compile-time tile widths
        if let dq, dqKernel {
            let words = directDQ ? directWords.dq : asyncDQ ? stagedWords.dq : tensorCores ? bf16Words.dq
                : 64 * (dh + 1) * 2 + 64 * (dvd + 1) * 2 + 64 * 65   // Qs, Ks | dOs, Vs | dSs
            let family = flashFamily(tensorCores: tensorCores, async: asyncDQ, input16: input16, direct: directDQ)
            launch(family.source, "\(family.prefix)backward_dq_\(width)\(directDQ ? whole : "")", grid: flashGrid(tiles: tq, s),
                   block: Dim3(128), sharedBytes: words * 4,
                   inputs + [.pointer(address(dq))] + sizes + (directDQ ? CUDABackend.layoutArguments(lay) : []))
        }
        if dkdvKernel {
            let words = directDKDV ? directWords.dkdv + dsWords : asyncDKDV ? stagedWords.dkdv + dsWords
                : tensorCores ? bf16Words.dkdv + dsWords
                : 64 * (dh + 1) * 2 + 64 * (dvd + 1) * 2 + 2 * 64 * 65 + 2 * 64   // Ks, Qs | Vs, dOs | Ps, dSs | lse, D
            let family = flashFamily(tensorCores: tensorCores, async: asyncDKDV, input16: input16, direct: directDKDV)
            let n = s.batch * tq * dh
            // One launch sequence per way of summing dq and entry point (WHOLE or general), all the same bits: the
            // tuner times them on the device at the shape's first call (the heuristic's first).
            let ways = flashDQSums(direct: directDKDV, fusedDQ: fusedDQ, input16: input16, heads: s.batch, keyTiles: keyTiles)
            let entries = directDKDV && !whole.isEmpty ? [whole, ""] : [directDKDV ? whole : ""]
            let candidates = entries.flatMap { e in ways.map { ($0, e) } }
            tuned("flash dk/dv \(family.prefix)\(width) batch·heads \(s.batch), Tq \(tq), Tk \(tk), Dh \(dh), Dv \(dvd)"
                    + (layouts.map(CUDABackend.layoutsKey) ?? "") + (dq == nil ? " no dq" : "") + (dk == nil ? " no dk" : "") + (dv == nil ? " no dv" : ""),
                  candidates.map { LaunchTuner.Candidate("\($0.0.rawValue)\($0.1.isEmpty && !whole.isEmpty ? ", general entry" : "")",
                                                         extraBytes: $0.0.temporaryBytes(n: n, keyTiles: keyTiles, tq: tq, heads: s.batch)) },
                  count: candidates.count, repeatable: CUDABackend.separate(outputs: [dq, dk, dv], inputs: [q, k, v, out, lse, dOut])) { i in
                let (way, entry) = candidates[i]
                // dq's partials: straight into dq for one key tile (float32 dq), else [key tile][batch·Tq·Dh] summed
                // after (and rounded, for a bf16 dq: into dq's layout). Serially (the direct kernels, one block per
                // head): one running sum [batch·Tq·Dh], none for one key tile (dq's own address stands in, never read).
                let serial = way == .serial || way == .serialLate
                let partBytes = way.partialBytes(n: n, keyTiles: keyTiles)
                let parts = partBytes > 0 ? allocator.allocate(byteCount: partBytes) : fusedDQ ? address(dq!) : 0
                // Each query tile's last block sums dq (no summing kernel, the partials read while in L2): a count per
                // (head, query tile), zeroed here.
                let countBytes = way.countBytes(tq: tq, heads: s.batch)
                let counts = countBytes > 0 ? allocator.allocate(byteCount: countBytes) : 0
                if countBytes > 0 {
                    launch(CUDABackend.memorySource, "fill_4", grid: Dim3(CUDABackend.blocks(countBytes / 4)), block: Dim3(256),
                           [.pointer(counts), .int64(Int64(countBytes / 4)), .uint64(0)])
                }
                // Serially: the entry points compiled for it alone ("…s": no partial stores or last-block sum in their
                // loop, 26 % fewer instructions in its body for d80w on sm_90, no stack; the same code for the running sum).
                launch(family.source, "\(family.prefix)backward_dkdv_\(width)\(entry)\(way == .serial ? "s" : way == .serialLate ? "sl" : "")",
                       grid: serial ? Dim3(1, Swift.min(s.batch, 65_535)) : flashGrid(tiles: tk, s),
                       block: Dim3(128), sharedBytes: words * 4,
                       inputs + [.pointer(dk.map(address) ?? 0), .pointer(dv.map(address) ?? 0)]
                           + (tensorCores ? [.pointer(parts)] : []) + sizes
                           + (directDKDV ? CUDABackend.layoutArguments(lay) + [.pointer(countBytes > 0 || serial ? address(dq!) : 0), .pointer(counts)] : []))
                if countBytes > 0 { allocator.release(counts, byteCount: countBytes) }
                if way == .kernel && input16 {
                    launch(CUDABackend.flashAttentionSource, "attention_flash_dq_sum_out16", grid: Dim3(CUDABackend.blocks(rows, threads: 8)),
                           block: Dim3(256), [.pointer(parts), .pointer(address(dq!)), .int64(Int64(n)), .int32(Int32(keyTiles)),
                                              .int64(Int64(dh)), .int64(Int64(tq)), .int64(Int64(lay.heads)), .int64(Int64(lay.dq.batch)),
                                              .int64(Int64(lay.dq.head)), .int64(Int64(lay.dq.token))])
                } else if way == .kernel {
                    launch(CUDABackend.flashAttentionSource, "attention_flash_dq_sum", grid: Dim3(CUDABackend.blocks(n, threads: 256)),
                           block: Dim3(256), [.pointer(parts), .pointer(address(dq!)), .int64(Int64(n)), .int32(Int32(keyTiles))])
                }
                if partBytes > 0 { allocator.release(parts, byteCount: partBytes) }
            }
        }
        allocator.release(delta, byteCount: deltaBytes)
        return true
    }

    /// "d64", "d96" or "d128": the register tile width for max(Dh, Dv); larger head dims are refused.
    func flashVariant(_ s: AttentionShape, _ op: String) -> String {
        let d = Swift.max(s.headDim, s.valueDim)
        if d > CUDABackend.flashMaxHeadDim {
            CUDABackend.fail("\(op): head dims Dh \(s.headDim), Dv \(s.valueDim) exceed the flash kernels' \(CUDABackend.flashMaxHeadDim) (attentionRecomputesProbabilities is false for this shape: use attentionForward)")
        }
        return d <= 64 ? "d64" : d <= 96 ? "d96" : "d128"
    }

    /// (row tiles of `rows`, heads), each axis capped at 65 535 (the kernels stride over both).
    func flashGrid(tiles count: Int, _ s: AttentionShape, rows: Int = 64) -> Dim3 {
        Dim3(Swift.max(1, Swift.min((count + rows - 1) / rows, 65_535)), Swift.max(1, Swift.min(s.batch, 65_535)))
    }
}

/// How the flash dk/dv kernel gives dq (bf16 tensor cores, up to `flashFusedDQTiles` key tiles; see
/// CUDAFlashAttentionBF16.swift's notes).
enum FlashDQSum: String, Sendable {
    /// One block per head walking its key tiles, a float32 running sum each thread owns (the "…s" entry points),
    /// or the same with the sum loaded right before its adds ("…sl").
    case serial = "dq serially", serialLate = "dq serially, loaded late"
    /// A partial per key tile, summed by each query tile's last block (`tc_dq_last_block`) or by a kernel after.
    case lastBlock = "dq by the last block", kernel = "dq by a summing kernel"
    /// A float32 dq of one key tile written straight; or no dq from this kernel.
    case straight = "dq straight", none = "no dq"

    /// The float32 partials or running sum it allocates, for `n` = batch·Tq·Dh elements of dq.
    func partialBytes(n: Int, keyTiles: Int) -> Int {
        switch self {
        case .serial, .serialLate: keyTiles > 1 ? n * 4 : 0
        case .lastBlock, .kernel: keyTiles * n * 4
        case .straight, .none: 0
        }
    }

    /// The last block's counts: one per (head, query tile).
    func countBytes(tq: Int, heads: Int) -> Int { self == .lastBlock ? heads * ((tq + 63) / 64) * 4 : 0 }

    /// Every temporary device byte it takes: the partials and the counts.
    func temporaryBytes(n: Int, keyTiles: Int, tq: Int, heads: Int) -> Int {
        partialBytes(n: n, keyTiles: keyTiles) + countBytes(tq: tq, heads: heads)
    }
}
