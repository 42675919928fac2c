@testable import HasteTensor
@testable import HasteCUDA

/// The driver seam's GEMM on the host (`haste_emu_gemm`), with cuBLAS's argument checks.
extension EmulatedDriver {
    func gemm(_ g: GemmDescriptor) {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        if let problem = gemmProblem(g) { return report("gemm \(g): \(problem)") }
        if g.m == 0 || g.n == 0 || g.batch == 0 { return }
        let runtime: EmulatorModule
        do { runtime = try EmulatorCompiler.runtimeModule(extraFlags: extraFlags) } catch { return report("gemm: \(error)") }
        func pointer(_ p: DevicePointer) -> UnsafeMutablePointer<Float>? { UnsafeMutablePointer(bitPattern: UInt(p)) }
        if g.inputs == .float32 && g.output == .float32 {
            return runtime.gemm(g.transA ? 1 : 0, g.transB ? 1 : 0, g.m, g.n, g.k, g.alpha, g.beta, pointer(g.a), g.lda, g.strideA,
                                pointer(g.b), g.ldb, g.strideB, pointer(g.c), g.ldc, g.strideC, g.batch)
        }
        // GemmEx, float32 compute: bf16 operands (and a bf16 C) widen exactly, the float32 GEMM runs, a bf16 C is
        // rounded to nearest even from its float32 result.
        EmulatedDriver.bf16GemmTally?.count += 1
        let e = gemmExtents(g)
        let a = Self.widened(g.a, e.a, g.inputs), b = Self.widened(g.b, e.b, g.inputs)
        var c = Self.widened(g.c, e.c, g.output)
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
            runtime.gemm(g.transA ? 1 : 0, g.transB ? 1 : 0, g.m, g.n, g.k, g.alpha, g.beta, pa.baseAddress, g.lda, g.strideA,
                         pb.baseAddress, g.ldb, g.strideB, pc.baseAddress, g.ldc, g.strideC, g.batch)
        } } }
        if g.output == .float32 { return pointer(g.c)!.update(from: c, count: e.c) }
        let out = UnsafeMutablePointer<UInt16>(bitPattern: UInt(g.c))!
        for p in 0..<g.batch { for j in 0..<g.n { for i in 0..<g.m {   // C's elements only
            let at = p * g.strideC + j * g.ldc + i
            out[at] = c[at].bfloat16Bits
        } } }
    }

    /// The epilogue GEMMs (cuBLASLt's semantics as `GemmEpilogue` states them), on the host: the float32 result
    /// (with a bias, the bias written into every column of a float32 C and the GEMM run with beta 1, which adds it
    /// before C's one rounding, as the composite), then the epilogue per element with `GeluTanhF`'s float32 formulas
    /// and sums in row order. Counted in the task's `BiasGemmTally`, which may also turn them down (`refuses`: the
    /// caller's fallback is then what runs).
    func gemm(_ g: GemmDescriptor, epilogue: GemmEpilogue) -> Bool {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        if let tally = EmulatedDriver.biasGemmTally {
            if tally.refuses || tally.refusedLabels.contains(epilogue.label) { return false }
            tally.count += 1
            tally.labels[epilogue.label, default: 0] += 1
        }
        guard g.batch == 1 && g.beta == 0 else { report("gemm with an epilogue, batch \(g.batch), beta \(g.beta) (must be 1 and 0)"); return true }
        if g.inputs == .bfloat16 { EmulatedDriver.bf16GemmTally?.count += 1 }   // a bf16 GEMM all the same
        if let problem = gemmProblem(g) { report("gemm \(g): \(problem)"); return true }
        let size = g.output.byteSize
        let (vector, aux) = EpilogueGemms.pointers(epilogue)
        let vectorCount: Int
        if case .biasGradientB = epilogue { vectorCount = g.n } else { vectorCount = g.m }
        for (name, p, bytes) in [("vector", vector, vectorCount * size), ("aux", aux, ((g.n - 1) * g.ldc + g.m) * size)] where p != 0 {
            if let problem = rangeProblem(p, bytes) { report("gemm with epilogue \(epilogue.label): the \(name): \(problem)"); return true }
            if p % UInt64(size) != 0 { report("gemm with epilogue \(epilogue.label): the \(name) is not \(size)-byte aligned"); return true }
        }
        let runtime: EmulatorModule
        do { runtime = try EmulatorCompiler.runtimeModule(extraFlags: extraFlags) } catch { report("gemm: \(error)"); return true }
        func load(_ p: DevicePointer, _ i: Int) -> Float {
            size == 2 ? Float(bitPattern: UInt32(UnsafePointer<UInt16>(bitPattern: UInt(p))![i]) << 16)
                      : UnsafePointer<Float>(bitPattern: UInt(p))![i]
        }
        func store(_ p: DevicePointer, _ i: Int, _ v: Float) {
            if size == 2 { UnsafeMutablePointer<UInt16>(bitPattern: UInt(p))![i] = v.bfloat16Bits }
            else { UnsafeMutablePointer<Float>(bitPattern: UInt(p))![i] = v }
        }
        // acc (+ bias) in float32, column-major with ld = ldc.
        let e = gemmExtents(g)
        let a = Self.widened(g.a, e.a, g.inputs), b = Self.widened(g.b, e.b, g.inputs)
        var acc = [Float](repeating: 0, count: e.c)
        var beta: Float = 0
        switch epilogue {
        case let .bias(bias), let .geluBias(bias, _):
            for j in 0..<g.n { for i in 0..<g.m { acc[j * g.ldc + i] = load(bias, i) } }
            beta = 1
        default: break
        }
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in acc.withUnsafeMutableBufferPointer { pc in
            runtime.gemm(g.transA ? 1 : 0, g.transB ? 1 : 0, g.m, g.n, g.k, g.alpha, beta, pa.baseAddress, g.lda, 0,
                         pb.baseAddress, g.ldb, 0, pc.baseAddress, g.ldc, 0, 1)
        } } }
        let gelu = GeluTanhF()
        var sums = [Float](repeating: 0, count: g.m)
        for j in 0..<g.n {
            for i in 0..<g.m {
                let at = j * g.ldc + i, u = acc[at]
                switch epilogue {
                case .bias, .biasGradientB: store(g.c, at, u)
                case let .geluBias(_, preActivation):
                    if let preActivation { store(preActivation, at, u) }
                    store(g.c, at, gelu.f(u))
                case let .dgelu(preActivation, _):
                    let h = load(preActivation, at), d = u * gelu.df(h, h)
                    sums[i] += d
                    store(g.c, at, d)
                }
            }
        }
        switch epilogue {
        case let .dgelu(_, biasGradient?):
            for i in 0..<g.m { store(biasGradient, i, sums[i]) }
        case let .biasGradientB(biasGradient):
            // Σ_k op(B)[k, j]: B stored k×n (ldb) without a transpose, n×k with one.
            for j in 0..<g.n {
                var s: Float = 0
                for k in 0..<g.k { s += b[g.transB ? k * g.ldb + j : j * g.ldb + k] }
                store(biasGradient, j, s)
            }
        default: break
        }
        return true
    }

    /// `count` elements at device address p as float32: bf16 widened exactly, float32 as they are.
    static func widened(_ p: DevicePointer, _ count: Int, _ dtype: DType) -> [Float] {
        guard dtype == .bfloat16 else { return Array(UnsafeBufferPointer(start: UnsafePointer<Float>(bitPattern: UInt(p)), count: count)) }
        let bits = UnsafeBufferPointer(start: UnsafePointer<UInt16>(bitPattern: UInt(p)), count: count)
        return bits.map { Float(bitPattern: UInt32($0) << 16) }
    }

    /// Elements of A, B and C (column-major, as stored) from their addresses to the last one the GEMM touches.
    func gemmExtents(_ g: GemmDescriptor) -> (a: Int, b: Int, c: Int) {
        let (rowsA, colsA) = g.transA ? (g.k, g.m) : (g.m, g.k)
        let (rowsB, colsB) = g.transB ? (g.n, g.k) : (g.k, g.n)
        func extent(_ rows: Int, _ cols: Int, _ ld: Int, _ stride: Int) -> Int {
            rows == 0 || cols == 0 || g.batch == 0 ? 0 : (g.batch - 1) * stride + (cols - 1) * ld + rows
        }
        return (extent(rowsA, colsA, g.lda, g.strideA), extent(rowsB, colsB, g.ldb, g.strideB), extent(g.m, g.n, g.ldc, g.strideC))
    }

    /// cuBLAS's argument rules (CUBLAS_STATUS_INVALID_VALUE) and every operand's extent inside its allocation.
    func gemmProblem(_ g: GemmDescriptor) -> String? {
        if g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0 { return "negative size" }
        guard GemmDescriptor.supports(inputs: g.inputs, output: g.output) else { return "\(g.inputs) → \(g.output): not a cuBLAS combination haste uses" }
        if g.strideA < 0 || g.strideB < 0 || g.strideC < 0 { return "negative batch stride" }
        let (rowsA, _) = g.transA ? (g.k, g.m) : (g.m, g.k)
        let (rowsB, _) = g.transB ? (g.n, g.k) : (g.k, g.n)
        if g.lda < Swift.max(1, rowsA) { return "lda \(g.lda) < \(Swift.max(1, rowsA)) (rows of A as stored)" }
        if g.ldb < Swift.max(1, rowsB) { return "ldb \(g.ldb) < \(Swift.max(1, rowsB)) (rows of B as stored)" }
        if g.ldc < Swift.max(1, g.m) { return "ldc \(g.ldc) < \(Swift.max(1, g.m)) (rows of C)" }
        if g.m == 0 || g.n == 0 || g.batch == 0 { return nil }
        let e = gemmExtents(g)
        let operands = [("A", g.a, e.a * g.inputs.byteSize, g.inputs.byteSize), ("B", g.b, e.b * g.inputs.byteSize, g.inputs.byteSize),
                        ("C", g.c, e.c * g.output.byteSize, g.output.byteSize)]
        for (name, address, bytes, size) in operands where bytes > 0 || name == "C" {
            if let p = rangeProblem(address, bytes) { return "operand \(name): \(p)" }
            if address % UInt64(size) != 0 { return "operand \(name) is not \(size)-byte aligned" }
        }
        return nil
    }
}
