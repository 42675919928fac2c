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

/// A node whose backward first rounds its incoming gradient to `incomingLow` (bfloat16: d̃y = bf16(dy), as torch's
/// gradient of a bf16 tensor is bf16). Gradient terms for its tensor may reach the walk as `incomingLow` tensors, and
/// where two such terms are the tensor's whole gradient the walk adds them in that dtype (Graph.swift `gradientSum`:
/// the float32 sum rounded once, the rounding this node would do), so the node is handed the rounded gradient itself.
///
/// Any node may return a float32 input's gradient as a bfloat16 tensor when its values are bf16 values exactly (a
/// rounded gradient): the walk reads it as that float32 gradient, widening it wherever a float32 one is needed (a sum
/// with a float32 term, a node that does not round, a leaf, a captured gradient). Only a `LowGradientBackward` node
/// offered it may round a gradient that is not.
protocol RoundsIncomingGradient: Backward {
    var incomingLow: DType { get }
}

/// A node that may round an input's gradient itself where the walk offers it (`low[i]` not nil): input i's node rounds
/// its incoming gradient to that dtype (`RoundsIncomingGradient`) and this term is that input's only one, or input i is
/// itself a bf16/fp16 tensor (whose every gradient term the walk rounds to its dtype), so rounding it here gives the
/// values that node would read, without a float32 tensor and a rounding pass between. Returning the
/// float32 gradient is always allowed; the values are otherwise `gradients(_:)`'s.
protocol LowGradientBackward: Backward {
    func gradients(_ dy: Tensor, low: [DType?]) -> [Tensor?]
}

/// One of the pieces a single op cut a tensor into (`Tensor.columnPieces`: adaLN's shift, scale and gate), whose
/// gradients are best written side by side in one pass. The walk holds each piece's incoming gradient (a piece before
/// the last in its order hands its input nothing) and at the group's last piece asks that node for the input's whole
/// gradient from all of them; `low` is offered for the input as to a `LowGradientBackward` node.
protocol GatheredPieceBackward: Backward {
    /// The same for every piece of one cut.
    var groupID: ObjectIdentifier { get }
    /// This piece's place among the group's `pieces`.
    var index: Int { get }
    var pieces: Int { get }
    /// inputs[0]'s gradient from the pieces' gradients by index (nil: none reached that piece; at least one is not).
    func gathered(_ terms: [Tensor?], low: DType?) -> Tensor
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
