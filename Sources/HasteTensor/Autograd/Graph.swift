/// The backward walk (STYLE R2): reverse topological order from the root, summing gradients that reach
/// the same tensor, accumulating leaf gradients into `grad`. Runs with recording and autocast off (a node
/// rounds its gradients as its forward's precision asked, Ops/Precision.swift).
extension Tensor {
    /// Back-propagates from this tensor. `gradient` defaults to ones (a scalar loss). `observer` hears which
    /// leaves the walk can reach, then each leaf as soon as its gradient is final (torch's post-accumulate-grad
    /// hook; data parallelism starts reducing finished gradients while the walk goes on).
    /// Each node is dropped from the graph as soon as its backward has run, so the activations it saved are
    /// freed during the walk, not after it (torch's default); `retainGraph: true` keeps the graph for another
    /// walk (torch's `retain_graph=True`).
    public func backward(_ gradient: Tensor? = nil, observer: LeafGradientObserver? = nil, retainGraph: Bool = false) {
        let seed = gradient ?? Tensor.ones(shape, dtype: dtype, device: device)
        require(seed.shape == shape, "backward: gradient \(seed.shape) for tensor \(shape)")
        require(seed.device == device, "backward: gradient on \(seed.device), tensor on \(device)")
        GradMode.withoutGrad {
            Autocast.core { _ = Tensor.runBackward(from: self, seed: seed.contiguous(), observer: observer, freeGraph: !retainGraph) }
        }
    }

    /// With `capture` nil, leaf gradients go into `grad`; otherwise only the gradients reaching the
    /// captured tensors are returned and no `grad` is touched (torch.autograd.grad). `freeGraph` unlinks
    /// each node once run and lets go of the walk's own reference to each tensor once visited.
    static func runBackward(from root: Tensor, seed: Tensor, capture: Set<ObjectIdentifier>? = nil,
                            observer: LeafGradientObserver? = nil, freeGraph: Bool = false) -> [ObjectIdentifier: Tensor] {
        runBackward(from: [root], seeds: [seed], capture: capture, observer: observer, freeGraph: freeGraph)
    }

    /// The walk from several roots, each with its seed; roots are explored first to last (`topologicalOrder`).
    /// `boundary`: captured tensors are not expanded (the walk stops there: a checkpoint's inputs), and `running`
    /// holds gradient sums some of them already had in an enclosing walk; their terms are added after it, in the
    /// order the enclosing walk would have added them (Checkpoint.swift).
    static func runBackward(from roots: [Tensor], seeds: [Tensor], capture: Set<ObjectIdentifier>? = nil, boundary: Bool = false,
                            running: [ObjectIdentifier: Tensor] = [:], observer: LeafGradientObserver? = nil,
                            freeGraph: Bool = false) -> [ObjectIdentifier: Tensor] {
        var order = topologicalOrder(roots, stopAt: boundary ? capture ?? [] : [])
        observer?.willAccumulate(into: order.filter { $0.gradFn == nil && $0.requiresGrad })
        var pending = running
        for (root, seed) in zip(roots, seeds) {
            let id = ObjectIdentifier(root)
            if let existing = pending[id] { pending[id] = existing + seed } else { pending[id] = seed }
        }
        // A leaf's gradient is final once its last consumer has run: accumulate it then, not at the leaf's own
        // place in the order (a DFS puts a layer's weights after the whole chain below it). The same sum,
        // sooner: its memory is freed early and data parallelism can start reducing it.
        var consumersLeft: [ObjectIdentifier: Int] = [:]
        // Gradient terms still to come for each tensor whose node rounds its incoming gradient (`gradientSum`, the
        // low-gradient offers below).
        var termsLeft: [ObjectIdentifier: Int] = [:]
        for t in order {
            for input in t.gradFn?.inputs ?? [] {
                if capture == nil && input.gradFn == nil && input.requiresGrad {
                    consumersLeft[ObjectIdentifier(input), default: 0] += 1
                } else if input.isTracked && input.gradFn is any RoundsIncomingGradient {
                    termsLeft[ObjectIdentifier(input), default: 0] += 1
                }
            }
        }
        // Pieces of one cut (`GatheredPieceBackward`) still to be visited, and the gradients of those visited.
        var piecesLeft: [ObjectIdentifier: Int] = [:]
        var pieceTerms: [ObjectIdentifier: [Tensor?]] = [:]
        /// A captured tensor where the walk stops (a checkpoint's input): its node does not run.
        func stopsHere(_ id: ObjectIdentifier) -> Bool { boundary && capture?.contains(id) == true }
        for t in order where !stopsHere(ObjectIdentifier(t)) {
            if let piece = t.gradFn as? any GatheredPieceBackward { piecesLeft[piece.groupID, default: 0] += 1 }
        }
        var captured: [ObjectIdentifier: Tensor] = [:]
        /// What a node may round an input's gradient to (`LowGradientBackward`): its own dtype for a bf16 input, else
        /// the rounding of the input's node where this term will be its only one.
        func lowOffer(_ input: Tensor) -> DType? {
            let key = ObjectIdentifier(input)
            guard input.isTracked else { return nil }
            if input.dtype.isLowFloat { return input.dtype }      // each of its terms is rounded to its dtype anyway
            guard termsLeft[key] == 1, pending[key] == nil, capture?.contains(key) != true else { return nil }
            return (input.gradFn as? any RoundsIncomingGradient)?.incomingLow
        }
        /// A piece's visit: its gradient (if any) is held; the group's last piece gathers them all for the input.
        func pieceGradients(_ piece: any GatheredPieceBackward, _ g: Tensor?) -> [Tensor?] {
            let group = piece.groupID
            var terms = pieceTerms.removeValue(forKey: group) ?? Array(repeating: nil, count: piece.pieces)
            if let g { terms[piece.index] = g }
            let left = (piecesLeft[group] ?? 1) - 1
            guard left == 0 else { piecesLeft[group] = left; pieceTerms[group] = terms; return [nil] }
            piecesLeft[group] = nil
            guard terms.contains(where: { $0 != nil }) else { return [nil] }
            return [piece.gathered(terms, low: lowOffer(piece.inputs[0]))]
        }
        /// Hands a node's input gradients to the walk: summed into the inputs' pending gradients (a running-sum node's
        /// replace them), a leaf's accumulated as soon as its last consumer ran.
        func deliver(_ node: any Backward, _ grads: [Tensor?], continues: Bool) {
            require(grads.count == node.inputs.count, "backward: \(type(of: node)) returned \(grads.count) gradients for \(node.inputs.count) inputs")
            for (input, grad) in zip(node.inputs, grads) where input.isTracked {
                let key = ObjectIdentifier(input)
                var whole = false                       // this term completes the input's gradient
                if let left = termsLeft[key] { termsLeft[key] = left - 1; whole = left == 1 }
                if let grad {
                    require(grad.shape == input.shape,
                            "backward: \(type(of: node)) gave gradient \(grad.shape) for input \(input.shape)")
                    if !continues, let existing = pending[key] {
                        pending[key] = Tensor.gradientSum(existing, grad, for: input, whole: whole)
                    } else {
                        pending[key] = grad
                    }
                }
                guard let left = consumersLeft[key] else { continue }
                if left > 1 { consumersLeft[key] = left - 1; continue }
                consumersLeft[key] = nil
                if let g = pending.removeValue(forKey: key) {
                    input.accumulateGrad(g)
                    observer?.didAccumulate(input)
                }
            }
        }
        var remaining = Array(order.reversed())     // popped as visited: the walk's references go one by one
        order = []
        while let t = remaining.popLast() {
            let id = ObjectIdentifier(t)
            guard var g = pending.removeValue(forKey: id) else {
                // A piece with no gradient still counts: the group's last piece gathers the others'.
                if let piece = t.gradFn as? any GatheredPieceBackward, !stopsHere(id) {
                    deliver(piece, pieceGradients(piece, nil), continues: false)
                    if freeGraph { t.gradFn = nil }
                }
                continue
            }
            g.isPrivateGradientSum = false              // from here on others may hold it
            // A bf16 gradient (`RoundsIncomingGradient`) goes as it is only to a node that rounds to bf16 first.
            if g.dtype != t.dtype && (t.gradFn as? any RoundsIncomingGradient)?.incomingLow != g.dtype { g = g.to(t.dtype) }
            if let capture {
                if capture.contains(id) { captured[id] = g.dtype == t.dtype ? g : g.to(t.dtype) }
                if capture.count == captured.count { break }
                if stopsHere(id) { continue }
            }
            guard let node = t.gradFn else {
                if capture == nil && t.requiresGrad {
                    t.accumulateGrad(g)
                    observer?.didAccumulate(t)           // a consumer had no gradient for it; nothing adds to it later
                }
                continue
            }
            // A running-sum node (a checkpoint) takes its inputs' sums so far and returns them with its terms added.
            let grads: [Tensor?]
            let continuing = node as? any RunningSumBackward
            if let continuing {
                var running: [Tensor?] = []
                for input in node.inputs {
                    let sum = input.isTracked ? pending.removeValue(forKey: ObjectIdentifier(input)) : nil
                    running.append(sum.map { $0.dtype == input.dtype ? $0 : $0.to(input.dtype) })
                }
                grads = continuing.gradients(g.contiguous(), running: running)
            } else if let piece = node as? any GatheredPieceBackward {
                grads = pieceGradients(piece, g.contiguous())
            } else if let lowering = node as? any LowGradientBackward {
                grads = lowering.gradients(g.contiguous(), low: node.inputs.map(lowOffer))
            } else if capture == nil, let direct = node as? any InPlaceGradientBackward {
                let into = node.inputs.map {
                    $0.inPlaceDestination(termsLeft: consumersLeft[ObjectIdentifier($0)], hasPendingTerm: pending[ObjectIdentifier($0)] != nil)
                }
                grads = into.contains { $0 != nil } ? direct.gradients(g.contiguous(), into: into) : node.gradients(g.contiguous())
            } else {
                grads = node.gradients(g.contiguous())
            }
            if freeGraph { t.gradFn = nil }              // its saved tensors go when the last holder does
            deliver(node, grads, continues: continuing != nil)
        }
        return captured
    }

    /// The walk's sum of two gradient terms of `input`: float32 (as the input), or bf16 where a node returned its
    /// term rounded (`RoundsIncomingGradient`). Two bf16 terms that are the input's whole gradient, for a node that
    /// rounds to bf16 first, are added as torch adds two bf16 gradients (`addLow`: the float32 sum rounded once, what
    /// the node's rounding of the float32 sum gives); otherwise the float32 sum of the widened terms, as before any
    /// term was bf16.
    ///
    /// A bf16 input (an autocast op's output that autograd tracks: the aligned attention's logits on CUDA) has a bf16
    /// gradient: each term is rounded to it on its own (a float32 term from a node that computes in float32, as
    /// torch's cast back at a type promotion) and two terms are added as bf16 tensors (the float32 sum rounded once).
    static func gradientSum(_ a: Tensor, _ b: Tensor, for input: Tensor, whole: Bool) -> Tensor {
        let low: DType?
        if input.dtype.isLowFloat {
            low = input.dtype
        } else if a.dtype == b.dtype, a.dtype != input.dtype, whole, (input.gradFn as? any RoundsIncomingGradient)?.incomingLow == a.dtype {
            low = a.dtype
        } else {
            low = nil
        }
        if let low {
            let ac = a.to(low).contiguous(), bc = b.to(low).contiguous(), out = Tensor.empty(a.shape, dtype: low, device: a.device)
            if a.backend.addLow(ac.buffer, bc.buffer, out.buffer, count: a.count) { return out }
            if input.dtype == low { return (ac.to(.float32) + bc.to(.float32)).to(low) }     // the same: float32 sum rounded once
        }
        if input.dtype == .float32 && (a.dtype == .bfloat16 || b.dtype == .bfloat16) {
            let ac = a.contiguous(), bc = b.contiguous(), out = Tensor.empty(a.shape, dtype: .float32, device: a.device)
            if a.backend.addWidened(ac.buffer, bc.buffer, out.buffer, count: a.count) { return out }   // widened and added in one pass
        }
        func widened(_ t: Tensor) -> Tensor { t.dtype == input.dtype ? t : t.to(input.dtype) }
        return widened(a) + widened(b)
    }

    /// Post-order DFS without recursion (graphs of deep models exceed the stack). Inputs are explored first
    /// to last (pushed in reverse), so the main path (an op's first input: `x` of `x + f(x)`, of `linear(x, w)`)
    /// is ordered before the side branches: reversed, each block's side inputs (its adaLN linear, its weights)
    /// come right after the block, as in the forward pass backwards, and their gradients finish early.
    /// Several roots are explored first to last, as the inputs of one node would be; `stopAt` tensors are
    /// ordered but not expanded.
    static func topologicalOrder(_ roots: [Tensor], stopAt: Set<ObjectIdentifier> = []) -> [Tensor] {
        var order: [Tensor] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Tensor, Bool)] = roots.reversed().map { ($0, false) }
        while let (t, expanded) = stack.popLast() {
            if expanded { order.append(t); continue }
            if !visited.insert(ObjectIdentifier(t)).inserted { continue }
            stack.append((t, true))
            if let node = t.gradFn, !stopAt.contains(ObjectIdentifier(t)) {
                for input in node.inputs.reversed() where input.isTracked && !visited.contains(ObjectIdentifier(input)) {
                    stack.append((input, false))
                }
            }
        }
        return order.reversed()
    }

    /// Leaf accumulation: in place into an owned arena slot (a stale slot, zero since `zeroGrad`, is overwritten:
    /// 0 + g is g; `g` may be the slot itself, written there by the node: `inPlaceDestination`), otherwise
    /// `grad = grad + g`.
    func accumulateGrad(_ g: Tensor) {
        g.isPrivateGradientSum = false
        let g = g.dtype == dtype ? g : g.to(dtype)
        if let existing = gradValue {
            if gradIsOwnedSlot {
                if g === existing {                       // written there by the node
                } else if gradIsStale {
                    existing.copyValues(from: g)
                } else {
                    existing.addInPlace(g)
                }
                gradIsStale = false
            } else {
                grad = existing + g
            }
        } else {
            grad = g.contiguous()
        }
    }

    /// The arena slot a node may write this leaf's whole gradient into (`InPlaceGradientBackward`): a stale owned
    /// slot whose only gradient term still to come is the one being computed, so the write is the accumulation.
    func inPlaceDestination(termsLeft: Int?, hasPendingTerm: Bool) -> Tensor? {
        guard gradFn == nil, requiresGrad, gradIsOwnedSlot, gradIsStale, termsLeft == 1, !hasPendingTerm else { return nil }
        return gradValue
    }

    /// In-place `self += other` outside autograd (arena gradients, optimizer state).
    public func addInPlace(_ other: Tensor, alpha: Double = 1) {
        require(other.shape == shape && isContiguous, "addInPlace: \(other.shape) into \(shape)")
        require(other.device == device, "addInPlace: \(other.shape) on \(other.device) into \(shape) on \(device)")
        let o = other.contiguous()
        backend.axpy(alpha: alpha, x: o.buffer, y: buffer, count: count)
    }
}

/// Hears a backward walk's leaf gradients (see `Tensor.backward(_:observer:)`).
public protocol LeafGradientObserver: AnyObject {
    /// Before the walk: the leaves it reaches (a leaf whose consumers all return nil gradients is reached but
    /// never accumulated).
    func willAccumulate(into leaves: [Tensor])
    /// `leaf.grad` is final for this walk.
    func didAccumulate(_ leaf: Tensor)
}

/// Gradients of `output` (contracted with `seed`, default ones) with respect to `inputs` (tracked leaves
/// or intermediates), without touching any `.grad` (torch.autograd.grad). Untracked inputs get nil.
public func gradients(of output: Tensor, wrt inputs: [Tensor], seed: Tensor? = nil) -> [Tensor?] {
    let s = (seed ?? Tensor.ones(output.shape, dtype: output.dtype, device: output.device)).contiguous()
    require(s.device == output.device, "gradients: seed on \(s.device), output on \(output.device)")
    let ids = Set(inputs.map(ObjectIdentifier.init))
    let captured = GradMode.withoutGrad { Autocast.core { Tensor.runBackward(from: output, seed: s, capture: ids) } }
    return inputs.map { captured[ObjectIdentifier($0)] }
}
