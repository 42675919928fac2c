import Foundation
import Testing
import HasteModels
import HasteNN
import HasteTensor
@testable import HasteCUDA
@testable import HasteTraining

/// A HASTE training step reads nothing from the GPU between queuing its first kernel and queuing its backward's
/// last: each read (a device → host copy) waits for the stream, and the GPU then sits idle until the host has queued
/// enough again. The class labels come from the host copy the batch keeps (`Batch.hostLabels`), and the logged loss
/// terms are read only when asked for, after the backward (`Objective.Terms`). On the host-only device, which
/// counts copies, with alignment on (the teacher's pass, the projection and attention losses) in bf16.
@Test func aTrainingStepReadsNothingFromTheDeviceUntilItsBackwardIsQueued() throws {
    let driver = HostOnlyDriver(), device = Device.cuda(18)
    Backends.register(CUDABackend(driver: driver, device: device), for: device)
    var c = tinyRunConfig(temporaryDirectory())
    c.mixedPrecision = "bf16"
    let models = try c.resolveModels(sampleShape: [3, 8, 8], numClasses: 3)
    let sit = try SiT(models.student.sitConfig(for: "this test"), seed: 1)
    sit.store.move(to: device)
    let teacher = DINOv2(try c.teacherConfig(), seed: 9, frozen: true)
    teacher.store.setRequiresGrad(false)
    teacher.store.move(to: device)
    let objective = Objective(config: c, models: models)
    let precision = try #require(ComputePrecision(flag: "bf16", device: device))
    let batch = try SyntheticDataset().batch([0, 1, 2, 3]).to(device)
    #expect(batch.labels.device == device && batch.hostLabels.device == .cpu)
    driver.resetCounts()
    let out = Trainer.teacherOutput(teacher, images: batch.images, align: true, config: c, objective: objective, precision: precision)
    let terms = Trainer.autocast(precision, narrowing: sit.store) {
        objective.loss(student: sit, batch: batch, draws: objective.draw(batch, generator: RandomGenerator(seed: 2)),
                       teacher: out, alignmentActive: true)
    }
    terms.total.backward()
    #expect(driver.downloads.count == 0, "a read from the device before the backward was queued")
    #expect(driver.launchTotal > 100 && driver.gemmTotal > 20, "\(driver.launchTotal) launches, \(driver.gemmTotal) GEMMs")
    _ = (terms.denoise, terms.projection, terms.attention)
    #expect(driver.downloads.count >= 3, "the three logged terms, read when asked for")
}
