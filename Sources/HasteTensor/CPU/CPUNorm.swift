/// LayerNorm kernels (hot: [N·T, D] rows in every transformer block). Forward, per row: the moments
/// (`rowMoments`, CPUMoments.swift: blockwise two-pass, cascaded Chan merges), one SIMD16 pass writing y; the
/// row stays in L1, so x is read from memory once. Rows run in parallel over fixed chunks (STYLE R13). Backward: per row, one SIMD16
/// pass for Σg and Σg·x̂, one writing dx and adding dweight/dbias into per-chunk partial rows, which are then
/// summed in chunk order — bitwise identical whatever the thread count.
extension CPUBackend {
    public func layerNormForward(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, mean: Buffer, rstd: Buffer,
                                 rows: Int, cols: Int, eps: Double) {
        switch x.dtype {
        case .float32:
            layerNormForward(x.pointer(Float.self), weight?.pointer(Float.self), bias?.pointer(Float.self), y.pointer(Float.self),
                             mean.pointer(Float.self), rstd.pointer(Float.self), rows, cols, Float(eps))
        case .float64:
            layerNormForward(x.pointer(Double.self), weight?.pointer(Double.self), bias?.pointer(Double.self),
                             y.pointer(Double.self), mean.pointer(Double.self), rstd.pointer(Double.self), rows, cols, eps)
        default: fatalError("layerNormForward: unsupported dtype \(x.dtype)")
        }
    }

    public func layerNormBackward(_ x: Buffer, weight: Buffer?, mean: Buffer, rstd: Buffer, _ dy: Buffer, dx: Buffer,
                                  dweight: Buffer?, dbias: Buffer?, rows: Int, cols: Int) {
        switch x.dtype {
        case .float32:
            layerNormBackward(x.pointer(Float.self), weight?.pointer(Float.self), mean.pointer(Float.self), rstd.pointer(Float.self),
                              dy.pointer(Float.self), dx.pointer(Float.self), dweight?.pointer(Float.self),
                              dbias?.pointer(Float.self), rows, cols)
        case .float64:
            layerNormBackward(x.pointer(Double.self), weight?.pointer(Double.self), mean.pointer(Double.self),
                              rstd.pointer(Double.self), dy.pointer(Double.self), dx.pointer(Double.self),
                              dweight?.pointer(Double.self), dbias?.pointer(Double.self), rows, cols)
        default: fatalError("layerNormBackward: unsupported dtype \(x.dtype)")
        }
    }

    private func layerNormForward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ w: UnsafeMutablePointer<T>?,
                                                  _ b: UnsafeMutablePointer<T>?, _ y: UnsafeMutablePointer<T>,
                                                  _ mean: UnsafeMutablePointer<T>, _ rstd: UnsafeMutablePointer<T>,
                                                  _ rows: Int, _ cols: Int, _ eps: T) {
        let px = SendablePointer(x), py = SendablePointer(y), pm = SendablePointer(mean), pr = SendablePointer(rstd)
        let pw = w.map(SendablePointer.init), pb = b.map(SendablePointer.init)
        Parallel.chunks(rows, chunk: layerNormChunk(cols)) { range in
            let w = pw?.base, b = pb?.base
            for r in range {
                let xr = px.base + r * cols
                let (m, v) = rowMoments(xr, cols)
                let rs = 1 / T.sqrt(v + eps)
                pm.base[r] = m
                pr.base[r] = rs
                normalizeRow(xr, py.base + r * cols, cols, m, rs, w, b)
            }
        }
    }

    private func layerNormBackward<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ w: UnsafeMutablePointer<T>?,
                                                   _ mean: UnsafeMutablePointer<T>, _ rstd: UnsafeMutablePointer<T>,
                                                   _ dy: UnsafeMutablePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                                   _ dw: UnsafeMutablePointer<T>?, _ db: UnsafeMutablePointer<T>?,
                                                   _ rows: Int, _ cols: Int) {
        let chunk = layerNormChunk(cols), chunks = (rows + chunk - 1) / chunk
        // Per-chunk partial [Σ dy·x̂ | Σ dy] rows, zeroed; only when a parameter gradient is wanted.
        let partials: UnsafeMutablePointer<T>? = dw == nil && db == nil ? nil : .allocate(capacity: chunks * 2 * cols)
        partials?.initialize(repeating: 0, count: chunks * 2 * cols)
        defer { partials?.deallocate() }
        let px = SendablePointer(x), pm = SendablePointer(mean), pr = SendablePointer(rstd)
        let pdy = SendablePointer(dy), pdx = SendablePointer(dx)
        let pw = w.map(SendablePointer.init), pp = partials.map(SendablePointer.init)
        Parallel.chunks(rows, chunk: chunk) { range in
            let w = pw?.base, part = pp.map { $0.base + (range.lowerBound / chunk) * 2 * cols }
            for r in range {
                let o = r * cols
                layerNormBackwardRow(px.base + o, pdy.base + o, pdx.base + o, cols, pm.base[r], pr.base[r], w,
                                     part, part.map { $0 + cols })
            }
        }
        guard let partials else { return }
        for (k, out) in [dw, db].enumerated() {
            guard let out else { continue }
            out.update(from: partials + k * cols, count: cols)
            for c in 1..<chunks {
                let p = partials + (c * 2 + k) * cols
                for j in 0..<cols { out[j] += p[j] }
            }
        }
    }

    /// NormKernels.groupNormInference: per (sample, group) row the layerNorm moments, then per channel one pass
    /// writing ((x − mean)·rstd)·weight[c] + bias[c], then SiLU over that channel's span while it is in cache. A
    /// missing weight is ·1 and a missing bias + (−0): IEEE identities, so the composite's bits without four loops.
    /// float32 with spatial a multiple of 16 only (the activation's 16-lane groups then fall where the whole-tensor
    /// pass puts them). Writes y once instead of four times, and touches no fresh pages for intermediates.
    public func groupNormInference(_ x: Buffer, weight: Buffer?, bias: Buffer?, _ y: Buffer, batch: Int, channels: Int,
                                   groups: Int, spatial: Int, eps: Double, silu: Bool) -> Bool {
        guard x.dtype == .float32, y.dtype == .float32, weight.map({ $0.dtype == .float32 }) ?? true,
              bias.map({ $0.dtype == .float32 }) ?? true, spatial % 16 == 0 else { return false }
        let cpg = channels / groups, cols = cpg * spatial, rows = batch * groups
        let px = SendablePointer(x.pointer(Float.self)), py = SendablePointer(y.pointer(Float.self))
        let pw = weight.map { SendablePointer($0.pointer(Float.self)) }, pb = bias.map { SendablePointer($0.pointer(Float.self)) }
        let kernel = silu ? SiluF().vectorKernel : nil, epsF = Float(eps)
        Parallel.chunks(rows, chunk: layerNormChunk(cols)) { range in
            for r in range {
                let xr = px.base + r * cols, yr = py.base + r * cols
                let (m, v) = rowMoments(xr, cols)
                let rs = 1 / Float.sqrt(v + epsF)                   // as layerNormForward
                let mv = FVec(repeating: m), rv = FVec(repeating: rs)
                for j in 0..<cpg {
                    let c = (r % groups) * cpg + j
                    let wv = FVec(repeating: pw?.base[c] ?? 1), bv = FVec(repeating: pb?.base[c] ?? -0.0)
                    let xs = xr + j * spatial, ys = yr + j * spatial
                    for i in stride(from: 0, to: spatial, by: 16) { storeSIMD16((loadSIMD16(xs, i) - mv) * rv * wv + bv, ys, i) }
                    if silu { floatLanes(SiluF(), kernel, ys, ys, spatial) }
                }
            }
        }
        return true
    }

    /// Rows per chunk: about `Parallel.defaultChunk` elements, fixed by the shape only.
    private func layerNormChunk(_ cols: Int) -> Int { max(1, Parallel.defaultChunk / cols) }
}

/// y = (x − m)·rs [·w] [+ b] for one row; the optional parameters pick one of four loops outside the loop.
@inline(__always)
func normalizeRow<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int, _ m: T, _ rs: T,
                                  _ w: UnsafeMutablePointer<T>?, _ b: UnsafeMutablePointer<T>?) {
    let mv = SIMD16<T>(repeating: m), rv = SIMD16<T>(repeating: rs)
    var i = 0
    switch (w, b) {
    case let (w?, b?):
        while i + 16 <= n { storeSIMD16((loadSIMD16(x, i) - mv) * rv * loadSIMD16(w, i) + loadSIMD16(b, i), y, i); i += 16 }
        while i < n { y[i] = (x[i] - m) * rs * w[i] + b[i]; i += 1 }
    case let (w?, nil):
        while i + 16 <= n { storeSIMD16((loadSIMD16(x, i) - mv) * rv * loadSIMD16(w, i), y, i); i += 16 }
        while i < n { y[i] = (x[i] - m) * rs * w[i]; i += 1 }
    case let (nil, b?):
        while i + 16 <= n { storeSIMD16((loadSIMD16(x, i) - mv) * rv + loadSIMD16(b, i), y, i); i += 16 }
        while i < n { y[i] = (x[i] - m) * rs + b[i]; i += 1 }
    case (nil, nil):
        while i + 16 <= n { storeSIMD16((loadSIMD16(x, i) - mv) * rv, y, i); i += 16 }
        while i < n { y[i] = (x[i] - m) * rs; i += 1 }
    }
}

/// One row of the LayerNorm backward: dx = rs·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w; adds dy·x̂ and dy
/// into the chunk's partial rows when given.
@inline(__always)
func layerNormBackwardRow<T: KernelFloat>(_ x: UnsafeMutablePointer<T>, _ dy: UnsafeMutablePointer<T>,
                                          _ dx: UnsafeMutablePointer<T>, _ n: Int, _ m: T, _ rs: T,
                                          _ w: UnsafeMutablePointer<T>?, _ dwPart: UnsafeMutablePointer<T>?,
                                          _ dbPart: UnsafeMutablePointer<T>?) {
    let mv = SIMD16<T>(repeating: m), rv = SIMD16<T>(repeating: rs)
    // Σg and Σg·x̂ per block of 16 vectors, blocks cascaded (CPUMoments.swift): long GroupNorm rows too.
    func block(_ start: Int, _ k: Int) -> (SIMD16<T>, SIMD16<T>) {
        var sg = SIMD16<T>(repeating: 0), sgx = SIMD16<T>(repeating: 0)
        for j in 0..<k {
            let i = start + 16 * j
            let xh = (loadSIMD16(x, i) - mv) * rv
            var g = loadSIMD16(dy, i)
            if let w { g *= loadSIMD16(w, i) }      // loop-invariant branch: unswitched by the optimiser
            sg += g
            sgx += g * xh
        }
        return (sg, sgx)
    }
    let vectors = n / 16, full = vectors / 16, rest = vectors % 16
    var (sg, sgx) = cascade(full, { block(256 * $0, 16) }, { ($0.0 + $1.0, $0.1 + $1.1) })
        ?? (SIMD16<T>(repeating: 0), SIMD16<T>(repeating: 0))
    if rest > 0 { let (g, gx) = block(256 * full, rest); sg += g; sgx += gx }
    var i = 16 * vectors
    var a = sg.sum(), c = sgx.sum()
    let tail = i
    while i < n {
        let xh = (x[i] - m) * rs
        var g = dy[i]
        if let w { g *= w[i] }
        a += g
        c += g * xh
        i += 1
    }
    a /= T(n)
    c /= T(n)
    let av = SIMD16<T>(repeating: a), cv = SIMD16<T>(repeating: c)
    i = 0
    while i < tail {
        let xh = (loadSIMD16(x, i) - mv) * rv, d = loadSIMD16(dy, i)
        var g = d
        if let w { g *= loadSIMD16(w, i) }
        storeSIMD16(rv * (g - av - xh * cv), dx, i)
        if let dwPart { storeSIMD16(loadSIMD16(dwPart, i) + d * xh, dwPart, i) }
        if let dbPart { storeSIMD16(loadSIMD16(dbPart, i) + d, dbPart, i) }
        i += 16
    }
    while i < n {
        let xh = (x[i] - m) * rs, d = dy[i]
        var g = d
        if let w { g *= w[i] }
        dx[i] = rs * (g - a - xh * c)
        dwPart?[i] += d * xh
        dbPart?[i] += d
        i += 1
    }
}
