import HasteTensor
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
        func widened(_ p: DevicePointer, _ count: Int, _ dtype: DType) -> [Float] {
            guard dtype == .bfloat16 else { return Array(UnsafeBufferPointer(start: pointer(p), count: count)) }
            let bits = UnsafeBufferPointer(start: UnsafePointer<UInt16>(bitPattern: UInt(p)), count: count)
            return bits.map { Float(bitPattern: UInt32($0) << 16) }
        }
        let a = widened(g.a, e.a, g.inputs), b = widened(g.b, e.b, g.inputs)
        var c = widened(g.c, e.c, g.output)
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

    /// The bias-epilogue GEMM (cuBLASLt's semantics as `GPUDriver` states them): the bias written into every column
    /// of C, then the GEMM with beta 1, which adds it in float32 before C's one rounding. Counted in the task's
    /// `BiasGemmTally`, which may also turn it down (`refuses`: the caller's fallback is then what runs).
    func gemm(_ g: GemmDescriptor, addingBias bias: DevicePointer) -> Bool {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        if let tally = EmulatedDriver.biasGemmTally {
            if tally.refuses { return false }
            tally.count += 1
        }
        guard g.batch == 1 && g.beta == 0 else { report("gemm adding a bias with batch \(g.batch), beta \(g.beta) (must be 1 and 0)"); return true }
        let size = g.output.byteSize
        if let p = rangeProblem(bias, g.m * size) { report("gemm adding a bias: the bias (\(g.m) elements): \(p)"); return true }
        if bias % UInt64(size) != 0 { report("gemm adding a bias: the bias is not \(size)-byte aligned"); return true }
        if let problem = gemmProblem(g) { report("gemm \(g): \(problem)"); return true }
        let src = UnsafeRawPointer(bitPattern: UInt(bias))!, dst = UnsafeMutableRawPointer(bitPattern: UInt(g.c))!
        for j in 0..<g.n { (dst + j * g.ldc * size).copyMemory(from: src, byteCount: g.m * size) }
        var accumulate = g
        accumulate.beta = 1
        gemm(accumulate)
        return true
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
