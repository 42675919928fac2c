/// What an op keeps for its backward pass and how it maps dL/dy to dL/d(inputs) (STYLE R1).
public protocol Backward {
    /// Fixed order; the graph's edges.
    var inputs: [Tensor] { get }
    /// `dy` is contiguous, shaped like the output. One entry per input; nil = no gradient.
    func gradients(_ dy: Tensor) -> [Tensor?]
}

/// A node that can write an input's gradient straight into the parameter slot it would be accumulated into
/// (a weight gradient's GEMM into the arena: no temporary, no add pass). The walk offers `into[i]` (contiguous,
/// input i's shape and dtype) only when that write is the whole accumulation (Graph.swift `inPlaceDestination`);
/// the node writes input i's gradient there and returns that same tensor, or ignores the offer and returns a
/// fresh one. Either way the values are those `gradients(_:)` returns.
protocol InPlaceGradientBackward: Backward {
    func gradients(_ dy: Tensor, into: [Tensor?]) -> [Tensor?]
}

/// A node that continues its inputs' gradient sums instead of returning fresh terms (a checkpoint, whose
/// recomputed block adds one term per use of an input, in the order the walk without the checkpoint would).
/// The walk hands it each tracked input's sum so far (nil: none yet) and replaces that sum with what it returns.
protocol RunningSumBackward: Backward {
    func gradients(_ dy: Tensor, running: [Tensor?]) -> [Tensor?]
}

extension Tensor {
    /// Attaches `node` as this tensor's grad function when recording is on and some input is tracked;
    /// otherwise returns self untouched. Ops call it on their freshly allocated output. With recording off
    /// inside a checkpoint's forward, the tracked inputs are noted instead (Checkpoint.swift).
    public func recorded(_ node: some Backward) -> Tensor {
        guard GradMode.isEnabled else {
            if let reads = CheckpointReads.current { reads.note(node.inputs) }
            return self
        }
        guard node.inputs.contains(where: { $0.isTracked }) else { return self }
        gradFn = node
        return self
    }
}
