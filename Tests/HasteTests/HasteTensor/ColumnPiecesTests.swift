import Testing
@testable import HasteTensor
@testable import HasteCUDA

/// `Tensor.columnPieces` (adaLN's modulation cut into shift, scale and gate): the pieces are chunk's columns, and the
/// walk gathers their gradients side by side in one pass (`GatheredPieceBackward`, Graph.swift), `gatherColumns` on CUDA.
@Suite(.serialized) struct ColumnPiecesTests {
    static let (hostOnly, driver) = hostOnlyDevice(27)

    /// Gives its input no gradient: a piece the walk reaches and visits with nothing for it.
    struct NoGradient: Backward {
        let x: Tensor
        var inputs: [Tensor] { [x] }
        func gradients(_ dy: Tensor) -> [Tensor?] { [nil] }
    }

    /// Integers in a pattern, as float32, with −0 where the pattern gives 0.
    static func ints(_ shape: [Int], _ salt: Int) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor((0..<n).map { i -> Float in let v = (i * 7 + salt * 3) % 11 - 5; return v == 0 ? -0.0 : Float(v) }, shape: shape)
    }

    /// Four pieces of x (3, 20): piece `silent` reaches the loss only through NoGradient, the others through products
    /// with integer weights (their gradients: the weights, −0 included); for odd `silent` x also has a direct term.
    /// x's gradient is the weights side by side, the silent piece's columns +0, bit for bit, whichever piece the walk
    /// visits last; and the pieces hold chunk's values.
    @Test(arguments: 0..<4) func gradientsAreThePiecesSideBySide(silent: Int) {
        let x = Self.ints([3, 20], 1)
        x.requiresGrad = true
        let pieces = x.columnPieces(4)
        let chunks = x.chunk(4, axis: 1)
        for (p, c) in zip(pieces, chunks) {
            #expect(p.isContiguous && p.shape == [3, 5] && p.scalars(as: Float.self) == c.contiguous().scalars(as: Float.self))
        }
        let w = (0..<4).map { Self.ints([3, 5], 2 + $0) }
        var loss = Tensor.empty([3, 5]).recorded(NoGradient(x: pieces[silent])).sum()
        for i in 0..<4 where i != silent { loss = loss + (pieces[i] * w[i]).sum() }
        if silent % 2 == 1 { loss = loss + (x * 2).sum() }
        loss.backward()
        var expected = [Float](repeating: 0, count: 60)
        for r in 0..<3 {
            for i in 0..<4 {
                let wi = w[i].scalars(as: Float.self)
                for c in 0..<5 {
                    let g: Float = i == silent ? 0 : wi[r * 5 + c]
                    expected[r * 20 + i * 5 + c] = silent % 2 == 1 ? g + 2 : g
                }
            }
        }
        let got = x.grad?.scalars(as: Float.self) ?? []
        #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(got) vs \(expected)")
        if silent % 2 == 0 { #expect(got.contains { $0 == 0 && $0.sign == .minus }, "the weights hold a −0: it stays one") }
    }

    /// Inside a checkpoint (the walk with a boundary, a block recomputed): the same gradient as without.
    @Test func aCheckpointedCutGivesTheSameGradient() {
        func grad(_ checkpointed: Bool) -> [UInt32] {
            let x = Self.ints([4, 12], 3)
            x.requiresGrad = true
            let w = Self.ints([4, 4], 5), v = Self.ints([4, 4], 6)
            let body: ([Tensor]) -> [Tensor] = { a in
                let p = (a[0] * 3).columnPieces(3)
                return [(p[0] * w + p[2] * v).sum()]
            }
            let loss = checkpointed ? Tensor.checkpoint([x], body)[0] : body([x])[0]
            loss.backward()
            return x.grad!.scalars(as: Float.self).map(\.bitPattern)
        }
        #expect(grad(true) == grad(false))
    }

    /// `gatherColumns` on the emulated device: each piece's columns (a missing piece's +0), float32 bit for bit, bf16 as
    /// the CPU's cast rounds them (ties, NaN, −0, large values); four columns a thread (width 8) and one (width 6).
    @Test(arguments: [6, 8]) func theKernelPutsThePiecesSideBySide(width: Int) {
        let rows = 5, k = 3
        var rng = SplitMix64(seed: UInt64(width))
        let values: [[Float]] = (0..<k).map { i in
            (0..<(rows * width)).map { j in
                switch (i * 31 + j) % 9 {
                case 0: return -0.0
                case 1: return .nan
                case 2: return Float(bitPattern: 0x3f80_8000)            // a tie between two bf16 values
                case 3: return 3.0e38
                default: return Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x7f7f_ffff) * (j % 2 == 0 ? 1 : -1)
                }
            }
        }
        let device = EmulatedCUDA.device
        let parts: [Tensor?] = values.enumerated().map { i, v in i == 1 ? nil : Tensor(v, shape: [rows, width]).to(device) }
        var want = [Float](repeating: 0, count: rows * k * width)
        for r in 0..<rows {
            for i in 0..<k where i != 1 {
                for c in 0..<width { want[r * k * width + i * width + c] = values[i][r * width + c] }
            }
        }
        for dtype in [DType.float32, .bfloat16] {
            let out = Tensor.empty([rows, k * width], dtype: dtype, device: device)
            #expect(device.backend.gatherColumns(parts.map { $0?.buffer }, rows: rows, width: width, into: out.buffer))
            let reference = Tensor(want, shape: [rows, k * width]).to(dtype)
            let (got, ref) = (out.to(.cpu), reference)
            #expect(got.dtype == dtype && got.scalars(as: Float.self).map(\.bitPattern) == ref.scalars(as: Float.self).map(\.bitPattern),
                    "\(dtype)")   // bf16 widened: exact, one float32 per bf16 value
        }
    }

    /// Under Autocast bf16 on the emulated device: a bf16 linear's modulation cut into pieces gives the linear the same
    /// weight, bias and input gradients, bit for bit, as chunk's column slices (their running sum, then the cast), with
    /// the gathering kernel and without it (`HASTE_GATHER_COLUMNS=0`: each piece copied, then one cast).
    @Test func aBF16LinearsGradientsAreChunksBits() {
        let device = EmulatedCUDA.device
        func grads(_ cut: (Tensor) -> [Tensor]) -> [[UInt32]] {
            let c = Tensor.randn([4, 16], seed: 1).to(device), w = (Tensor.randn([48, 16], seed: 2) * 0.2).to(device)
            let b = (Tensor.randn([48], seed: 3) * 0.1).to(device)
            for t in [c, w, b] { t.requiresGrad = true }
            let pieces = Autocast.run(.bfloat16) { cut(c.linear(w, b)) }
            let loss = zip(pieces, [7, 8, 9]).map { (p, s) in (p * Tensor.randn([4, 16], seed: UInt64(s)).to(device)).sum() }
                .reduce(Tensor.scalar(0, device: device), +)
            loss.backward()
            return [c, w, b].map { $0.grad!.to(.cpu).scalars(as: Float.self).map(\.bitPattern) }
        }
        let chunks = grads { $0.chunk(3, axis: 1).map { $0.contiguous() } }
        #expect(grads { $0.columnPieces(3) } == chunks)
        #expect(CUDABackend.$gatherColumnsAllowed.withValue(false) { grads { $0.columnPieces(3) } } == chunks, "the copies and the cast")
    }

    /// On the host-only device, the same bf16 linear's pieces' gradients take one launch, rounded there (no zero fill,
    /// no adds, no cast of a float32 sum: the linear takes the bf16 gradient as it is); with `HASTE_GATHER_COLUMNS=0`, a
    /// copy per piece and one cast.
    @Test func onePassForThePiecesGradients() {
        let gathered = Self.pieceLaunches()
        #expect(gathered["gather_columns_bf16_u4"] == 1 && gathered["gather_columns_f32_u4"] == nil, "\(gathered)")
        #expect(gathered["fill_4"] == 1 && gathered["axpy_f32"] == nil && gathered["cast_f32_bf16_v4"] == nil,
                "one fill, the seed's ones: \(gathered)")
        let each = CUDABackend.$gatherColumnsAllowed.withValue(false) { Self.pieceLaunches() }
        #expect(each["gather_columns_bf16_u4"] == nil && each["cast_f32_bf16_v4"] == 1, "\(each)")
    }

    /// Launches of the backward of 6 pieces of a bf16 linear's output (4, 6·16) on the host-only device.
    static func pieceLaunches() -> [String: Int] {
        let c = Tensor.zeros([4, 16], device: hostOnly), w = Tensor.zeros([96, 16], device: hostOnly)
        let b = Tensor.zeros([96], device: hostOnly)
        for t in [c, w, b] { t.requiresGrad = true }
        let pieces = Autocast.run(.bfloat16) { c.linear(w, b).columnPieces(6) }
        let loss = pieces.map { $0.sum() }.reduce(Tensor.scalar(0, device: hostOnly), +)
        driver.resetCounts()
        loss.backward()
        return driver.launches
    }
}
