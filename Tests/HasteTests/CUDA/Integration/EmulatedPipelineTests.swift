import Foundation
import Testing
import HasteIO
import HasteModels
import HasteTensor
@testable import HasteTraining

/// The trainer and the sampler through the CUDA backend's kernels (on the emulated device), against the CPU.
/// Tests/HasteTests/Device checks the plumbing bit for bit on `HostAsCUDA` (the CPU's kernels as cuda:1); here
/// the kernels differ, so the comparisons are within float32 rounding carried through a few steps.

/// The tiny HASTE run (DINOv2-architecture teacher, projection and attention alignment until the early stop at
/// step 2, checkpoints at 2 and 4, a preview at step 1) on the emulated CUDA device: the same losses as the CPU
/// within 1e-4 relative (4 AdamW steps of float32 rounding differences), the checkpoint laid out the same, and
/// a run resumed from the device's step-2 checkpoint on the CPU continuing like the device run.
@Test func hasteTrainingOnTheEmulatedCUDADeviceMatchesTheCPU() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    c.encWeights = try writeTinyTeacher(dir, c)
    c.expName = "cpu"
    try Trainer(config: c, dataset: SyntheticDataset()).train()
    c.expName = "cuda"
    try Trainer(config: c, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train()
    let cpu = try metricLosses("\(dir)/cpu"), cuda = try metricLosses("\(dir)/cuda")
    #expect(cpu.count == 4 && cuda.count == 4)
    #expect(cpu.first!["attn_loss"]! > 0 && cpu.first!["proj_loss"]! != 0, "the first steps align with the teacher")
    for (a, b) in zip(cpu, cuda) {
        #expect(a.keys.sorted() == b.keys.sorted())
        for (k, v) in a { #expect(abs(b[k]! - v) <= 1e-4 * max(abs(v), 1e-3), "step \(a["step"]!): \(k) \(v) vs \(b[k]!)") }
    }
    let keys = { (run: String) in try SafetensorsFile(path: Checkpoint.path(run, step: 4)).tensors().keys.sorted() }
    #expect(try keys("\(dir)/cpu") == keys("\(dir)/cuda"))
    #expect(FileManager.default.fileExists(atPath: "\(dir)/cuda/samples/0000001.png"), "the preview sampled on the device")

    var resumed = c
    (resumed.expName, resumed.maxTrainSteps) = ("resumed", 2)
    try Trainer(config: resumed, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train()
    (resumed.maxTrainSteps, resumed.resumeStep) = (4, 2)
    try Trainer(config: resumed, dataset: SyntheticDataset(), device: .cpu).train()
    let after = try metricLosses("\(dir)/resumed")
    #expect(after.count == 4)
    for (a, b) in zip(cuda, after) {
        for (k, v) in a { #expect(abs(b[k]! - v) <= 1e-4 * max(abs(v), 1e-3), "resumed step \(a["step"]!): \(k)") }
    }
}

/// SDE and ODE sampling with guidance on the emulated CUDA device: the samples equal the CPU's within float32
/// rounding carried through 4 sampler steps (the sampler's state is float64 on the host; the model runs on the
/// device).
@Test func generationOnTheEmulatedCUDADeviceMatchesTheCPU() throws {
    let cpu = GenerationModel(sit: try tinyGenerationSiT(), pixelSpace: true, name: "SiT-S/2")
    let onDevice = try tinyGenerationSiT()
    onDevice.store.move(to: EmulatedCUDA.device)
    let device = GenerationModel(sit: onDevice, pixelSpace: true, name: "SiT-S/2")
    for mode in GenerateOptions.Mode.allCases {
        var o = tinyGenerateOptions(temporaryDirectory())
        o.mode = mode
        let a = try SampleGenerator(options: o, model: cpu, vae: nil, checkpoint: "x.safetensors")
        let b = try SampleGenerator(options: o, model: device, vae: nil, checkpoint: "x.safetensors")
        expectClose(a.samples([0, 3, 4]), b.samples([0, 3, 4]), atol: 1e-5, rtol: 1e-4, "\(mode) samples")
    }
}

/// The same SDE sampling with TF32 allowed (generate's default `--tf32`): the model's attention goes from qkv
/// through `packedQKVAttention` to the TF32 flash forward, so the samples differ from the float32 run's, and stay
/// within TF32's rounding (2⁻¹¹ on q, k, v and P) of the CPU's, carried through the 4 sampler steps (measured: 2.0e-4
/// from the CPU's and 2.0e-4 from the float32 run's; bound 2e-3).
@Test func tf32GenerationOnTheEmulatedCUDADeviceTakesTheTF32Attention() throws {
    let cpu = GenerationModel(sit: try tinyGenerationSiT(), pixelSpace: true, name: "SiT-S/2")
    let onDevice = try tinyGenerationSiT()
    onDevice.store.move(to: EmulatedCUDA.device)
    let device = GenerationModel(sit: onDevice, pixelSpace: true, name: "SiT-S/2")
    var o = tinyGenerateOptions(temporaryDirectory())
    o.mode = .sde
    let want = try SampleGenerator(options: o, model: cpu, vae: nil, checkpoint: "x.safetensors").samples([0, 3, 4])
    let f32 = try SampleGenerator(options: o, model: device, vae: nil, checkpoint: "x.safetensors").samples([0, 3, 4])
    let tf32 = try EmulatedDriver.$allowsTF32.withValue(true) {
        try SampleGenerator(options: o, model: device, vae: nil, checkpoint: "x.safetensors").samples([0, 3, 4])
    }
    expectClose(want, tf32, atol: 2e-3, rtol: 2e-3, "TF32 samples")
    let diff = zip(f32.scalars(as: Float.self), tf32.scalars(as: Float.self)).map { abs($0 - $1) }.max() ?? 0
    #expect(diff > 1e-6, "TF32 attention ran: samples differ from the float32 run's by \(diff)")
}

/// The tiny HASTE run under `--mixed-precision bf16` on the emulated CUDA device, where linear, matmul and conv2d
/// (the patch embedding) run real bf16 GEMMs forward and backward, against the CPU's autocast composite (operands
/// rounded, float32 GEMMs): the same values up to float32 summation order, so the two differ only where a sum
/// straddles a bf16 rounding midpoint. Measured: losses ≤ 3e-7 relative, grad norm ≤ 4e-5 over the 4 steps; bound
/// 1e-3 relative, a quarter of one bf16 ulp (2⁻⁸).
@Test func bf16TrainingOnTheEmulatedCUDADeviceMatchesTheCPUComposite() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    c.encWeights = try writeTinyTeacher(dir, c)
    c.mixedPrecision = "bf16"
    c.expName = "cpu"
    try Trainer(config: c, dataset: SyntheticDataset()).train()
    c.expName = "cuda"
    let gemms = try EmulatedDriver.countingBF16Gemms {
        try Trainer(config: c, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train()
    }.bf16Gemms
    #expect(gemms > 0, "no bf16 GEMM ran: autocast fell back to float32 GEMMs")
    let cpu = try metricLosses("\(dir)/cpu"), cuda = try metricLosses("\(dir)/cuda")
    #expect(cpu.count == 4 && cuda.count == 4)
    for (a, b) in zip(cpu, cuda) {
        for (k, v) in a { #expect(abs(b[k]! - v) <= 1e-3 * max(abs(v), 1e-3), "step \(a["step"]!): \(k) \(v) vs \(b[k]!)") }
    }
}

/// `--grad-checkpointing` with bf16 autocast on the CUDA backend (its real bf16 GEMM path, `autocastGemm`): the
/// checkpoint's forward runs with grad off, so the GEMM operands it reads (the blocks' weights and biases) must be
/// noted for the recompute. They were not, and every checkpointed bf16 step on the H200 stopped with "checkpoint:
/// the recompute reads a tensor [1152] that requires grad and the forward did not read". The checkpointed run's
/// losses equal the plain run's bit for bit (the same deterministic kernels in the same order).
@Test func bf16GradCheckpointingOnTheEmulatedCUDADeviceMatchesThePlainRun() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    c.encWeights = try writeTinyTeacher(dir, c)
    (c.mixedPrecision, c.maxTrainSteps, c.checkpointingSteps) = ("bf16", 3, 1000)
    c.expName = "plain"
    try Trainer(config: c, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train()
    (c.expName, c.gradCheckpointing) = ("ckpt", true)
    try Trainer(config: c, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train()
    let plain = try metricLosses("\(dir)/plain"), ckpt = try metricLosses("\(dir)/ckpt")
    #expect(plain.count == 3 && ckpt == plain, "losses \(ckpt) with checkpointing vs \(plain) without")
    #expect(plain.first!["attn_loss"]! > 0, "alignment ran (the aligned blocks' logits go through the checkpoint too)")
}
