import HasteTensor

/// Dynamic loss scaling for fp16 training, torch `torch.amp.GradScaler` with its defaults (init_scale 2^16,
/// growth_factor 2, backoff_factor 0.5, growth_interval 2000), as accelerate drives it in train.py:
///
/// 1. the loss is multiplied by `scale` (a power of two: exact) before backward, so small fp16 gradients do not
///    flush to zero;
/// 2. `unscale(_:)` multiplies every gradient by float32(1 / scale) (torch `unscale_`: `inv_scale =
///    scale.double().reciprocal().float()`; inf and NaN stay non-finite); gradient clipping then sees the true
///    gradients;
/// 3. a step whose unscaled gradients hold an inf or NaN (an fp16 overflow) skips the optimizer update, and
///    `update(foundInf:)` halves the scale; after `growthInterval` clean steps in a row the scale doubles.
///
/// The scale is a float32 value, as torch's scale tensor; `scale` and `growthTracker` are the whole state a
/// checkpoint needs.
public struct LossScaler: Equatable, Sendable {
    /// torch's `init_scale`.
    public static let defaultScale: Float = 65536

    /// The factor the loss is multiplied by.
    public private(set) var scale: Float
    /// Clean steps since the last growth or backoff (torch's `_growth_tracker`).
    public private(set) var growthTracker: Int
    public let growthFactor: Float
    public let backoffFactor: Float
    public let growthInterval: Int

    public init(scale: Float = LossScaler.defaultScale, growthTracker: Int = 0, growthFactor: Float = 2,
                backoffFactor: Float = 0.5, growthInterval: Int = 2000) {
        require(scale.isFinite && scale > 0 && growthTracker >= 0 && growthFactor > 1 && backoffFactor > 0
                && backoffFactor < 1 && growthInterval >= 1,
                "LossScaler: scale \(scale), growthTracker \(growthTracker), growthFactor \(growthFactor), backoffFactor \(backoffFactor), growthInterval \(growthInterval)")
        self.scale = scale
        self.growthTracker = growthTracker
        self.growthFactor = growthFactor
        self.backoffFactor = backoffFactor
        self.growthInterval = growthInterval
    }

    /// torch `scaler.unscale_(optimizer)`: every gradient of the store's trainable arena times float32(1 / scale),
    /// one pass. Non-finite gradients stay non-finite; `clipGradNorm` then returns a non-finite norm for them.
    public func unscale(_ store: ParameterStore) {
        require(store.isFinalized, "LossScaler.unscale: finalize the store first")
        let count = store.trainableEnd
        if count == 0 { return }
        let inverse = Float(1 / Double(scale))
        let grads = store.gradBuffer(0)
        grads.storage.backend.scale(grads, count: count, by: Double(inverse))
    }

    /// torch `scaler.update()` after one step: an overflow (`foundInf`) multiplies the scale by `backoffFactor`
    /// and restarts the count of clean steps; the `growthInterval`-th clean step in a row multiplies it by
    /// `growthFactor` (kept only if still finite) and restarts the count.
    public mutating func update(foundInf: Bool) {
        if foundInf {
            scale *= backoffFactor
            growthTracker = 0
            return
        }
        growthTracker += 1
        if growthTracker == growthInterval {
            let grown = scale * growthFactor
            if grown.isFinite { scale = grown }
            growthTracker = 0
        }
    }
}
