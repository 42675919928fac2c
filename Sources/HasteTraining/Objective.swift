import HasteDiffusion
import HasteModels
import HasteTensor

/// The HASTE objective for one micro-batch (spec/method.md §4–9): denoising loss plus, while
/// `alignmentActive`, projection and attention alignment against a frozen teacher.
public struct Objective {
    public let config: TrainConfig
    public let models: ResolvedModels

    public struct Terms {
        public let total: Tensor          // differentiable scalar
        /// The logged parts, scalars on the loss's device (nil: the term is off), read by `denoise`, `projection` and
        /// `attention` only when asked for: the Trainer asks once the backward is queued, so the GPU goes on from
        /// the forward into the backward instead of draining while the host reads (each read waits for the device).
        let parts: (denoise: Tensor, projection: Tensor?, attention: Tensor?)
        public var denoise: Double { parts.denoise.item() }
        public var projection: Double { parts.projection?.item() ?? 0 }
        public var attention: Double { parts.attention?.item() ?? 0 }
    }

    /// Random inputs of one micro-batch (or given by tests).
    public struct Draws {
        public let t: Tensor, noise: Tensor, latentNoise: Tensor?, dropMask: [Bool]
    }

    public init(config: TrainConfig, models: ResolvedModels) {
        self.config = config
        self.models = models
    }

    /// One sample's shape: x0's, or the latent's (half the moment channels).
    func sampleShape(_ batch: Batch) -> [Int] {
        batch.moments ? [batch.x0.shape[1] / 2] + Array(batch.x0.shape.dropFirst(2)) : Array(batch.x0.shape.dropFirst())
    }

    /// Stream elements one sample's draws take: posterior noise, t, noise, label drop (each whole 4-blocks).
    public func drawStride(_ batch: Batch) -> Int {
        let n = (sampleShape(batch).reduce(1, *) + 3) / 4 * 4
        return (batch.moments ? n : 0) + 4 + n + 4
    }

    /// The draws of `batch`, which holds samples first..<first + b of a global batch of `globalBatch` (default:
    /// the batch itself). The generator advances by globalBatch · stride; sample g draws from its own counters
    /// start + g·stride ..< start + (g + 1)·stride, in the order posterior noise, t, noise, label drop. So a
    /// sample's draws depend on (seed, micro-batch, g) only, not on how many ranks share the batch (issue #13).
    /// Drawn on the host, then moved to the batch's device (the same numbers whatever the device). The per-sample
    /// offsets are taken in sample order, then the normal fills run in parallel (most of the work: 64 × 4 096 numbers
    /// a SiT-XL/2 step, most of a ~6 ms host stretch with the GPU idle on one core of the 2-core EPYC, host-only device).
    public func draw(_ batch: Batch, generator: RandomGenerator, globalBatch: Int? = nil, first: Int = 0) -> Draws {
        let b = batch.labels.count, shape = sampleShape(batch), stride = drawStride(batch), per = shape.reduce(1, *)
        require(first >= 0 && first + b <= globalBatch ?? b, "Objective.draw: samples \(first)..<\(first + b) of a batch of \(globalBatch ?? b)")
        let start = generator.reserve(stride * (globalBatch ?? b))
        var ts: [Tensor] = [], drop: [Bool] = [], latentAt: [UInt64] = [], noiseAt: [UInt64] = []
        for i in 0..<b {
            let g = RandomGenerator(seed: generator.seed, offset: start + UInt64((first + i) * stride))
            if batch.moments { latentAt.append(g.reserve(per)) }        // g.normal([1] + shape)'s counters
            ts.append(config.weighting.sample(1, path: config.pathType, generator: g))
            noiseAt.append(g.reserve(per))
            drop.append(Double(g.uniform([1]).scalars(as: Float.self)[0]) < config.cfgProb)
            require(g.offset <= start + UInt64((first + i + 1) * stride), "Objective.draw: sample \(first + i) drew past its stride \(stride)")
        }
        let noise = Tensor.empty([b] + shape), latent = batch.moments ? Tensor.empty([b] + shape) : nil
        let seed = generator.seed, backend = noise.backend, nb = noise.buffer, lb = latent?.buffer
        Parallel.forEach(b) { i in
            backend.fillNormal(nb.advanced(by: i * per), count: per, seed: seed, offset: noiseAt[i])
            if let lb { backend.fillNormal(lb.advanced(by: i * per), count: per, seed: seed, offset: latentAt[i]) }
        }
        let device = batch.x0.device
        return Draws(t: Tensor.cat(ts, axis: 0).to(device), noise: noise.to(device), latentNoise: latent?.to(device), dropMask: drop)
    }

    /// x0 for the student: pixels as given, or a fresh posterior sample (mean + std·n)·scale.
    public func cleanSample(_ batch: Batch, _ d: Draws) -> Tensor {
        guard batch.moments, let n = d.latentNoise else { return batch.x0 }
        let halves = batch.x0.chunk(2, axis: 1)
        return (halves[0] + halves[1] * n) * config.latentScale
    }

    /// Teacher features and logits (no gradient), computed only when alignment is active.
    public func teacherPass(_ teacher: DINOv2, images: Tensor) -> DINOv2Output {
        noGrad {
            let x = DINOv2.preprocess(images, size: teacher.config.imageSize)
            return teacher(x, logitLayers: Set(models.pairs.map(\.teacher)))
        }
    }

    /// The student's condition: the batch's caption features (CFG drop done by the dataset, spec/method.md §10), or its
    /// labels with the drawn drop mask applied (dropped → the null class).
    public func condition(_ batch: Batch, _ d: Draws) -> Conditioning {
        if let context = batch.context { return .context(context) }
        guard case .sit(let s) = models.student else { fatalError("Objective: an MMDiT student got a batch without caption features") }
        let labels = batch.hostLabels.scalars(as: Int64.self).enumerated().map { d.dropMask[$0.offset] ? Int64(s.numClasses) : $0.element }
        return .labels(Tensor(labels, shape: [labels.count], device: batch.x0.device))
    }

    public func loss(student: any DenoisingStudent, batch: Batch, draws d: Draws, teacher: DINOv2Output?, alignmentActive: Bool) -> Terms {
        let x0 = cleanSample(batch, d)
        let c = config.pathType.coefficients(d.t.reshaped([d.t.count, 1, 1, 1]))
        let xt = c.alpha * x0 + c.sigma * d.noise
        let align = alignmentActive && teacher != nil
        let wantProj = align && config.projCoeff != 0
        let out = BF16Branch.$recomputesMLPActivation.withValue(config.recomputeMlpActivation) {
            student.predict(xt, t: d.t, condition: condition(batch, d),
                            logitLayers: align && config.attnCoeff != 0 ? Set(models.pairs.map(\.student)) : [],
                            projections: wantProj, checkpointing: config.gradCheckpointing)
        }
        let den = Losses.denoising(prediction: out.velocity, x0: x0, noise: d.noise, t: d.t, path: config.pathType)
        var total = den, proj: Tensor?, attn: Tensor?
        if align, let teacher {
            if wantProj {
                let p = Losses.projection(out.projections, [teacher.patchTokens])
                total = total + p * config.projCoeff
                proj = p
            }
            if config.attnCoeff != 0 {
                let a = Losses.attention(student: out.attentionLogits, teacher: teacher.attentionLogits, pairs: models.pairs, heads: models.heads)
                total = total + a * config.attnCoeff
                attn = a
            }
        }
        return Terms(total: total, parts: (den, proj, attn))
    }
}
