import Foundation
import Testing
import HasteModels
import HasteNN
import HasteTensor

/// The tiny fixture MMDiT's forward (output, logits, projections), one HASTE training step's loss and the
/// gradients of every parameter, on `device`, brought back to the CPU.
private func step(on device: Device) throws -> [String: Tensor] {
    let f = try Fixture("mmdit_tiny.safetensors")
    let model = try MMDiT(tinyMMDiTConfig())
    try model.store.load(f.tensors(under: "model."), strict: true)
    model.store.move(to: device)
    let t = f["t"].to(device), x0 = f["x0"].to(device), noise = f["noise"].to(device)
    let xt = (1 - t).reshaped([2, 1, 1, 1]) * x0 + t.reshaped([2, 1, 1, 1]) * noise
    let out = model(xt, t: t, context: f["context"].to(device), logitLayers: [0, 1], projections: true)
    let loss = (out.velocity - noise + x0).square().mean()
        + (out.projections[0] * f["teacher_feats"].to(device)).mean()
        + (out.attentionLogits[1]!.softmax(axis: -1) * f["teacher_logits2"].narrowed(1, start: 0, length: 3).to(device)).sum() * 0.01
    model.store.zeroGrad()
    loss.backward()
    var r = ["output": out.velocity.to(.cpu), "logits0": out.attentionLogits[0]!.to(.cpu),
             "logits1": out.attentionLogits[1]!.to(.cpu), "proj0": out.projections[0].to(.cpu), "loss": loss.to(.cpu)]
    for (key, p) in model.store.parameters { r["grad." + key] = p.grad!.to(.cpu) }
    return r
}

/// On `HostAsCUDA` (the CPU's kernels as cuda:1): equal bits.
@Test func mmditOnTheHostDeviceEqualsTheCPU() throws {
    let cpu = try step(on: .cpu), device = try step(on: HostAsCUDA.device)
    #expect(cpu.count == device.count && cpu.count > 60)
    for (k, v) in cpu { expectClose(device[k]!, v, atol: 0, rtol: 0, k) }
}

/// On the emulated CUDA device (Tests/HasteTests/CUDA/Emulator): within float32 rounding (different reduction
/// orders in the kernels).
@Test func mmditOnTheEmulatedCUDADeviceMatchesTheCPU() throws {
    let cpu = try step(on: .cpu), device = try step(on: EmulatedCUDA.device)
    #expect(cpu.count == device.count)
    for (k, v) in cpu { expectClose(device[k]!, v, atol: 2e-5, rtol: 1e-4, k) }
}
