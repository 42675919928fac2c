import Testing
@testable import HasteDiffusion
@testable import HasteTensor

/// What the samplers do around a model on another device (`Samplers.onDevice`, driven on `HostAsCUDA`: the CPU's
/// kernels as cuda:1, so the values are the CPU's own): the velocity stays on the device until the sampler reads
/// it, the SDE draws a step's noise while the model's work is queued, and the conditions go to the device once.

/// The order of a sampler's events, and the conditions each model call received (held: no identity is reused).
final class DeviceLog: @unchecked Sendable {
    var events: [String] = []
    var conditions: [Tensor] = []
    /// How many distinct tensors the calls received.
    var distinctConditions: Int { conditions.indices.filter { i in !conditions[..<i].contains { $0 === conditions[i] } }.count }
}

/// v = x·(1 + t) + y as floats, on the device it is called on; every call and the device of its inputs logged.
func loggingModel(_ log: DeviceLog) -> VelocityModel {
    { x, t, y in
        log.events.append("model \(x.shape[0]) on \(x.device)")
        log.conditions.append(y)
        #expect(t.device == x.device && y.device == x.device, "inputs on \(x.device), \(t.device), \(y.device)")
        let n = x.shape[0]
        return x * (t.reshaped([n, 1, 1, 1]) + 1.0) + y.to(.float32).reshaped([n, 1, 1, 1])
    }
}

/// The SDE with guidance on part of its grid: each step's noise is drawn after that step's model call (whose work is
/// queued on the device, the velocity not read yet), the samples equal the CPU model's bit for bit, and the model
/// sees two condition tensors on the device in all ([y] and [y, null], each uploaded once), not a copy a step.
@Test func sdeDrawsItsNoiseWhileTheModelRunsAndUploadsTheConditionsOnce() throws {
    let z = Tensor.randn([3, 2, 2, 2], seed: 1), y = Tensor([Int64(0), 2, 1], shape: [3])
    let guidance = Guidance(scale: 1.65, low: 0, high: 0.72, nullClass: 4)
    let noise = Tensor.randn([6, 3, 2, 2, 2], dtype: .float64, seed: 2)
    func run(_ model: @escaping VelocityModel, _ log: DeviceLog) -> Tensor {
        Samplers.eulerMaruyama(model, noise: z, labels: y, steps: 6, guidance: guidance, path: .linear) { j in
            log.events.append("noise \(j)")
            return noise.select(axis: 0, index: j)
        }
    }
    let cpuLog = DeviceLog(), deviceLog = DeviceLog()
    let want = run(loggingModel(cpuLog), cpuLog)
    let got = run(Samplers.onDevice(HostAsCUDA.device, loggingModel(deviceLog)), deviceLog)
    #expect(got.device == .cpu && got.scalars(as: Float.self) == want.scalars(as: Float.self))
    // sdeGrid(6) = 1, 0.808, 0.616, 0.424, 0.232, 0.04, 0: guided (t ≤ 0.72) from the third step on.
    let sizes = [3, 3, 6, 6, 6, 6]
    var expected: [String] = []
    for (j, n) in sizes.enumerated() {
        expected.append("model \(n) on \(HostAsCUDA.device)")
        if j < 5 { expected.append("noise \(j)") }         // the last step is noiseless
    }
    #expect(deviceLog.events == expected, "\(deviceLog.events)")
    #expect(deviceLog.distinctConditions == 2, "conditions: \(deviceLog.conditions.count) calls, \(deviceLog.distinctConditions) tensors")
    #expect(cpuLog.distinctConditions == 2, "the CPU model gets the sampler's own two tensors")
}

/// `onDevice` keeps the device copies of the two condition tensors it was given most recently, by identity: a third
/// one evicts the one used longer ago, which is then uploaded again; the ODE reads each velocity back (float64 state on the host).
@Test func onDeviceKeepsTheLastTwoConditionTensors() throws {
    let log = DeviceLog()
    let model = Samplers.onDevice(HostAsCUDA.device, loggingModel(log))
    let x = Tensor.randn([2, 2, 2, 2], seed: 3), t = Tensor.full([2], 0.5)
    let a = Tensor([Int64(1), 2], shape: [2]), b = Tensor([Int64(3), 0], shape: [2]), c = Tensor([Int64(0), 0], shape: [2])
    for y in [a, b, a, c, a, b] { _ = model(x, t, y) }
    let ids = log.conditions
    #expect(ids[0] === ids[2], "a kept")
    #expect(ids[3] !== ids[0] && ids[3] !== ids[1], "c uploaded")
    #expect(ids[4] === ids[0], "a kept after c: used after b")
    #expect(ids[5] !== ids[1], "b uploaded again: c evicted it")
    #expect(log.distinctConditions == 4 && ids.allSatisfy { $0.device == HostAsCUDA.device })
    let v = model(x, t, a)
    #expect(v.device == HostAsCUDA.device, "the velocity stays on the device until a sampler reads it")
    let ode = Samplers.euler(model, noise: x, labels: a, steps: 2, guidance: Guidance(scale: 2, nullClass: 4))
    #expect(ode.device == .cpu && ode.dtype == .float32)
}
