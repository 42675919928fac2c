import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// The prelude's `haste_mma_bf16_16816` on the emulator (its warp-shuffle form) against a float64 product, with
/// the fragments built by a probe kernel straight from the PTX ISA formulas (§9.7.14.5.8, "Matrix Fragments for
/// mma.m16n8k16 with floating point type"): a_i at row g (i ∈ {0, 1, 4, 5}) or g + 8, column 2t + (i & 1) (+ 8 for
/// i ≥ 4); b_i at row 2t + (i & 1) (+ 8 for i ≥ 2), column g; c_i, d_i at row g (i < 2) or g + 8, column
/// 2t + (i & 1); element i in the low half of register i/2 when i is even. A function that maps any fragment
/// differently puts wrong products in the sums and misses the bound by orders of magnitude (checked below
/// against the references of three plausible wrong layouts).
///
/// Bound: every product of two bf16 is exact in float32, so d = c + Σ₁₆ a·b in float32 is within
/// 16·u·(|c| + Σ|a·b|) of the exact value in any summation order (u = 2⁻²⁴; 16 additions).
@Suite struct WarpMMATests {
    static let source = KernelSource(family: "mma-probe", kernels: ["mma_probe"], code: #"""
    /// One warp: A [16][16] and B [16 k][8 n] bf16 bits row-major, C and D [16][8] float32 row-major.
    extern "C" __global__ void mma_probe(const u16* a, const u16* b, const float* c, float* d) {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        u32 fa[4] = {0u, 0u, 0u, 0u}, fb[2] = {0u, 0u};
        float fc[4], fd[4];
        for (int i = 0; i < 8; i++) {
            const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
            const int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            fa[i / 2] |= (u32)a[row * 16 + col] << (16 * (i & 1));
        }
        for (int i = 0; i < 4; i++) {
            const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
            fb[i / 2] |= (u32)b[row * 8 + g] << (16 * (i & 1));
        }
        for (int i = 0; i < 4; i++) fc[i] = c[(i < 2 ? g : g + 8) * 8 + 2 * t + (i & 1)];
        haste_mma_bf16_16816(fd, fa, fb, fc);
        for (int i = 0; i < 4; i++) d[(i < 2 ? g : g + 8) * 8 + 2 * t + (i & 1)] = fd[i];
    }
    """#)

    static func bf16(_ bits: UInt16) -> Double { Double(Float(bitPattern: UInt32(bits) << 16)) }

    /// D = A·B + C in float64 with A and B read through `a(r, k)` and `b(k, n)`, and the bound above.
    static func reference(_ a: (Int, Int) -> Double, _ b: (Int, Int) -> Double, _ c: [Float]) -> (d: [Double], bound: [Double]) {
        var d = [Double](repeating: 0, count: 128), bound = d
        for r in 0..<16 {
            for n in 0..<8 {
                var s = Double(c[r * 8 + n]), mag = Swift.abs(s)
                for k in 0..<16 { s += a(r, k) * b(k, n); mag += Swift.abs(a(r, k) * b(k, n)) }
                d[r * 8 + n] = s
                bound[r * 8 + n] = 16 * 0x1p-24 * mag
            }
        }
        return (d, bound)
    }

    static func within(_ got: [Float], _ want: [Double], _ bound: [Double]) -> Bool {
        zip(zip(got, want), bound).allSatisfy { Swift.abs(Double($0.0) - $0.1) <= $1 }
    }

    @Test(arguments: [1, 2, 3]) func emulatedMMAMatchesTheDocumentedLayout(seed: Int) throws {
        var rng = SplitMix64(seed: UInt64(600 + seed))
        // bf16 values with spread exponents (products and sums that a wrong order or pairing would change).
        func values(_ n: Int) -> [UInt16] {
            (0..<n).map { _ in (rng.uniform(-1, 1) * Float(1 << rng.below(6)) / 8).bfloat16Bits }
        }
        let a = values(256), b = values(128)
        let c = (0..<128).map { _ in rng.uniform(-2, 2) }
        let d = EmulatedDriver.forTests()
        let f = try d.load(Self.source)
        let pa = d.upload(a), pb = d.upload(b), pc = d.upload(c), pd = d.allocate(byteCount: 128 * 4)!
        d.launch(f["mma_probe"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 0,
                 arguments: [.pointer(pa), .pointer(pb), .pointer(pc), .pointer(pd)])
        try d.synchronize()
        let got = d.download(pd, 128, as: Float.self)

        let A = { (r: Int, k: Int) in Self.bf16(a[r * 16 + k]) }, B = { (k: Int, n: Int) in Self.bf16(b[k * 8 + n]) }
        let ref = Self.reference(A, B, c)
        let worst = (0..<128).first { !(Swift.abs(Double(got[$0]) - ref.d[$0]) <= ref.bound[$0]) }
        #expect(worst == nil, "mma element \(worst ?? -1): \(worst.map { got[$0] } ?? 0) vs \(worst.map { ref.d[$0] } ?? 0)")
        // The bound tells layouts apart: A transposed, B read row-major as [8][16], A's k halves swapped.
        let wrong = [Self.reference({ A($1, $0) }, B, c),
                     Self.reference(A, { (k: Int, n: Int) in Self.bf16(b[n * 16 + k]) }, c),
                     Self.reference({ A($0, ($1 + 8) % 16) }, B, c)]
        for (i, w) in wrong.enumerated() { #expect(!Self.within(got, w.d, w.bound), "wrong layout \(i) passes the bound") }
    }

    /// `haste_ldmatrix_x4` (plain and TRANS) (the emulator's shuffle form) against the PTX ISA's ldmatrix fragments
    /// (§9.7.14.5.15): lane 8i + r gives row r of matrix i; lane l receives word l % 4 of row l / 4 of each matrix,
    /// or with .trans the b16 elements (2·(l % 4), l / 4) and (2·(l % 4) + 1, l / 4), the first in the low half.
    /// Four 8 × 8 b16 matrices in shared memory, rows 12 words apart (the flash tiles' padding), in scrambled order.
    static let ldmatrixSource = KernelSource(family: "ldmatrix-probe", kernels: ["ldmatrix_probe"], code: #"""
    extern "C" __global__ void ldmatrix_probe(const u32* src, u32* plain, u32* trans) {
        HASTE_DYNAMIC_SHARED(u32, sm);
        const int lane = threadIdx.x & 31;
        for (int w = lane; w < 32 * 12; w += 32) sm[w] = src[w];
        __syncwarp();
        const int order[4] = {2, 0, 3, 1};   /* matrix i lives in rows 8·order[i]… */
        const u32* row = sm + (8 * order[lane >> 3] + (lane & 7)) * 12 + 4;
        u32 d[4], e[4];
        haste_ldmatrix_x4(d, row);
        haste_ldmatrix_x4<true>(e, row);
        for (int i = 0; i < 4; i++) { plain[4 * lane + i] = d[i]; trans[4 * lane + i] = e[i]; }
    }
    """#)

    @Test func emulatedLdmatrixMatchesTheDocumentedLayout() throws {
        var rng = SplitMix64(seed: 77)
        let src = (0..<(32 * 12)).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        let d = EmulatedDriver.forTests()
        let f = try d.load(Self.ldmatrixSource)
        let ps = d.upload(src), pp = d.allocate(byteCount: 128 * 4)!, pt = d.allocate(byteCount: 128 * 4)!
        d.launch(f["ldmatrix_probe"]!, grid: Dim3(1), block: Dim3(32), sharedBytes: 32 * 12 * 4,
                 arguments: [.pointer(ps), .pointer(pp), .pointer(pt)])
        try d.synchronize()
        let plain = d.download(pp, 128, as: UInt32.self), trans = d.download(pt, 128, as: UInt32.self)
        let order = [2, 0, 3, 1]
        func element(_ i: Int, _ r: Int, _ c: Int) -> UInt32 {   // b16 element (r, c) of matrix i
            let word = src[(8 * order[i] + r) * 12 + 4 + c / 2]
            return c % 2 == 0 ? word & 0xffff : word >> 16
        }
        for l in 0..<32 {
            for i in 0..<4 {
                let p = element(i, l / 4, 2 * (l % 4)) | element(i, l / 4, 2 * (l % 4) + 1) << 16
                let t = element(i, 2 * (l % 4), l / 4) | element(i, 2 * (l % 4) + 1, l / 4) << 16
                #expect(plain[4 * l + i] == p, "ldmatrix lane \(l) matrix \(i)")
                #expect(trans[4 * l + i] == t, "ldmatrix.trans lane \(l) matrix \(i)")
            }
        }
    }
}
