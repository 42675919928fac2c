import Testing
@testable import HasteTensor

/// An op checked against a case of Scripts/fixtures/movement.py: name, gradient tolerance, Swift op over
/// the case's inputs (x0, x1, ...: float inputs, indices, masks) returning its outputs (y0, y1, ...).
/// Forward values are compared exactly (these ops only move elements); gradients that only move dy are
/// exact too (tolerance 0), those that add several dy elements (expand, repeated indices, broadcast
/// where) allow 1e-6 absolute + 1e-6 relative for float32 summation order.
typealias MovementCase = (name: String, gradTolerance: Double, op: ([Tensor]) -> [Tensor])

let viewCases: [MovementCase] = [
    ("reshape", 0, { [$0[0].reshaped([7, -1])] }),
    ("reshape_copy", 0, { [$0[0].transposed(0, 2).reshaped([5, 21])] }),
    ("reshape_view", 0, { [$0[0][axis: 2, 1..<6].reshaped([15, 5])] }),
    ("flatten", 0, { [$0[0].transposed(1, 2).flattened(from: 1)] }),
    ("permute", 0, { [$0[0].permuted([2, 0, 1])] }),
    ("transpose", 0, { [$0[0].transposed(-1, -3)] }),
    ("expand", 1e-6, { [$0[0].expanded([2, 3, 5, 7])] }),
    ("expand_keep", 1e-6, { [$0[0].expanded([-1, 5, -1])] }),
    ("narrow", 0, { [$0[0].narrowed(1, start: 1, length: 3)] }),
    ("narrow_permuted", 0, { [$0[0].permuted([2, 0, 1]).narrowed(0, start: 2, length: 4)] }),
    ("split", 0, { $0[0].split([2, 3, 2], axis: 2) }),
    ("split_transposed", 0, { $0[0].transposed(0, 1).split([1, 4], axis: 0) }),
    ("chunk", 0, { $0[0].chunk(3, axis: 0) }),
    ("chunk_uneven", 0, { $0[0].chunk(4, axis: 1) }),
    ("contiguous", 0, { [$0[0].transposed(0, 1).contiguous()] }),
    ("unsqueeze", 0, { [$0[0].permuted([2, 0, 1]).unsqueezed(-1)] }),
    ("unsqueeze_front", 0, { [$0[0].unsqueezed(0)] }),
    ("squeeze", 0, { [$0[0].narrowed(1, start: 2, length: 1).squeezed(1)] }),
    ("chain", 1e-6, { [$0[0].transposed(0, 2).narrowed(1, start: 1, length: 3).unsqueezed(0).expanded([2, -1, -1, -1])] }),
]

let concatCases: [MovementCase] = [
    ("cat_axis1", 0, { [Tensor.cat($0, axis: 1)] }),
    ("cat_noncontiguous", 0, { [Tensor.cat([$0[0].transposed(), $0[1]], axis: -1)] }),
    ("cat_axis0", 0, { [Tensor.cat($0, axis: 0)] }),
    ("stack_axis1", 0, { [Tensor.stack($0, axis: 1)] }),
    ("stack_last", 0, { [Tensor.stack($0.map { $0.transposed() }, axis: -1)] }),
]

let unpatchifyCases: [MovementCase] = [
    ("unpatchify_p2c3", 0, { [$0[0].unpatchify(patch: 2, channels: 3)] }),
    ("unpatchify_p3c4", 0, { [$0[0].unpatchify(patch: 3, channels: 4)] }),
]

/// The case's inputs x0, x1, ... in order.
func caseInputs(_ f: Fixture, _ name: String) -> [Tensor] {
    var xs: [Tensor] = []
    while f.has("\(name).x\(xs.count)") { xs.append(f["\(name).x\(xs.count)"]) }
    return xs
}

/// Forward (exact) and the gradients of Σ y_i·dy_i for every float input, against PyTorch in float32.
func checkAgainstPyTorch(_ file: String, _ c: MovementCase, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let f = try Fixture(file)
    let xs = caseInputs(f, c.name)
    #expect(!xs.isEmpty, "\(file) has no case \(c.name)", sourceLocation: sourceLocation)
    for x in xs where x.dtype.isComputeFloat { x.requiresGrad = true }
    let ys = c.op(xs)
    var loss: Tensor?
    for (i, y) in ys.enumerated() {
        let expected = f["\(c.name).y\(i)"]
        #expect(y.dtype == expected.dtype, "\(c.name) y\(i) dtype", sourceLocation: sourceLocation)
        expectClose(y, expected, atol: 0, rtol: 0, "\(c.name) y\(i)", sourceLocation: sourceLocation)
        if f.has("\(c.name).dy\(i)") {
            let term = (y * f["\(c.name).dy\(i)"]).sum()
            loss = loss.map { $0 + term } ?? term
        }
    }
    #expect(f.has("\(c.name).y\(ys.count)") == false, "\(c.name): fewer outputs than PyTorch", sourceLocation: sourceLocation)
    guard let loss else { return }
    let grads = gradients(of: loss, wrt: xs)
    for i in xs.indices where f.has("\(c.name).dx\(i)") {
        guard let g = grads[i] else { Issue.record("\(c.name): no gradient for x\(i)", sourceLocation: sourceLocation); continue }
        expectClose(g, f["\(c.name).dx\(i)"], atol: c.gradTolerance, rtol: c.gradTolerance, "\(c.name) dx\(i)",
                    sourceLocation: sourceLocation)
    }
}

/// Float64 finite differences at the fixture's inputs (STYLE R10); several outputs are contracted with
/// fixed random weights into one scalar. Indices and masks stay as they are.
func gradcheckCase(_ file: String, _ c: MovementCase, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let f = try Fixture(file)
    let xs = caseInputs(f, c.name)
    let floats = xs.indices.filter { xs[$0].dtype.isComputeFloat }
    gradcheck({ (args: [Tensor]) -> Tensor in
        var all = xs
        for (k, i) in floats.enumerated() { all[i] = args[k] }
        let ys = c.op(all)
        if ys.count == 1 { return ys[0] }
        var total = Tensor.scalar(0, dtype: .float64)
        for (i, y) in ys.enumerated() { total = total + (y * Tensor.randn(like: y, seed: 100 + UInt64(i))).sum() }
        return total
    }, at: floats.map { xs[$0].to(.float64) }, sourceLocation: sourceLocation)
}

func movementCase(_ cases: [MovementCase], _ name: String) -> MovementCase { cases.first { $0.name == name }! }

@Test(arguments: viewCases.map(\.name))
func viewMatchesPyTorch(_ name: String) throws {
    try checkAgainstPyTorch("movement_views.safetensors", movementCase(viewCases, name))
}

@Test(arguments: viewCases.map(\.name))
func viewGradcheck(_ name: String) throws {
    try gradcheckCase("movement_views.safetensors", movementCase(viewCases, name))
}

@Test(arguments: concatCases.map(\.name))
func concatMatchesPyTorch(_ name: String) throws {
    try checkAgainstPyTorch("movement_concat.safetensors", movementCase(concatCases, name))
}

@Test(arguments: concatCases.map(\.name))
func concatGradcheck(_ name: String) throws {
    try gradcheckCase("movement_concat.safetensors", movementCase(concatCases, name))
}

@Test(arguments: unpatchifyCases.map(\.name))
func unpatchifyMatchesPyTorchEinsum(_ name: String) throws {
    try checkAgainstPyTorch("unpatchify.safetensors", movementCase(unpatchifyCases, name))
}

@Test(arguments: unpatchifyCases.map(\.name))
func unpatchifyGradcheck(_ name: String) throws {
    try gradcheckCase("unpatchify.safetensors", movementCase(unpatchifyCases, name))
}

@Test func viewsShareStorage() {
    let x = Tensor.randn([3, 5, 7], seed: 1)
    let views = [x[axis: 2, 1..<6].reshaped([15, 5]), x.transposed(0, 2).unsqueezed(1).squeezed(1),
                 x.permuted([2, 0, 1]).unsqueezed(-1), x.narrowed(1, start: 2, length: 1).squeezed(1),
                 x.select(axis: 1, index: 3), x.expanded([2, 3, 5, 7])]
    for v in views { #expect(v.storage === x.storage, "\(v.shape) was copied") }
    // A reshape that merges axes a permutation separated cannot be a view.
    #expect(x.transposed(0, 2).reshaped([5, 21]).storage !== x.storage)
}

@Test func unpatchifyPlacesEachFeature() {
    // N = 1, T = 4 (h = w = 2), p = 2, C = 3: feature (pi·p + qi)·C + ch of token hi·w + wi → (ch, hi·p+pi, wi·p+qi).
    let (p, c, h) = (2, 3, 2)
    let x = Tensor((0..<(h * h * p * p * c)).map(Double.init), shape: [1, h * h, p * p * c])
    let y = x.unpatchify(patch: p, channels: c).scalars(as: Double.self)
    for hi in 0..<h { for wi in 0..<h { for pi in 0..<p { for qi in 0..<p { for ch in 0..<c {
        let src = (hi * h + wi) * p * p * c + (pi * p + qi) * c + ch
        let dst = (ch * h * p + hi * p + pi) * h * p + wi * p + qi
        #expect(y[dst] == Double(src))
    } } } } }
}

@Test func chunkFollowsTorchSizes() {
    #expect(Tensor.zeros([7, 2]).chunk(3, axis: 0).map { $0.shape[0] } == [3, 3, 1])
    #expect(Tensor.zeros([5]).chunk(4, axis: 0).map(\.count) == [2, 2, 1])
    #expect(Tensor.zeros([6]).chunk(3, axis: -1).map(\.count) == [2, 2, 2])
}
