import Testing
@testable import HasteTensor

/// NarrowBackward as a running sum (Ops/Movement.swift): the pieces of one tensor (chunk, split, select) add their
/// slices into the sum the first piece made, in place. With integer values every sum is exact, so each gradient
/// must equal the hand-computed one exactly, whatever order the walk visits the pieces and the other consumers in:
/// pieces along the first axis (one contiguous run), along the last axis (one run per row), more than 64 rows
/// (the full-size fallback), and a gradient the walk handed to two inputs at once (a + b gets the same dy object
/// for both: a piece of one must not write into the other's sum).
@Suite struct NarrowGradientTests {
    /// Integers 1...k in a pattern, as float32.
    static func ints(_ shape: [Int], _ salt: Int) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor((0..<n).map { Float(($0 * 7 + salt * 3) % 11 - 5) }, shape: shape)
    }

    @Test(arguments: [false, true])
    func piecesAddIntoOneSum(piecesFirst: Bool) {
        let x = Self.ints([6, 5], 1)
        x.requiresGrad = true
        let w = Self.ints([6, 5], 2), v = Self.ints([6, 5], 3), u = Self.ints([6, 5], 4)
        let a = x * 3
        let rows = a.chunk(3, axis: 0), cols = a.chunk(5, axis: 1)
        let rowTerm = zip(rows, w.chunk(3, axis: 0)).map { ($0 * $1).sum() }.reduce(Tensor.scalar(0), +)
        let colTerm = zip(cols, u.chunk(5, axis: 1)).map { ($0 * $1).sum() }.reduce(Tensor.scalar(0), +)
        let both = ((a + a) * v).sum()
        let loss = piecesFirst ? rowTerm + colTerm + both : both + colTerm + rowTerm
        loss.backward()
        let (W, V, U) = (w.scalars(as: Float.self), v.scalars(as: Float.self), u.scalars(as: Float.self))
        var expected = [Float](repeating: 0, count: 30)
        for i in 0..<30 { let inner: Float = W[i] + 2 * V[i] + U[i]; expected[i] = 3 * inner }
        #expect(x.grad!.scalars(as: Float.self) == expected)
    }

    @Test func moreThan64RowsTakeTheFullSizeSum() {
        let x = Self.ints([70, 4], 5)
        x.requiresGrad = true
        let w = Self.ints([70, 4], 6)
        let pieces = (x * 2).chunk(2, axis: 1), wp = w.chunk(2, axis: 1)
        let loss = (pieces[0] * wp[0]).sum() + (pieces[1] * wp[1]).sum() + (x * x).sum()
        loss.backward()
        let (W, X) = (w.scalars(as: Float.self), x.scalars(as: Float.self))
        var expected = [Float](repeating: 0, count: 280)
        for i in 0..<280 { let a: Float = 2 * W[i], b: Float = 2 * X[i]; expected[i] = a + b }
        #expect(x.grad!.scalars(as: Float.self) == expected)
    }

    /// s = a + b hands the sum of s's pieces to both a and b; pieces of a and of b then add to their own sums.
    @Test(arguments: [false, true])
    func aGradientSharedByTwoInputsIsNotWrittenInPlace(sumFirst: Bool) {
        let x = Self.ints([4, 6], 7)
        x.requiresGrad = true
        let ws = Self.ints([4, 6], 8), wa = Self.ints([4, 6], 9), wb = Self.ints([4, 6], 10)
        let a = x * 3, b = x * 5
        func pieces(_ t: Tensor, _ w: Tensor, _ n: Int, _ axis: Int) -> Tensor {
            zip(t.chunk(n, axis: axis), w.chunk(n, axis: axis)).map { ($0 * $1).sum() }.reduce(Tensor.scalar(0), +)
        }
        let ps = pieces(a + b, ws, 2, 0), pa = pieces(a, wa, 2, 0), pb = pieces(b, wb, 3, 1)
        let loss = sumFirst ? ps + pa + pb : pa + pb + ps
        loss.backward()
        let (S, A, B) = (ws.scalars(as: Float.self), wa.scalars(as: Float.self), wb.scalars(as: Float.self))
        var expected = [Float](repeating: 0, count: 24)
        for i in 0..<24 {
            let fromA: Float = 3 * (S[i] + A[i]), fromB: Float = 5 * (S[i] + B[i])
            expected[i] = fromA + fromB
        }
        #expect(x.grad!.scalars(as: Float.self) == expected)
    }
}
