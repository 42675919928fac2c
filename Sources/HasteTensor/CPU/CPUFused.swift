import CKernels
/// Fused adaLN-block kernels (see `FusedKernels`). Each direction is one pass over the activation:
/// - modulatedLayerNorm: per row, the moments pass and one SIMD16 pass writing y (the row stays in L1); (1 + scale)
///   is formed once per item into a small [batch, cols] table, so the row loops are LayerNorm's own
///   (`normalizeRow`, `layerNormBackwardRow`) with that table as the weight and shift as the bias — the forward
///   is bitwise the composite's `layerNorm` then `h·(scale + 1) + shift`.
/// - gatedResidual, biasGeluTanh: one SIMD16 pass per row.
/// Per-item column sums (dshift, dscale, dgate) and dbias are taken over fixed chunks of rows that never cross
/// an item (tasks = items × token chunks), each task into its own partial row, then added in task order:
/// bitwise identical whatever the thread count (STYLE R13).
extension CPUBackend {
    public func modulatedLayerNormForward(_ x: Buffer, shift: Buffer, scale: Buffer, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                          batch: Int, tokens: Int, cols: Int, eps: Double, roundedScale: Buffer?) {
        require(y.dtype == x.dtype, "modulatedLayerNorm on the CPU: \(y.dtype) output for \(x.dtype) input (bf16 output is CUDA's)")
        if let roundedScale {                                  // rounded first, then the forward on the rounded scale
            roundThrough(scale, roundedScale, low: .bfloat16, count: batch * cols, shift: 1)
            return modulatedLayerNormForward(x, shift: shift, scale: roundedScale, y, mean: mean, rstd: rstd, batch: batch,
                                             tokens: tokens, cols: cols, eps: eps, roundedScale: nil)
        }
        switch x.dtype {
        case .float32:
            modulatedLayerNormForward(x.pointer(Float.self), shift.pointer(Float.self), scale.pointer(Float.self), y.pointer(Float.self),
                                      mean.pointer(Float.self), rstd.pointer(Float.self), batch, tokens, cols, Float(eps))
        case .float64:
            modulatedLayerNormForward(x.pointer(Double.self), shift.pointer(Double.self), scale.pointer(Double.self),
                                      y.pointer(Double.self), mean.pointer(Double.self), rstd.pointer(Double.self),
                                      batch, tokens, cols, eps)
        default: fatalError("modulatedLayerNormForward: unsupported dtype \(x.dtype)")
        }
    }

    public func modulatedLayerNormBackward(_ x: Buffer, scale: Buffer, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                           residual: Buffer?, dshift: Buffer?, dscale: Buffer?, batch: Int, tokens: Int, cols: Int,
                                           dscaleLow: DType?) {
        switch x.dtype {
        case .float32:
            modulatedLayerNormBackward(x.pointer(Float.self), scale.pointer(Float.self), mean.pointer(Float.self),
                                       rstd.pointer(Float.self), dy.pointer(Float.self), dx.pointer(Float.self),
                                       dshift?.pointer(Float.self), dscale?.pointer(Float.self), batch, tokens, cols)
        case .float64:
            modulatedLayerNormBackward(x.pointer(Double.self), scale.pointer(Double.self), mean.pointer(Double.self),
                                       rstd.pointer(Double.self), dy.pointer(Double.self), dx.pointer(Double.self),
                                       dshift?.pointer(Double.self), dscale?.pointer(Double.self), batch, tokens, cols)
        default: fatalError("modulatedLayerNormBackward: unsupported dtype \(x.dtype)")
        }
        if let residual { binary(.add, residual, [1], dx, [1], dx, shape: [batch * tokens * cols]) }
        if let dscaleLow, let dscale { roundThrough(dscale, dscale, low: dscaleLow, count: batch * cols, shift: 0) }
    }

    public func gatedResidualForward(_ x: Buffer, gate: Buffer, _ y: Buffer, _ out: Buffer, batch: Int, tokens: Int, cols: Int,
                                     low: DType?) {
        if let low {
            return gatedResidualForwardLow(x.pointer(Float.self), gate.pointer(Float.self), y.pointer(Float.self),
                                           out.pointer(Float.self), batch * tokens, tokens, cols, low)
        }
        switch x.dtype {
        case .float32:
            gatedResidualForward(x.pointer(Float.self), gate.pointer(Float.self), y.pointer(Float.self), out.pointer(Float.self),
                                 batch * tokens, tokens, cols)
        case .float64:
            gatedResidualForward(x.pointer(Double.self), gate.pointer(Double.self), y.pointer(Double.self),
                                 out.pointer(Double.self), batch * tokens, tokens, cols)
        default: fatalError("gatedResidualForward: unsupported dtype \(x.dtype)")
        }
    }

    public func gatedResidualBackward(gate: Buffer, _ y: Buffer, _ dout: Buffer, dy: Buffer?, dgate: Buffer?,
                                      batch: Int, tokens: Int, cols: Int, low: DType?) {
        if let low {
            return gatedResidualBackwardLow(gate.pointer(Float.self), y.pointer(Float.self), dout.pointer(Float.self),
                                            dy?.pointer(Float.self), dgate?.pointer(Float.self), batch, tokens, cols, low)
        }
        switch y.dtype {
        case .float32:
            gatedResidualBackward(gate.pointer(Float.self), y.pointer(Float.self), dout.pointer(Float.self),
                                  dy?.pointer(Float.self), dgate?.pointer(Float.self), batch, tokens, cols)
        case .float64:
            gatedResidualBackward(gate.pointer(Double.self), y.pointer(Double.self), dout.pointer(Double.self),
                                  dy?.pointer(Double.self), dgate?.pointer(Double.self), batch, tokens, cols)
        default: fatalError("gatedResidualBackward: unsupported dtype \(y.dtype)")
        }
    }

    public func biasGeluTanhForward(_ x: Buffer, bias: Buffer, _ y: Buffer, rows: Int, cols: Int) {
        switch x.dtype {
        case .float32:
            biasGeluTanhForward(x.pointer(Float.self), bias.pointer(Float.self), y.pointer(Float.self), rows, cols)
        case .float64:
            biasGeluTanhForward(x.pointer(Double.self), bias.pointer(Double.self), y.pointer(Double.self), rows, cols)
        default: fatalError("biasGeluTanhForward: unsupported dtype \(x.dtype)")
        }
    }

    public func biasGeluTanhBackward(_ x: Buffer, bias: Buffer, _ dy: Buffer, dx: Buffer, dbias: Buffer?, rows: Int, cols: Int) {
        switch x.dtype {
        case .float32:
            biasGeluTanhBackward(x.pointer(Float.self), bias.pointer(Float.self), dy.pointer(Float.self), dx.pointer(Float.self),
                                 dbias?.pointer(Float.self), rows, cols)
        case .float64:
            biasGeluTanhBackward(x.pointer(Double.self), bias.pointer(Double.self), dy.pointer(Double.self),
                                 dx.pointer(Double.self), dbias?.pointer(Double.self), rows, cols)
        default: fatalError("biasGeluTanhBackward: unsupported dtype \(x.dtype)")
        }
    }

    // MARK: modulatedLayerNorm

    private func modulatedLayerNormForward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ shift: UnsafeMutablePointer<T>,
                                                           _ scale: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
                                                           _ mean: UnsafeMutablePointer<T>, _ rstd: UnsafeMutablePointer<T>,
                                                           _ batch: Int, _ tokens: Int, _ cols: Int, _ eps: T) {
        let onePlus = onePlusTable(scale, batch * cols)
        defer { onePlus.deallocate() }
        let px = SendablePointer(x), py = SendablePointer(y), pm = SendablePointer(mean), pr = SendablePointer(rstd)
        let pw = SendablePointer(onePlus), pb = SendablePointer(shift)
        Parallel.chunks(batch * tokens, chunk: fusedChunk(cols)) { range in
            for r in range {
                let xr = px.base + r * cols, item = r / tokens
                let (m, v) = rowMoments(xr, cols)
                let rs = 1 / T.sqrt(v + eps)
                pm.base[r] = m
                pr.base[r] = rs
                normalizeRow(xr, py.base + r * cols, cols, m, rs, pw.base + item * cols, pb.base + item * cols)
            }
        }
    }

    private func modulatedLayerNormBackward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ scale: UnsafeMutablePointer<T>,
                                                            _ mean: UnsafeMutablePointer<T>, _ rstd: UnsafeMutablePointer<T>,
                                                            _ dy: UnsafeMutablePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                                            _ dshift: UnsafeMutablePointer<T>?, _ dscale: UnsafeMutablePointer<T>?,
                                                            _ batch: Int, _ tokens: Int, _ cols: Int) {
        let onePlus = onePlusTable(scale, batch * cols)
        defer { onePlus.deallocate() }
        let plan = ItemChunks(batch: batch, tokens: tokens, chunk: fusedChunk(cols))
        let wanted = dshift != nil || dscale != nil
        // Per-task partial [Σ dy·x̂ | Σ dy] rows, zeroed.
        let partials: UnsafeMutablePointer<T>? = wanted ? .allocate(capacity: plan.tasks * 2 * cols) : nil
        partials?.initialize(repeating: 0, count: plan.tasks * 2 * cols)
        defer { partials?.deallocate() }
        let px = SendablePointer(x), pm = SendablePointer(mean), pr = SendablePointer(rstd)
        let pdy = SendablePointer(dy), pdx = SendablePointer(dx), pw = SendablePointer(onePlus)
        let pp = partials.map(SendablePointer.init)
        plan.run { task, rows, item in
            let part = pp.map { $0.base + task * 2 * cols }
            for r in rows {
                let o = r * cols
                layerNormBackwardRow(px.base + o, pdy.base + o, pdx.base + o, cols, pm.base[r], pr.base[r],
                                     pw.base + item * cols, part, part.map { $0 + cols })
            }
        }
        guard let partials else { return }
        plan.reduce(partials, lanes: 2, cols: cols, into: [dscale, dshift])
    }

    /// 1 + scale, elementwise, into a fresh buffer (the caller deallocates): the composite's `scale + 1`.
    private func onePlusTable<T: KernelFloat>(_ scale: UnsafeMutablePointer<T>, _ count: Int) -> UnsafeMutablePointer<T> {
        let t = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(count, 1))
        for i in 0..<count { t[i] = scale[i] + 1 }
        return t
    }

    // MARK: gatedResidual

    private func gatedResidualForward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ gate: UnsafeMutablePointer<T>,
                                                      _ y: UnsafeMutablePointer<T>, _ out: UnsafeMutablePointer<T>,
                                                      _ rows: Int, _ tokens: Int, _ cols: Int) {
        let px = SendablePointer(x), pg = SendablePointer(gate), py = SendablePointer(y), po = SendablePointer(out)
        Parallel.chunks(rows, chunk: fusedChunk(cols)) { range in
            for r in range {
                let o = r * cols, g = pg.base + (r / tokens) * cols
                let xr = px.base + o, yr = py.base + o, outr = po.base + o
                var i = 0
                while i + 16 <= cols {
                    storeSIMD16(loadSIMD16(xr, i) + loadSIMD16(g, i) * loadSIMD16(yr, i), outr, i)
                    i += 16
                }
                while i < cols { outr[i] = xr[i] + g[i] * yr[i]; i += 1 }
            }
        }
    }

    private func gatedResidualBackward<T: KernelFloat>(_ gate: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
                                                       _ dout: UnsafeMutablePointer<T>, _ dy: UnsafeMutablePointer<T>?,
                                                       _ dgate: UnsafeMutablePointer<T>?, _ batch: Int, _ tokens: Int, _ cols: Int) {
        let pg = SendablePointer(gate), py = SendablePointer(y), pd = SendablePointer(dout), pdy = dy.map(SendablePointer.init)
        gatedBackwardTasks(dgate, batch, tokens, cols) { rows, item, part in
            let g = pg.base + item * cols, dyBase = pdy?.base
            for r in rows {
                let o = r * cols
                let yr = py.base + o, dr = pd.base + o
                var i = 0
                while i + 16 <= cols {
                    let d = loadSIMD16(dr, i)
                    if let dyBase { storeSIMD16(loadSIMD16(g, i) * d, dyBase + o, i) }    // loop-invariant branches
                    if let part { storeSIMD16(loadSIMD16(part, i) + d * loadSIMD16(yr, i), part, i) }
                    i += 16
                }
                while i < cols {
                    dyBase?[o + i] = g[i] * dr[i]
                    part?[i] += dr[i] * yr[i]
                    i += 1
                }
            }
        }
    }

    /// gatedResidual's backward frame: the items' token chunks as tasks, `body(rows, item, partials)` per task (its
    /// row of column partials, nil when dgate is not wanted), then the partials summed in chunk order into dgate.
    private func gatedBackwardTasks<T: KernelFloat>(_ dgate: UnsafeMutablePointer<T>?, _ batch: Int, _ tokens: Int, _ cols: Int,
                                                    _ body: (Range<Int>, Int, UnsafeMutablePointer<T>?) -> Void) {
        let plan = ItemChunks(batch: batch, tokens: tokens, chunk: fusedChunk(cols))
        let partials: UnsafeMutablePointer<T>? = dgate == nil ? nil : .allocate(capacity: plan.tasks * cols)
        partials?.initialize(repeating: 0, count: plan.tasks * cols)
        defer { partials?.deallocate() }
        let pp = partials.map(SendablePointer.init)
        plan.run { task, rows, item in body(rows, item, pp.map { $0.base + task * cols }) }
        guard let partials else { return }
        plan.reduce(partials, lanes: 1, cols: cols, into: [dgate])
    }

    /// float32 → `low` (bfloat16/float16) → float32, as `roundThrough` converts.
    @inline(__always) private func roundLow(_ v: Float, _ low: DType) -> Float {
        low == .bfloat16 ? CPUBackend.roundedThrough(CastBF16.self, v) : CPUBackend.roundedThrough(CastF16.self, v)
    }

    /// out = x + low(gate·y) (Autocast's carriers), scalar: the GPU's fused path; the CPU trains with the composite.
    private func gatedResidualForwardLow(_ x: UnsafeMutablePointer<Float>, _ gate: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                         _ out: UnsafeMutablePointer<Float>, _ rows: Int, _ tokens: Int, _ cols: Int, _ low: DType) {
        let px = SendablePointer(x), pg = SendablePointer(gate), py = SendablePointer(y), po = SendablePointer(out)
        Parallel.chunks(rows, chunk: fusedChunk(cols)) { range in
            for r in range {
                let o = r * cols, g = pg.base + (r / tokens) * cols
                for i in 0..<cols { po.base[o + i] = px.base[o + i] + self.roundLow(g[i] * py.base[o + i], low) }
            }
        }
    }

    /// d̃ = low(dout), dy = gate·d̃, dgate = Σ_t low(d̃·y) in the fused chunk order.
    private func gatedResidualBackwardLow(_ gate: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                          _ dout: UnsafeMutablePointer<Float>, _ dy: UnsafeMutablePointer<Float>?,
                                          _ dgate: UnsafeMutablePointer<Float>?, _ batch: Int, _ tokens: Int, _ cols: Int, _ low: DType) {
        let pg = SendablePointer(gate), py = SendablePointer(y), pd = SendablePointer(dout), pdy = dy.map(SendablePointer.init)
        gatedBackwardTasks(dgate, batch, tokens, cols) { rows, item, part in
            let g = pg.base + item * cols
            for r in rows {
                let o = r * cols
                for i in 0..<cols {
                    let d = self.roundLow(pd.base[o + i], low)
                    pdy?.base[o + i] = d * g[i]
                    part?[i] += self.roundLow(d * py.base[o + i], low)
                }
            }
        }
    }

    // MARK: biasGeluTanh

    private func biasGeluTanhForward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ bias: UnsafeMutablePointer<T>,
                                                     _ y: UnsafeMutablePointer<T>, _ rows: Int, _ cols: Int) {
        let px = SendablePointer(x), pb = SendablePointer(bias), py = SendablePointer(y)
        Parallel.chunks(rows, chunk: fusedChunk(cols)) { range in
            for r in range { biasGeluRow(px.base + r * cols, pb.base, py.base + r * cols, cols) }
        }
    }

    private func biasGeluTanhBackward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ bias: UnsafeMutablePointer<T>,
                                                      _ dy: UnsafeMutablePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                                      _ dbias: UnsafeMutablePointer<T>?, _ rows: Int, _ cols: Int) {
        let plan = ItemChunks(batch: 1, tokens: rows, chunk: fusedChunk(cols))
        let partials: UnsafeMutablePointer<T>? = dbias == nil ? nil : .allocate(capacity: plan.tasks * cols)
        partials?.initialize(repeating: 0, count: plan.tasks * cols)
        defer { partials?.deallocate() }
        let px = SendablePointer(x), pb = SendablePointer(bias), pdy = SendablePointer(dy), pdx = SendablePointer(dx)
        let pp = partials.map(SendablePointer.init)
        plan.run { task, range, _ in
            let part = pp.map { $0.base + task * cols }
            for r in range {
                let o = r * cols
                biasGeluBackwardRow(px.base + o, pb.base, pdy.base + o, pdx.base + o, part, cols)
            }
        }
        guard let partials else { return }
        plan.reduce(partials, lanes: 1, cols: cols, into: [dbias])
    }

    /// Rows per chunk: about `Parallel.defaultChunk` elements, fixed by the shape only.
    private func fusedChunk(_ cols: Int) -> Int { Swift.max(1, Parallel.defaultChunk / Swift.max(cols, 1)) }
}

/// Fixed tasks over [batch·tokens] rows: each item's tokens split into chunks of `chunk` rows, so no task crosses
/// an item; task k = item·perItem + chunk index. Depends on the shape only.
struct ItemChunks {
    let batch: Int, tokens: Int, chunk: Int, perItem: Int
    var tasks: Int { batch * perItem }

    init(batch: Int, tokens: Int, chunk: Int) {
        self.batch = batch
        self.tokens = tokens
        self.chunk = chunk
        perItem = (tokens + chunk - 1) / chunk
    }

    /// body(task, rows, item), tasks in parallel.
    func run(_ body: (Int, Range<Int>, Int) -> Void) {
        let perItem = perItem, tokens = tokens, chunk = chunk
        Parallel.forEach(tasks) { k in
            let item = k / perItem, c = k % perItem
            let lo = item * tokens + c * chunk, hi = item * tokens + Swift.min(tokens, (c + 1) * chunk)
            body(k, lo..<hi, item)
        }
    }

    /// outs[l][item, j] = Σ_c partials[(item·perItem + c)·lanes + l][j], chunks in order (an empty item gets 0).
    func reduce<T: KernelFloat>(_ partials: UnsafeMutablePointer<T>, lanes: Int, cols: Int,
                                into outs: [UnsafeMutablePointer<T>?]) {
        for (l, out) in outs.enumerated() {
            guard let out else { continue }
            for item in 0..<batch {
                let o = out + item * cols
                if perItem == 0 { o.initialize(repeating: 0, count: cols); continue }
                o.update(from: partials + ((item * perItem) * lanes + l) * cols, count: cols)
                for c in 1..<Swift.max(perItem, 1) {
                    let p = partials + ((item * perItem + c) * lanes + l) * cols
                    var j = 0
                    while j + 16 <= cols { storeSIMD16(loadSIMD16(o, j) + loadSIMD16(p, j), o, j); j += 16 }
                    while j < cols { o[j] += p[j]; j += 1 }
                }
            }
        }
    }
}

/// y = geluTanh(x + b) for one row: SIMD16 through CPUMath's vtanh for float32 (as the `geluTanh` kernel), the
/// scalar formula otherwise and in the tail.
@inline(__always)
func biasGeluRow<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ b: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int) {
    let fn = GeluTanhF()
    var i = 0
    if T.self == Float.self {
        let fx = UnsafeMutableRawPointer(x).assumingMemoryBound(to: Float.self)
        let fb = UnsafeMutableRawPointer(b).assumingMemoryBound(to: Float.self)
        let fy = UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self)
        if let (level, act) = fn.vectorKernel { i = haste_act_forward_f32(level, act, fx, fb, fy, n) }
        while i + 16 <= n { storeSIMD16(fn.vf(loadSIMD16(fx, i) + loadSIMD16(fb, i)), fy, i); i += 16 }
    }
    while i < n { y[i] = fn.f(x[i] + b[i]); i += 1 }
}

/// dx = dy·geluTanh′(x + b) for one row, added into `part` (dbias partial) when given.
@inline(__always)
func biasGeluBackwardRow<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ b: UnsafeMutablePointer<T>, _ dy: UnsafeMutablePointer<T>,
                                         _ dx: UnsafeMutablePointer<T>, _ part: UnsafeMutablePointer<T>?, _ n: Int) {
    let fn = GeluTanhF()
    var i = 0
    if T.self == Float.self {
        let fx = UnsafeMutableRawPointer(x).assumingMemoryBound(to: Float.self)
        let fb = UnsafeMutableRawPointer(b).assumingMemoryBound(to: Float.self)
        let fg = UnsafeMutableRawPointer(dy).assumingMemoryBound(to: Float.self)
        let fd = UnsafeMutableRawPointer(dx).assumingMemoryBound(to: Float.self)
        let fp = part.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) }
        if let (level, act) = fn.vectorKernel { i = haste_act_backward_f32(level, act, fx, fb, fg, fd, fp, n) }
        while i + 16 <= n {
            let u = loadSIMD16(fx, i) + loadSIMD16(fb, i)
            let d = loadSIMD16(fg, i) * fn.vdf(u, u)          // vdf ignores its y argument
            storeSIMD16(d, fd, i)
            if let fp { storeSIMD16(loadSIMD16(fp, i) + d, fp, i) }
            i += 16
        }
    }
    while i < n {
        let u = x[i] + b[i]
        let d = dy[i] * fn.df(u, u)                             // df ignores its y argument
        dx[i] = d
        part?[i] += d
        i += 1
    }
}
