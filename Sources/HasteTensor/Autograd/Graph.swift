/// The backward walk (STYLE R2): reverse topological order from the root, summing gradients that reach
/// the same tensor, accumulating leaf gradients into `grad`. Runs with recording off.
extension Tensor {
    /// Back-propagates from this tensor. `gradient` defaults to ones (a scalar loss).
    public func backward(_ gradient: Tensor? = nil) {
        let seed = gradient ?? Tensor.ones(shape, dtype: dtype, device: device)
        require(seed.shape == shape, "backward: gradient \(seed.shape) for tensor \(shape)")
        GradMode.withoutGrad { _ = Tensor.runBackward(from: self, seed: seed.contiguous()) }
    }

    /// With `capture` nil, leaf gradients go into `grad`; otherwise only the gradients reaching the
    /// captured tensors are returned and no `grad` is touched (torch.autograd.grad).
    static func runBackward(from root: Tensor, seed: Tensor,
                            capture: Set<ObjectIdentifier>? = nil) -> [ObjectIdentifier: Tensor] {
        let order = topologicalOrder(root)
        var pending: [ObjectIdentifier: Tensor] = [ObjectIdentifier(root): seed]
        var captured: [ObjectIdentifier: Tensor] = [:]
        for t in order {
            let id = ObjectIdentifier(t)
            guard let g = pending.removeValue(forKey: id) else { continue }
            if let capture {
                if capture.contains(id) { captured[id] = g }
                if capture.count == captured.count { break }
            }
            guard let node = t.gradFn else {
                if capture == nil && t.requiresGrad { t.accumulateGrad(g) }
                continue
            }
            let grads = node.gradients(g.contiguous())
            require(grads.count == node.inputs.count, "backward: \(type(of: node)) returned \(grads.count) gradients for \(node.inputs.count) inputs")
            for (input, grad) in zip(node.inputs, grads) {
                guard let grad, input.isTracked else { continue }
                require(grad.shape == input.shape,
                             "backward: \(type(of: node)) gave gradient \(grad.shape) for input \(input.shape)")
                let key = ObjectIdentifier(input)
                if let existing = pending[key] { pending[key] = existing + grad } else { pending[key] = grad }
            }
        }
        return captured
    }

    /// Post-order DFS without recursion (graphs of deep models exceed the stack).
    static func topologicalOrder(_ root: Tensor) -> [Tensor] {
        var order: [Tensor] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Tensor, Bool)] = [(root, false)]
        while let (t, expanded) = stack.popLast() {
            if expanded { order.append(t); continue }
            if !visited.insert(ObjectIdentifier(t)).inserted { continue }
            stack.append((t, true))
            if let node = t.gradFn {
                for input in node.inputs where input.isTracked && !visited.contains(ObjectIdentifier(input)) {
                    stack.append((input, false))
                }
            }
        }
        return order.reversed()
    }

    /// Leaf accumulation: in place into an owned arena slot, otherwise `grad = grad + g`.
    func accumulateGrad(_ g: Tensor) {
        let g = g.dtype == dtype ? g : g.to(dtype)
        if let existing = grad {
            if gradIsOwnedSlot {
                existing.addInPlace(g)
            } else {
                grad = existing + g
            }
        } else {
            grad = g.contiguous()
        }
    }

    /// In-place `self += other` outside autograd (arena gradients, optimizer state).
    public func addInPlace(_ other: Tensor, alpha: Double = 1) {
        require(other.shape == shape && isContiguous, "addInPlace: \(other.shape) into \(shape)")
        let o = other.contiguous()
        backend.axpy(alpha: alpha, x: o.buffer, y: buffer, count: count)
    }
}

/// Gradients of `output` (contracted with `seed`, default ones) with respect to `inputs` (tracked leaves
/// or intermediates), without touching any `.grad` (torch.autograd.grad). Untracked inputs get nil.
public func gradients(of output: Tensor, wrt inputs: [Tensor], seed: Tensor? = nil) -> [Tensor?] {
    let s = (seed ?? Tensor.ones(output.shape, dtype: output.dtype, device: output.device)).contiguous()
    let ids = Set(inputs.map(ObjectIdentifier.init))
    let captured = GradMode.withoutGrad { Tensor.runBackward(from: output, seed: s, capture: ids) }
    return inputs.map { captured[ObjectIdentifier($0)] }
}
