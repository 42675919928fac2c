import HasteTensor

/// One conformance case: an op (or a small group of kernels) run forward and backward on random odd-sized
/// inputs. The body runs twice, once per device, drawing its inputs in the same order from the same seed
/// (on the CPU, then copied to the device), so both runs see identical inputs.
public struct OpCase {
    public let name: String
    public let shapes: String
    public let bound: Bound
    /// The device half runs with TF32 allowed for float32 products (`TF32Switch`; the CPU half is float32).
    public let tf32: Bool
    let body: (CaseContext) -> Void

    public init(_ name: String, _ shapes: String, _ bound: Bound, tf32: Bool = false, _ body: @escaping (CaseContext) -> Void) {
        self.name = name
        self.shapes = shapes
        self.bound = bound
        self.tf32 = tf32
        self.body = body
    }
}

/// Runs `body` with the device's TF32 mode on (CUDA: the driver's, as `--tf32` opens it) and restores it: how a
/// case with `tf32` runs its device half. Without one (the CPU, a device without such a mode) the half runs in
/// float32, which the case's TF32 bound covers too.
public typealias TF32Switch = (_ body: () -> Void) -> Void

/// What a case body uses: seeded inputs on the device under test, and a record of the outputs to compare.
public final class CaseContext {
    public let device: Device
    let rng: RandomGenerator
    private(set) var outputs: [(String, Tensor)] = []

    init(device: Device, seed: UInt64) {
        self.device = device
        rng = RandomGenerator(seed: seed)
    }

    /// N(0,1)·scale + shift, drawn on the CPU and copied to the device; a leaf that records gradients unless
    /// `grad` is false.
    public func normal(_ shape: [Int], scale: Double = 1, shift: Double = 0, grad: Bool = true) -> Tensor {
        leaf(noGrad { rng.normal(shape) * scale + shift }, grad: grad)
    }

    /// U[lo, hi), drawn on the CPU and copied to the device.
    public func uniform(_ shape: [Int], _ lo: Double, _ hi: Double, grad: Bool = true) -> Tensor {
        leaf(noGrad { rng.uniform(shape) * (hi - lo) + lo }, grad: grad)
    }

    /// Integers in [low, high) as int64 on the device.
    public func randint(_ low: Int, _ high: Int, _ shape: [Int]) -> Tensor {
        rng.randint(low, high, shape).to(device)
    }

    private func leaf(_ cpu: Tensor, grad: Bool) -> Tensor {
        let t = cpu.to(device)
        let x = t.device == .cpu ? t.clone() : t       // a fresh leaf even on the CPU
        x.requiresGrad = grad
        return x
    }

    /// Records `t` (copied to the CPU) under `name`.
    public func output(_ name: String, _ t: Tensor) {
        outputs.append((name, noGrad { t.detached().to(.cpu).clone() }))
    }

    /// Records `y`, back-propagates a random upstream gradient (N(0,1), same on both devices) from it and records
    /// each input's gradient under "d" + its name.
    public func forwardBackward(_ y: Tensor, _ inputs: [(String, Tensor)], name: String = "y") {
        output(name, y)
        let dy = noGrad { rng.normal(y.shape) }.to(device)
        y.backward(dy)
        for (n, x) in inputs { output("d" + n, x.grad ?? Tensor.zeros(x.shape, dtype: x.dtype, device: x.device)) }
    }
}

/// One row of the table.
public struct ConformanceRow: Sendable {
    public let name: String, shapes: String, bound: Bound
    public let maxAbs: Double, maxRel: Double
    /// The output with the largest normwise error ("y", "dx", …) and a note on a NaN or shape mismatch.
    public let worst: String, note: String?
    public var passed: Bool { maxRel <= bound.tolerance }
}

extension OpCase {
    /// Runs the body on `device` and on the CPU (same seed) and compares every recorded output.
    public func run(on device: Device, seed: UInt64, tf32Switch: TF32Switch? = nil) -> ConformanceRow {
        let onDevice = CaseContext(device: device, seed: seed)
        if tf32, let tf32Switch { tf32Switch { body(onDevice) } } else { body(onDevice) }
        let onCPU = CaseContext(device: .cpu, seed: seed)
        body(onCPU)
        precondition(onDevice.outputs.count == onCPU.outputs.count, "selftest case \(name) recorded different outputs per device")
        var worst = OutputError(name: "-", maxAbs: 0, maxRel: 0, note: nil)
        var maxAbs = 0.0
        for ((n, d), (_, c)) in zip(onDevice.outputs, onCPU.outputs) {
            let e = OutputError.compare(n, device: d, cpu: c)
            maxAbs = Swift.max(maxAbs, e.maxAbs)
            if e.maxRel > worst.maxRel || (worst.name == "-" && e.maxRel >= worst.maxRel) { worst = e }
        }
        return ConformanceRow(name: name, shapes: shapes, bound: bound, maxAbs: maxAbs, maxRel: worst.maxRel,
                              worst: worst.name, note: worst.note)
    }
}
