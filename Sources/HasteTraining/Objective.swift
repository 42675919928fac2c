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
        public let denoise: Double, projection: Double, attention: Double
    }

    /// Random inputs of one step, drawn in a fixed order from the run's generator (or given by tests).
    public struct Draws {
        public let t: Tensor, noise: Tensor, latentNoise: Tensor?, dropMask: [Bool]
    }

    public init(config: TrainConfig, models: ResolvedModels) {
        self.config = config
        self.models = models
    }

    public func draw(_ batch: Batch, generator: RandomGenerator) -> Draws {
        let b = batch.labels.count, shape = [b] + (batch.moments ? [batch.x0.shape[1] / 2] + Array(batch.x0.shape.dropFirst(2)) : Array(batch.x0.shape.dropFirst()))
        let latentNoise = batch.moments ? generator.normal(shape) : nil
        let t = config.weighting.sample(b, path: config.pathType, generator: generator)
        let noise = generator.normal(shape)
        let drop = generator.uniform([b]).scalars(as: Float.self).map { Double($0) < config.cfgProb }
        return Draws(t: t, noise: noise, latentNoise: latentNoise, dropMask: drop)
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

    public func loss(student: SiT, batch: Batch, draws d: Draws, teacher: DINOv2Output?, alignmentActive: Bool) -> Terms {
        let x0 = cleanSample(batch, d)
        let c = config.pathType.coefficients(d.t.reshaped([d.t.count, 1, 1, 1]))
        let xt = c.alpha * x0 + c.sigma * d.noise
        let labels = batch.labels.scalars(as: Int64.self).enumerated().map { d.dropMask[$0.offset] ? Int64(models.student.numClasses) : $0.element }
        let align = alignmentActive && teacher != nil
        let wantProj = align && config.projCoeff != 0
        let out = student(xt, t: d.t, y: Tensor(labels, shape: [labels.count]),
                          logitLayers: align && config.attnCoeff != 0 ? Set(models.pairs.map(\.student)) : [],
                          projections: wantProj)
        let den = Losses.denoising(prediction: out.velocity, x0: x0, noise: d.noise, t: d.t, path: config.pathType)
        var total = den, proj = 0.0, attn = 0.0
        if align, let teacher {
            if wantProj {
                let p = Losses.projection(out.projections, [teacher.patchTokens])
                total = total + p * config.projCoeff
                proj = p.item()
            }
            if config.attnCoeff != 0 {
                let a = Losses.attention(student: out.attentionLogits, teacher: teacher.attentionLogits, pairs: models.pairs, heads: models.heads)
                total = total + a * config.attnCoeff
                attn = a.item()
            }
        }
        return Terms(total: total, denoise: den.item(), projection: proj, attention: attn)
    }
}
