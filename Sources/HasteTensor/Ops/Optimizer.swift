import RealModule

/// Kernels of the Optimizer family: in-place passes over flat regions of a parameter arena (STYLE §2.6).
/// HasteNN's AdamW, EMA and gradient clipping call them once per arena region, never per parameter.
/// All buffers share one float dtype; `count` elements are read and written in place.
public protocol OptimizerKernels: AnyObject {
    /// One AdamW step, torch `torch.optim.AdamW` (foreach=False, amsgrad=False, maximize=False), in torch's
    /// order of operations: see `AdamWCoefficients` for the scalars and `CPUBackend.adamw` for the element
    /// arithmetic. `step` is the 1-based step number after this update (torch's `state["step"]`).
    func adamw(param: Buffer, grad: Buffer, m: Buffer, v: Buffer, count: Int, lr: Double, beta1: Double,
               beta2: Double, eps: Double, weightDecay: Double, step: Int)
    /// ema ← decay·ema + (1 − decay)·param; torch `ema.mul_(decay).add_(param, alpha=1 - decay)`.
    func emaUpdate(ema: Buffer, param: Buffer, count: Int, decay: Double)
    /// Σ x², accumulated in SIMD16 lanes per fixed chunk, chunk sums combined in index order (bitwise
    /// reproducible whatever the thread count). Returned as Double for the global gradient norm.
    func sumOfSquares(_ x: Buffer, count: Int) -> Double
    /// x ← x · by (the gradient-clipping multiply).
    func scale(_ x: Buffer, count: Int, by: Double)
}

/// The scalars of one AdamW step, computed in Double exactly as torch's `_single_tensor_adam` does in
/// Python before they reach its float32 kernels. Shared by every backend so they agree bit for bit.
public struct AdamWCoefficients: Sendable, Equatable {
    /// 1 − lr·wd: the decoupled decay factor (applied only when weightDecay ≠ 0, as torch does).
    public let decayFactor: Double
    /// 1 − β1: the lerp weight of `exp_avg.lerp_(grad, 1 - beta1)`.
    public let lerpWeight: Double
    public let beta2: Double
    /// 1 − β2: the `addcmul_` value of the second moment.
    public let oneMinusBeta2: Double
    /// √(1 − β2^step), torch `bias_correction2 ** 0.5`.
    public let biasCorrection2Sqrt: Double
    /// −lr / (1 − β1^step): the `addcdiv_` value.
    public let negStepSize: Double
    public let eps: Double
    public let applyDecay: Bool

    public init(lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) {
        require(step >= 1, "adamw: step \(step) (the first update is step 1)")
        let bc1 = 1 - Double.pow(beta1, Double(step))
        let bc2 = 1 - Double.pow(beta2, Double(step))
        decayFactor = 1 - lr * weightDecay
        lerpWeight = 1 - beta1
        self.beta2 = beta2
        oneMinusBeta2 = 1 - beta2
        biasCorrection2Sqrt = Double.pow(bc2, 0.5)
        negStepSize = -(lr / bc1)
        self.eps = eps
        applyDecay = weightDecay != 0
    }
}
