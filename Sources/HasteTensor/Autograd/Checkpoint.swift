/// Activation checkpointing (torch.utils.checkpoint): a block's forward runs without recording its graph, and
/// its backward re-runs it with recording on and back-propagates through the recomputed graph. Memory: the
/// block's inputs are kept instead of its activations; cost: one more forward of the block.
///
/// Gradients equal those of the same computation without the checkpoint bit for bit when the recompute makes
/// the same values (deterministic kernels, the same autocast precision, replayed random draws) and each tensor's
/// gradient terms are summed in the same order. The walk gives the second: the checkpoint node is a
/// `RunningSumBackward`, so an input that also has uses outside the block (the output of the block the projector
/// reads) gets its in-block terms added after the ones it already had, one by one, not as one pre-summed term;
/// and the recompute's walk explores the outputs first to last, as the walk without the checkpoint enters the
/// block: give the main path (what the next block reads first) first and side outputs (attention logits) after.
extension Tensor {
    /// Runs `body(inputs)` without recording and returns its outputs, which record one checkpoint node when
    /// recording is on and `body` read a tracked tensor (torch: `checkpoint(body, *inputs, use_reentrant=False)`).
    /// The node's edges are the tracked `inputs` and every tracked leaf the body captured (its parameters), so a
    /// data-parallel observer sees them as usual. In backward, `body` runs again on the same `inputs` with
    /// recording on, under the forward's autocast precision, with each of `generators` set back to its offset at
    /// the forward (the same draws; afterwards each is left where it was). `body` must capture no tracked tensor
    /// other than leaves (pass activations through `inputs`) and must not depend on anything that changes in
    /// between (it holds what it captures until the backward).
    public static func checkpoint(_ inputs: [Tensor], generators: [RandomGenerator] = [],
                                  _ body: @escaping ([Tensor]) -> [Tensor]) -> [Tensor] {
        guard GradMode.isEnabled else { return body(inputs) }
        let starts = generators.map(\.offset), precision = Autocast.precision
        let reads = CheckpointReads()
        reads.note(inputs)                                     // the inputs first, in their order, then parameters
        let outputs = GradMode.withoutGrad { CheckpointReads.$current.withValue(reads) { body(inputs) } }
        for t in reads.tensors where !inputs.contains(where: { $0 === t }) {
            require(t.gradFn == nil, "checkpoint: the body reads a tracked intermediate \(t.shape) that is not among its inputs; "
                    + "pass activations through `inputs` (only parameters may be captured)")
        }
        guard !reads.tensors.isEmpty else { return outputs }
        let state = CheckpointState(inputs: inputs, edges: reads.tensors, body: body, generators: generators, starts: starts,
                                    precision: precision, outputCount: outputs.count)
        let bundle = Tensor.zeros([1])
        bundle.gradFn = CheckpointBackward(state: state)
        var seen = Set<ObjectIdentifier>()
        return outputs.enumerated().map { k, o in
            // An output that is an input or a parameter returned as is, or is returned twice, gets its own alias.
            let shared = o.isTracked || inputs.contains { $0 === o } || !seen.insert(ObjectIdentifier(o)).inserted
            let out = shared ? Tensor(storage: o.storage, shape: o.shape, strides: o.strides, offset: o.offset, dtype: o.dtype) : o
            out.gradFn = CheckpointOutputBackward(bundle: bundle, index: k, state: state)
            return out
        }
    }
}

/// The tracked tensors a checkpoint's forward reads with recording off, in first-read order (`recorded` and
/// the attention ops note them).
final class CheckpointReads: @unchecked Sendable {
    @TaskLocal static var current: CheckpointReads? = nil
    private(set) var tensors: [Tensor] = []
    private var seen = Set<ObjectIdentifier>()

    func note(_ inputs: [Tensor]) {
        for t in inputs where t.isTracked && seen.insert(ObjectIdentifier(t)).inserted { tensors.append(t) }
    }
}

/// What one checkpoint keeps until its backward: the body and its arguments, the edges, how to replay, and the
/// output gradients the walk has delivered so far (taken, and cleared, when the recompute runs).
final class CheckpointState {
    let inputs: [Tensor], edges: [Tensor]
    let body: ([Tensor]) -> [Tensor]
    let generators: [RandomGenerator], starts: [UInt64]
    let precision: ComputePrecision
    var outputGradients: [Tensor?]
    /// The one-element gradient each output passes to the bundle (the node's real inputs are its edges).
    let token = Tensor.zeros([1])

    init(inputs: [Tensor], edges: [Tensor], body: @escaping ([Tensor]) -> [Tensor], generators: [RandomGenerator],
         starts: [UInt64], precision: ComputePrecision, outputCount: Int) {
        (self.inputs, self.edges, self.body, self.generators, self.starts) = (inputs, edges, body, generators, starts)
        self.precision = precision
        outputGradients = Array(repeating: nil, count: outputCount)
    }

    /// The body again, recording, as the forward ran it; the generators are left where they were.
    func replay() -> [Tensor] {
        let now = generators.map(\.offset)
        for (g, o) in zip(generators, starts) { g.offset = o }
        defer { for (g, o) in zip(generators, now) { g.offset = o } }
        return CheckpointReads.$current.withValue(nil) {
            GradMode.withGrad { Autocast.run(precision) { body(inputs) } }
        }
    }
}

/// Output k of a checkpoint: hands its gradient to the shared state and a token to the bundle, whose node runs
/// once every output has been visited (the bundle is their common input, so the walk reaches it after them).
struct CheckpointOutputBackward: Backward {
    let bundle: Tensor, index: Int, state: CheckpointState
    var inputs: [Tensor] { [bundle] }
    func gradients(_ dy: Tensor) -> [Tensor?] {
        state.outputGradients[index] = dy
        return [state.token]
    }
}

/// Recomputes the block and walks its graph from the outputs that got a gradient down to the edges (not
/// beyond), continuing the edges' running sums; leaves inside are captured, not accumulated, and returned as
/// the edges' gradients, so the enclosing walk accumulates (and observes) them as usual.
struct CheckpointBackward: RunningSumBackward {
    let state: CheckpointState
    var inputs: [Tensor] { state.edges }

    func gradients(_ dy: Tensor) -> [Tensor?] { gradients(dy, running: state.edges.map { _ in nil }) }

    func gradients(_ dy: Tensor, running: [Tensor?]) -> [Tensor?] {
        let dys = state.outputGradients
        state.outputGradients = Array(repeating: nil, count: dys.count)     // a retained graph walks again
        let outputs = state.replay()
        require(outputs.count == dys.count, "checkpoint: the recompute returned \(outputs.count) outputs, the forward \(dys.count)")
        var roots: [Tensor] = [], seeds: [Tensor] = []
        for (k, (out, dy)) in zip(outputs, dys).enumerated() {
            guard let dy else { continue }
            require(out.shape == dy.shape, "checkpoint: output \(k) recomputed as \(out.shape), the forward gave \(dy.shape)")
            roots.append(out)
            seeds.append(dy)
        }
        let ids = Set(state.edges.map(ObjectIdentifier.init))
        let missed = Tensor.topologicalOrder(roots, stopAt: ids).first {
            $0.gradFn == nil && $0.requiresGrad && !ids.contains(ObjectIdentifier($0))
        }
        require(missed == nil, "checkpoint: the recompute reads a tensor \(missed?.shape ?? []) that requires grad and the forward did not read")
        var sums: [ObjectIdentifier: Tensor] = [:]
        for (e, r) in zip(state.edges, running) { if let r { sums[ObjectIdentifier(e)] = r } }
        let captured = GradMode.withoutGrad {
            Autocast.core { Tensor.runBackward(from: roots, seeds: seeds, capture: ids, boundary: true, running: sums, freeGraph: true) }
        }
        return zip(state.edges, running).map { e, r in captured[ObjectIdentifier(e)] ?? r }
    }
}
