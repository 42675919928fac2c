import HasteTensor

/// Classifier-free guidance with a guidance interval (spec/sampling.md §1).
public struct Guidance: Sendable {
    public var scale: Double = 1
    public var low: Double = 0
    public var high: Double = 1
    /// The label of the unconditional pass: the model's number of classes (the last row of its label table).
    public var nullClass: Int
    /// MMDiT: the unconditional pass's context [L, D] (the text features of "", `empty_context`), repeated over the
    /// batch; nil for class labels (`nullClass`).
    public var nullContext: Tensor?
    public init(scale: Double = 1, low: Double = 0, high: Double = 1, nullClass: Int) {
        (self.scale, self.low, self.high, self.nullClass) = (scale, low, high, nullClass)
    }
    /// Guidance against a null context [L, D] (text-to-image: conditions are contexts [N, L, D]).
    public init(scale: Double = 1, low: Double = 0, high: Double = 1, nullContext: Tensor) {
        require(nullContext.rank == 2, "Guidance: null context \(nullContext.shape), expected [tokens, features]")
        (self.scale, self.low, self.high, self.nullClass, self.nullContext) = (scale, low, high, -1, nullContext)
    }
    /// Active at t iff scale > 1 and low ≤ t ≤ high (inclusive, decided from t_cur only).
    public func isActive(at t: Double) -> Bool { scale > 1 && low <= t && t <= high }

    /// The unconditional conditions for `count` samples, like `y`: labels `nullClass` [count], or the null context
    /// repeated [count, L, D].
    func null(count: Int, like y: Tensor) -> Tensor {
        guard let c = nullContext else { return Tensor.full([count], Double(nullClass), dtype: y.dtype, device: y.device) }
        require(y.rank == 3 && Array(y.shape.dropFirst()) == c.shape, "Guidance: contexts \(y.shape) for a null context \(c.shape)")
        return c.to(y.device).unsqueezed(0).expanded([count] + c.shape).contiguous()
    }
}

/// The model as a sampler sees it: velocity for float32 x (N, …), float32 times t (N) and conditions y: int64
/// labels (N) for SiT, float32 contexts (N, L, D) for MMDiT. The velocity may be on any device (`onDevice`: the
/// model's); the samplers read it back to the host when they need it.
public typealias VelocityModel = (_ x: Tensor, _ t: Tensor, _ y: Tensor) -> Tensor

/// ODE/SDE samplers integrating from t = 1 (noise) to t = 0 (data), REPA/HASTE `samplers.py`
/// (`euler_sampler`, `euler_maruyama_sampler`). The state is kept in float64 between steps; the model sees it
/// cast to float32, and its output is cast back to float64 before any arithmetic. Every row of the batch is
/// independent of the others, so results do not depend on how samples are grouped into batches (up to the
/// model's float rounding).
public enum Samplers {
    /// torch.linspace(start, end, steps) in float64, element for element: the first half counts up from
    /// `start`, the second half down from `end` (ATen's CPU kernel), each a fused multiply-add as torch 2.13's
    /// build computes it, so grids match the reference bit for bit (pinned by a fixture).
    public static func linspace(_ start: Double, _ end: Double, _ steps: Int) -> [Double] {
        require(steps >= 1, "linspace: steps \(steps) < 1")
        if steps == 1 { return [start] }
        let step = (end - start) / Double(steps - 1), halfway = steps / 2
        return (0..<steps).map { i in
            i < halfway ? start.addingProduct(step, Double(i)) : end.addingProduct(-step, Double(steps - i - 1))
        }
    }

    /// The ODE grid: linspace(1, 0, steps + 1) (spec/sampling.md §2).
    public static func odeGrid(steps: Int) -> [Double] { linspace(1, 0, steps + 1) }

    /// The SDE grid: linspace(1, 0.04, steps), then 0 (spec/sampling.md §3).
    public static func sdeGrid(steps: Int) -> [Double] { linspace(1, 0.04, steps) + [0] }

    /// Euler (or Heun) ODE on `odeGrid(steps)` (spec/sampling.md §2). `noise` is x at t = 1 (N, …);
    /// Heun's corrector reuses the guidance decision of t_cur and is skipped on the last step. Returns float32.
    public static func euler(_ model: VelocityModel, noise: Tensor, labels: Tensor, steps: Int, guidance: Guidance,
                             heun: Bool = false) -> Tensor {
        require(steps >= 1, "euler sampler: steps \(steps) < 1")
        require(labels.rank >= 1 && labels.shape[0] == noise.shape[0], "euler sampler: conditions \(labels.shape) for noise \(noise.shape)")
        let grid = odeGrid(steps: steps)
        var x = noise.to(.float64).contiguous()
        let conditions = Conditions(labels, guidance: guidance)
        noGrad {
            for j in 0..<steps {
                let tCur = grid[j], tNext = grid[j + 1]
                let active = guidance.isActive(at: tCur)
                let d = velocity(model, x, t: tCur, y: conditions, guidance: guidance, active: active)
                let xEuler = axpy(x, d, tNext - tCur)
                if heun && j < steps - 1 {
                    let d2 = velocity(model, xEuler, t: tNext, y: conditions, guidance: guidance, active: active)
                    x = heunUpdate(x, d, d2, tNext - tCur)
                } else {
                    x = xEuler
                }
            }
        }
        return x.to(.float32)
    }

    /// Euler–Maruyama SDE on `sdeGrid(steps)` (spec/sampling.md §3): w(t) = 2t, drift d = v − ½·w·score with the
    /// score from the velocity through the path coefficients; x += d·dt + √w(t_cur)·√|dt|·n for j < steps − 1,
    /// then one noiseless step from 0.04 to 0. `stepNoise(j)` gives n for step j, shaped like `noise`, float64:
    /// per-sample streams (`SampleNoise`) in generation, fixture tensors in tests. Returns float32.
    public static func eulerMaruyama(_ model: VelocityModel, noise: Tensor, labels: Tensor, steps: Int, guidance: Guidance,
                                     path: PathType, stepNoise: (Int) -> Tensor) -> Tensor {
        require(steps >= 2, "SDE sampler: steps \(steps) < 2")
        require(labels.rank >= 1 && labels.shape[0] == noise.shape[0], "SDE sampler: conditions \(labels.shape) for noise \(noise.shape)")
        let grid = sdeGrid(steps: steps)
        var x = noise.to(.float64).contiguous()
        let conditions = Conditions(labels, guidance: guidance)
        noGrad {
            for j in 0..<steps {
                let tCur = grid[j], tNext = grid[j + 1], dt = tNext - tCur
                let last = j == steps - 1
                let active = guidance.isActive(at: tCur)
                // The model's work queued on its device, the step's noise drawn on the host meanwhile, then the
                // velocity read (a sample's draws come from its own stream in step order: when is immaterial).
                let queued = evaluate(model, x, t: tCur, y: conditions, active: active)
                let n = last ? nil : stepNoise(j)              // (shape checked by sdeUpdate)
                let v = queued.to(.cpu)
                x = sdeUpdate(x, velocity: v, t: tCur, dt: dt, path: path, scale: active ? guidance.scale : nil, noise: n,
                              noiseScale: (2 * tCur).squareRoot() * Swift.abs(dt).squareRoot())
            }
        }
        return x.to(.float32)
    }

    /// The SDE with each row's increments drawn from that sample's own stream.
    public static func eulerMaruyama(_ model: VelocityModel, noise: Tensor, labels: Tensor, steps: Int, guidance: Guidance,
                                     path: PathType, streams: SampleNoise) -> Tensor {
        require(streams.count == noise.shape[0], "SDE sampler: \(streams.count) streams for batch \(noise.shape)")
        let shape = Array(noise.shape.dropFirst())
        return eulerMaruyama(model, noise: noise, labels: labels, steps: steps, guidance: guidance, path: path) { _ in
            streams.normal(shape, dtype: .float64)
        }
    }

    /// `model` on `device` for the samplers, whose float64 state stays on the CPU (float64 is a CPU dtype): each
    /// call moves x and t to the device and returns the velocity there, its work queued; the samplers read it back
    /// when they need it (the SDE draws its step noise first). y goes to the device once per tensor: the samplers
    /// pass the same two condition tensors every step (`Conditions`: y and [y, null]; an MMDiT's contexts are
    /// [2N, 77, D]), so the two used last are kept there, by identity — y must not change in place between calls.
    /// On the CPU it is `model` itself.
    public static func onDevice(_ device: Device, _ model: @escaping VelocityModel) -> VelocityModel {
        guard device != .cpu else { return model }
        let uploads = DeviceCopies(device: device)
        return { x, t, y in model(x.to(device), t.to(device), uploads.copy(y)) }
    }

    /// The device copies of the two host tensors asked for most recently (`onDevice`'s conditions).
    final class DeviceCopies {
        let device: Device
        private var kept: [(host: Tensor, copy: Tensor)] = []
        init(device: Device) { self.device = device }
        func copy(_ y: Tensor) -> Tensor {
            if let i = kept.firstIndex(where: { $0.host === y }) {
                kept.insert(kept.remove(at: i), at: 0)        // the most recently used first
                return kept[0].copy
            }
            let copy = y.to(device)
            kept = [(y, copy)] + kept.prefix(1)
            return copy
        }
    }

    /// A sampler's conditions: y, and for guided steps [y, null] made once (contexts are [N, L, D]: not a copy a step).
    final class Conditions {
        let plain: Tensor
        private let guidance: Guidance
        private var both: Tensor?
        init(_ y: Tensor, guidance: Guidance) { (plain, self.guidance) = (y, guidance) }
        func y(_ active: Bool) -> Tensor {
            guard active else { return plain }
            if let both { return both }
            let b = Tensor.cat([plain, guidance.null(count: plain.shape[0], like: plain)], axis: 0)
            both = b
            return b
        }
    }

    /// The model at (x, t): on [x] with y, or guided on [x, x] with [y, null] (float32 input, t a float32 row per input
    /// row), on the model's device (`onDevice`: not read back yet).
    static func evaluate(_ model: VelocityModel, _ x: Tensor, t: Double, y: Conditions, active: Bool) -> Tensor {
        model(modelInput32(x, guided: active), Tensor.full([active ? 2 * x.shape[0] : x.shape[0]], t), y.y(active))
    }

    /// The model's velocity at (x, t) as float64 on the host, CFG-combined when active.
    static func velocity(_ model: VelocityModel, _ x: Tensor, t: Double, y: Conditions, guidance: Guidance, active: Bool) -> Tensor {
        combinedVelocity(evaluate(model, x, t: t, y: y, active: active).to(.cpu), like: x, scale: active ? guidance.scale : nil)
    }
}

/// Every random draw of one sample — its initial noise, its label and each SDE increment — from a stream of its
/// own, seeded by (global seed, sample index) alone. A sample therefore comes out the same whichever batch,
/// shard or resumed run produces it. Draws happen in the reference's order: noise, then label, then the SDE.
public final class SampleNoise {
    public let indices: [Int]
    let generators: [RandomGenerator]
    public var count: Int { indices.count }

    public init(seed: UInt64, indices: [Int]) {
        self.indices = indices
        generators = indices.map { RandomGenerator(seed: SampleNoise.streamSeed(seed, index: $0)) }
    }

    /// SplitMix64 finalizer over (seed, index): neighbouring indices get unrelated Philox keys.
    public static func streamSeed(_ seed: UInt64, index: Int) -> UInt64 {
        var z = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(truncatingIfNeeded: index) &+ 0x632B_E59B_D9B4_E019
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// N(0, 1) of shape [count] + `shape`; row r from stream r (`RandomGenerator.normal` of [1] + shape each, the
    /// same values), the rows drawn in parallel: the SDE draws one a sample and step, most of the sampler's host work
    /// (9 draws of [64, 4, 32, 32] float64: 26.7 ms on 2 threads of the 2-core EPYC).
    public func normal(_ shape: [Int], dtype: DType = .float32) -> Tensor {
        let per = shape.reduce(1, *)
        let out = Tensor.empty([count] + shape, dtype: dtype)
        let offsets = generators.map { $0.reserve(per) }
        let buffer = out.buffer, backend = out.backend
        Parallel.forEach(count) { r in
            backend.fillNormal(buffer.advanced(by: r * per), count: per, seed: generators[r].seed, offset: offsets[r])
        }
        return out
    }

    /// Labels uniform in [0, numClasses) (torch.randint), int64 [count]; row r from stream r.
    public func labels(numClasses: Int) -> Tensor {
        Tensor.cat(generators.map { $0.randint(0, numClasses, [1]) }, axis: 0)
    }
}
