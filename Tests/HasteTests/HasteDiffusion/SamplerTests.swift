import Testing
@testable import HasteDiffusion
@testable import HasteTensor

/// Records the batch size of every model call.
final class CallLog: @unchecked Sendable { var sizes: [Int] = [] }

/// Scripts/fixtures/samplers.py's toy model: v = A[y]·x·(1 + t) + B[y]·cos(t), tables [classes + 1, C, H, W].
func toyModel(_ a: Tensor, _ b: Tensor, log: CallLog) -> VelocityModel {
    let rows = a.shape[0]
    return { x, t, y in
        log.sizes.append(x.shape[0])
        let n = x.shape[0], tt = t.reshaped([n, 1, 1, 1])
        let ay = Tensor.embedding(a.reshaped([rows, -1]), y).reshaped(x.shape)
        let by = Tensor.embedding(b.reshaped([rows, -1]), y).reshaped(x.shape)
        return ay * x * (tt + 1.0) + by * tt.cos()
    }
}

/// The cases of Scripts/fixtures/samplers.py (CASES): mode, steps, heun, cfg, low, high, path.
let samplerCases: [(name: String, sde: Bool, steps: Int, heun: Bool, cfg: Double, low: Double, high: Double, path: PathType)] = [
    ("ode_euler_interval", false, 7, false, 4.0, 0.3, 0.72, .linear),
    ("ode_heun_interval", false, 6, true, 2.5, 0.0, 0.5, .linear),
    ("ode_euler_nocfg", false, 5, false, 1.0, 0.0, 1.0, .linear),
    ("sde_linear_interval", true, 9, false, 1.65, 0.0, 0.72, .linear),
    ("sde_cosine_cfg", true, 6, false, 3.0, 0.0, 1.0, .cosine),
    ("sde_linear_nocfg", true, 5, false, 1.0, 0.0, 1.0, .linear),
]

/// The reference keeps x in float64 and returns it; ours returns float32, so the tolerance is float32 rounding
/// of O(1) values (the model itself runs in float32 on both sides, the same elementwise ops in the same order).
@Test func samplersMatchReferenceTrajectories() throws {
    let f = try Fixture("samplers.safetensors")
    for c in samplerCases {
        let log = CallLog()
        let model = toyModel(f["A"], f["B"], log: log)
        let guidance = Guidance(scale: c.cfg, low: c.low, high: c.high, nullClass: 4)
        let z = f["\(c.name).z"], y = f["\(c.name).y"]
        let x: Tensor
        if c.sde {
            let noise = f["\(c.name).noise"]
            x = Samplers.eulerMaruyama(model, noise: z, labels: y, steps: c.steps, guidance: guidance, path: c.path) { noise.select(axis: 0, index: $0) }
        } else {
            x = Samplers.euler(model, noise: z, labels: y, steps: c.steps, guidance: guidance, heun: c.heun)
        }
        expectClose(x, f["\(c.name).x"].to(.float32), atol: 2e-6, rtol: 1e-6, c.name)
        #expect(log.sizes == f["\(c.name).calls"].scalars(as: Int.self), "\(c.name): model batch sizes per call")
    }
}

@Test func timeGridsAreTorchLinspaceBitForBit() throws {
    let f = try Fixture("samplers.safetensors")
    #expect(Samplers.odeGrid(steps: 50) == f["grid.ode50"].scalars(as: Double.self))
    #expect(Samplers.odeGrid(steps: 7) == f["grid.ode7"].scalars(as: Double.self))
    #expect(Samplers.sdeGrid(steps: 250) == f["grid.sde250"].scalars(as: Double.self))
    #expect(Samplers.sdeGrid(steps: 9) == f["grid.sde9"].scalars(as: Double.self))
    let g = Guidance(scale: 1.65, low: 0, high: 0.72, nullClass: 1000)
    #expect(g.isActive(at: 0.72) && g.isActive(at: 0) && !g.isActive(at: 0.7200001))
    #expect(!Guidance(scale: 1, nullClass: 10).isActive(at: 0.5))
}

/// A sample's noise, label and SDE increments depend on (seed, index) only: batches of 2 and of 3 over the
/// same six indices give the same samples (the toy model is row-wise, so exactly).
@Test func perSampleStreamsMakeBatchingIrrelevant() throws {
    let f = try Fixture("samplers.safetensors")
    let model = toyModel(f["A"], f["B"], log: CallLog())
    let guidance = Guidance(scale: 2, low: 0, high: 0.6, nullClass: 4)
    func run(_ batch: Int) -> (Tensor, Tensor) {
        var xs: [Tensor] = [], ys: [Tensor] = []
        for first in stride(from: 0, to: 6, by: batch) {
            let s = SampleNoise(seed: 7, indices: Array(first..<min(6, first + batch)))
            let z = s.normal([2, 3, 3]), y = s.labels(numClasses: 4)
            xs.append(Samplers.eulerMaruyama(model, noise: z, labels: y, steps: 5, guidance: guidance, path: .linear, streams: s))
            ys.append(y)
        }
        return (Tensor.cat(xs, axis: 0), Tensor.cat(ys, axis: 0))
    }
    let (x2, y2) = run(2), (x3, y3) = run(3)
    expectClose(x2, x3, atol: 0, rtol: 0, "samples")
    #expect(y2.scalars(as: Int.self) == y3.scalars(as: Int.self))
    #expect(Set(y2.scalars(as: Int.self)).count > 1)                             // labels do vary
    #expect(SampleNoise.streamSeed(0, index: 1) != SampleNoise.streamSeed(1, index: 0))
}
