import HasteDiffusion
import HasteTensor

extension OpBenchmarks {
    static let samplerBatch = 64, samplerSteps = 10

    /// The host side of `haste generate`'s SDE sampler at SiT-XL/2's 256² latents [64, 4, 32, 32], CFG on every step:
    /// 10 steps of per-sample noise draws and float64 state arithmetic around a model that returns a fixed velocity
    /// (the state lives on the CPU; on a GPU this work sits between two model calls, with the GPU idle).
    /// Scripts/bench_torch.py's row runs the reference's `euler_maruyama_sampler` body on the CPU the same way.
    static func sampler(seed: UInt64) -> [BenchCase] {
        let shape = [samplerBatch, 4, 32, 32]
        return [BenchCase(op: "sde sampler host", shape: "\(shape), cfg, \(samplerSteps) steps", work: .images(Double(samplerBatch))) {
            let v = Tensor.randn([2 * samplerBatch] + shape.dropFirst(), seed: seed)
            let z = Tensor.randn(shape, seed: seed + 1)
            let y = Tensor((0..<samplerBatch).map { Int64($0 * 7 % 1000) }, shape: [samplerBatch])
            let guidance = Guidance(scale: 1.65, low: 0, high: 1, nullClass: 1000)
            return {
                let streams = SampleNoise(seed: seed, indices: Array(0..<samplerBatch))
                _ = Samplers.eulerMaruyama({ _, _, _ in v }, noise: z, labels: y, steps: samplerSteps, guidance: guidance,
                                           path: .linear, streams: streams)
            }
        }]
    }
}
