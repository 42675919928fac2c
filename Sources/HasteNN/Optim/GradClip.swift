import HasteTensor

/// torch `nn.utils.clip_grad_norm_(params, max_norm)`: total = √(Σ g²) over every gradient, then all
/// gradients are multiplied by min(maxNorm / (total + 1e-6), 1). One reduction and at most one scaling
/// pass over the gradient arena. Returns the norm before clipping. A non-finite total is returned as is and
/// the gradients are multiplied as torch does (by 0 when inf, so inf entries become NaN; by NaN when NaN).
@discardableResult
public func clipGradNorm(_ store: ParameterStore, maxNorm: Double) -> Double {
    require(store.isFinalized, "clipGradNorm: finalize the store first")
    require(maxNorm > 0, "clipGradNorm: maxNorm \(maxNorm)")
    let count = store.trainableEnd
    if count == 0 { return 0 }
    let grads = store.gradBuffer(0)
    let total = grads.storage.backend.sumOfSquares(grads, count: count).squareRoot()
    let raw = maxNorm / (total + 1e-6)
    let coefficient = raw.isNaN ? raw : Swift.min(raw, 1)        // torch.clamp(max=1) keeps NaN
    if coefficient != 1 { grads.storage.backend.scale(grads, count: count, by: coefficient) }  // ×1 is exact
    if !coefficient.isFinite { store.gradientPaddingDirty = true }                        // 0 · NaN in the padding
    return total
}
