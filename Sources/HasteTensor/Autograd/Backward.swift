/// What an op keeps for its backward pass and how it maps dL/dy to dL/d(inputs) (STYLE R1).
public protocol Backward {
    /// Fixed order; the graph's edges.
    var inputs: [Tensor] { get }
    /// `dy` is contiguous, shaped like the output. One entry per input; nil = no gradient.
    func gradients(_ dy: Tensor) -> [Tensor?]
}

extension Tensor {
    /// Attaches `node` as this tensor's grad function when recording is on and some input is tracked;
    /// otherwise returns self untouched. Ops call it on their freshly allocated output.
    public func recorded(_ node: some Backward) -> Tensor {
        guard GradMode.isEnabled, node.inputs.contains(where: { $0.isTracked }) else { return self }
        gradFn = node
        return self
    }
}
