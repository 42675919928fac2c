import HasteDiffusion
import HasteModels
import HasteNN
import HasteTensor

/// A tiny SiT trained with HASTE alignment (projection + attention-logit alignment against a tiny random
/// DINOv2-architecture teacher), the same 20 steps on two devices from the same seed: every kernel a real
/// training step uses, in the order training uses them (forward with logits, the three loss terms, backward,
/// gradient clipping, AdamW, EMA).
///
/// Student: depth 2, hidden 64, 4 heads, 8×8×4 latents, patch 2 (16 tokens), projector 64 → 48.
/// Teacher: DINOv2 ViT, depth 2, width 48, 4 heads, patch 3 on a 4×4 grid (12×12 images: the 8×8 images are
/// resized by the bicubic kernel as `DINOv2.preprocess` does). Alignment pairs: student blocks 0, 1 with teacher
/// blocks 0, 1, all 4 heads. Batch 4 from a fixed pool of 8; AdamW lr 1e-3, clip 1.0.
public enum TinyHASTE {
    public static let steps = 20
    static let batch = 4, pool = 8

    public struct Losses: Sendable {
        public let total: [Double], denoise: [Double], projection: [Double], attention: [Double]
    }

    static var studentConfig: SiTConfig {
        .selftestTiny(input: 8, channels: 4, hidden: 64, depth: 2, heads: 4, classes: 3, projector: 48, projectorHidden: 64)
    }

    static var teacherConfig: DINOv2Config { .selftestTiny(patch: 3, width: 48, depth: 2, heads: 4, grid: 4, checkpointGrid: 4) }

    /// Trains on `device` and returns the per-step loss terms (the total is what the optimizer minimised).
    public static func train(on device: Device, seed: UInt64) throws -> Losses {
        let student = try SiT(studentConfig, seed: seed)
        student.store.move(to: device)
        let teacher = DINOv2(teacherConfig, seed: seed &+ 1, frozen: true)
        teacher.store.setRequiresGrad(false)
        teacher.store.move(to: device)
        let optimizer = AdamW(store: student.store, lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0)
        let ema = EMA(from: student.store)

        // Data and every random draw come from CPU streams, then are copied: both devices see the same numbers.
        let data = RandomGenerator(seed: seed &+ 2)
        let images = noGrad { (data.uniform([pool, 3, 8, 8]) * 255.0).to(.uint8) }.to(device)
        let latents = data.normal([pool, 4, 8, 8]).to(device)
        let labels = data.randint(0, 3, [pool]).scalars(as: Int64.self)
        let mean = Tensor([Float(0.485), 0.456, 0.406], shape: [1, 3, 1, 1], device: device)
        let std = Tensor([Float(0.229), 0.224, 0.225], shape: [1, 3, 1, 1], device: device)
        let draws = RandomGenerator(seed: seed &+ 3)
        let pairs = [(student: 0, teacher: 0), (student: 1, teacher: 1)]

        var out = (total: [Double](), den: [Double](), proj: [Double](), attn: [Double]())
        for step in 0..<steps {
            let first = (step % 2) * batch
            let x0 = latents[axis: 0, first..<(first + batch)]                                   // (B, 4, 8, 8)
            let teacherOut = noGrad {
                let x = (images[axis: 0, first..<(first + batch)].to(.float32) / 255.0 - mean) / std   // (B, 3, 8, 8)
                return teacher(x.resizeBicubic(height: 12, width: 12, antialias: false), logitLayers: [0, 1])
            }
            let t = draws.uniform([batch]).to(device)
            let noise = draws.normal([batch, 4, 8, 8]).to(device)
            let drop = draws.uniform([batch]).scalars(as: Float.self).map { $0 < 0.1 }
            let y = (0..<batch).map { drop[$0] ? Int64(3) : labels[first + $0] }                 // 3 = null class
            let c = PathType.linear.coefficients(t.reshaped([batch, 1, 1, 1]))
            let xt = c.alpha * x0 + c.sigma * noise
            let s = student(xt, t: t, y: Tensor(y, device: device), logitLayers: [0, 1], projections: true)
            let den = HasteDiffusion.Losses.denoising(prediction: s.velocity, x0: x0, noise: noise, t: t, path: .linear)
            let proj = HasteDiffusion.Losses.projection(s.projections, [teacherOut.patchTokens])
            let attn = HasteDiffusion.Losses.attention(student: s.attentionLogits, teacher: teacherOut.attentionLogits,
                                                       pairs: pairs, heads: 4)
            let total = den + proj * 0.5 + attn * 0.5
            student.store.zeroGrad()
            total.backward()
            clipGradNorm(student.store, maxNorm: 1.0)
            optimizer.step()
            ema.update(decay: 0.9999)
            out.total.append(total.item()); out.den.append(den.item())
            out.proj.append(proj.item()); out.attn.append(attn.item())
        }
        return Losses(total: out.total, denoise: out.den, projection: out.proj, attention: out.attn)
    }
}

/// The training comparison's verdict.
public struct TrainingComparison: Sendable {
    public let device: Losses, cpu: Losses
    public typealias Losses = TinyHASTE.Losses
    /// max over steps of |device − cpu| / |cpu| for the total loss.
    public let maxRelDiff: Double
    public let step: Int
    public let bound: Double
    public var passed: Bool { maxRelDiff <= bound }

    /// The per-step bound on the total loss, relative. See `ConformanceSuite.trainingBoundNote`.
    public static let bound = 1e-4

    public static func run(device: Device, seed: UInt64) throws -> TrainingComparison {
        let d = try TinyHASTE.train(on: device, seed: seed)
        let c = try TinyHASTE.train(on: .cpu, seed: seed)
        var worst = 0.0, at = 1
        for i in 0..<TinyHASTE.steps {
            let r = d.total[i].isFinite ? Swift.abs(d.total[i] - c.total[i]) / Swift.max(Swift.abs(c.total[i]), 1e-30) : .infinity
            if r > worst || (r.isNaN) { worst = r.isNaN ? .infinity : r; at = i + 1 }
        }
        return TrainingComparison(device: d, cpu: c, maxRelDiff: worst, step: at, bound: bound)
    }
}
