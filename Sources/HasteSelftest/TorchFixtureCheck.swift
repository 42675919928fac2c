import HasteModels
import HasteTensor

/// `haste selftest --torch-fixture FILE`: haste's bf16 autocast on this device against torch's own autocast run of
/// the same tiny model, written by `Scripts/fixtures/make_bf16_fixture.py --device cuda --only bf16_sit,bf16_dinov2
/// --out DIR` on the GPU node (torch's CUDA kernels and rounding points: cuBLAS, its SDPA backend, CUDA autocast's op
/// lists), where the tests (`sitBF16ForwardAndGradientsTrackTorchAutocast`, `dinov2BF16ForwardTracksTorchAutocast`)
/// can only compare with torch's CPU autocast. Distances are in units of e = ‖torch bf16 − torch fp32‖ / ‖torch
/// bf16‖ (the size of the bf16 effect itself): 0 is torch's bf16 bit for bit, ~1 is as far as float32 mode.
public enum TorchFixtureCheck {
    public struct Report: Sendable {
        public var lines: [String]
        public var passed: Bool
    }

    /// Runs the check the fixture's tensors call for: a bf16_sit fixture (it has `velocity`) or a bf16_dinov2 one
    /// (`patch_tokens`).
    public static func run(_ f: [String: Tensor], path: String, device: Device) throws -> Report {
        if f["velocity"] != nil { return try sit(f, path: path, device: device) }
        if f["patch_tokens"] != nil { return try dinov2(f, path: path, device: device) }
        throw HasteError.fileFormat(path: path, detail: "neither a bf16_sit nor a bf16_dinov2 fixture (Scripts/fixtures/make_bf16_fixture.py writes them)")
    }

    /// make_bf16_fixture.py's sit() model (the tests' tinySiTConfig): 8×8×3 inputs, patch 2, hidden 24, depth 3,
    /// 3 heads, 5 classes, encoder depth 2, one projector 16 → 10.
    static var tinySiT: SiTConfig {
        .selftestTiny(input: 8, channels: 3, hidden: 24, depth: 3, heads: 3, classes: 5, projector: 10, projectorHidden: 16)
    }

    /// make_bf16_fixture.py's dinov2() teacher: patch 2, width 24, depth 3, 3 heads, a 4×4 grid.
    static var tinyDINOv2: DINOv2Config { .selftestTiny(patch: 2, width: 24, depth: 3, heads: 3, grid: 4) }

    /// The outputs' bound (bf16 ≤ 0.5·e) and the gradients' (mean ≤ 0.5·e, each ≤ 1·e) are the SiT CPU test's; float32
    /// mode must sit ≥ 0.9·e away (else the bf16 run was not bf16, or torch's "float32" was TF32).
    static let outputBound = 0.5, gradientMeanBound = 0.5, gradientBound = 1.0, float32Floor = 0.9

    /// The tiny SiT against a bf16_sit fixture: `model.*` weights, inputs x, t, y, weights w1…w3, torch's outputs and
    /// gradients (bf16 run plain, float32 run under `fp32.`); the same forward, weighted-sum loss and parameter
    /// gradients as the CPU test.
    public static func sit(_ f: [String: Tensor], path: String, device: Device) throws -> Report {
        let get = getter(f, path: path, kind: "bf16_sit")
        let model = try SiT(tinySiT)
        try model.store.load(weights(f), strict: true)
        model.store.move(to: device)
        let (x, t, y) = (try get("x").to(device), try get("t").to(device), try get("y").to(.int64).to(device))
        let w = try (1...3).map { try get("w\($0)").to(device) }
        func pass(_ p: ComputePrecision) -> (outs: [String: Tensor], grads: [String: Tensor]) {
            model.store.zeroGrad()
            let out = Autocast.run(p) { model(x, t: t, y: y, logitLayers: [0, 1], projections: true) }
            let logits1 = out.attentionLogits[1]!.to(.float32)         // bf16 on CUDA (as torch's); w1 promotes it, as in torch
            let loss = (out.velocity * w[0]).sum() + (logits1 * w[1]).sum() + (out.projections[0] * w[2]).sum()
            loss.backward()
            var grads: [String: Tensor] = [:]
            for (key, p) in model.store.parameters where f["grad." + key] != nil { grads[key] = p.grad!.to(.cpu).clone() }   // (the slots are reused)
            return (["velocity": out.velocity.to(.cpu), "logits1": logits1.to(.cpu),
                     "proj0": out.projections[0].to(.cpu), "loss": loss.reshaped([1]).to(.cpu)], grads)
        }
        let bf = pass(.bfloat16), fp = pass(.float32)
        var lines = ["haste bf16 on \(device) against torch's bf16 autocast of the same tiny SiT (units of e = ‖torch bf16 − torch fp32‖/‖torch bf16‖)"]
        var passed = true
        for key in ["velocity", "logits1", "proj0", "loss"] {
            let ok = try outputLine(key, bf.outs[key]!, fp.outs[key]!, get, into: &lines)
            passed = passed && ok
        }
        let names = bf.grads.keys.sorted()
        guard names.count == model.store.parameters.count else {
            throw HasteError.fileFormat(path: path, detail: "gradients of \(names.count) of the tiny SiT's \(model.store.parameters.count) parameters: not a bf16_sit fixture")
        }
        let bfRatios = try names.map { try ratio(bf.grads[$0]!, "grad." + $0, get) }
        let fpRatios = try names.map { try ratio(fp.grads[$0]!, "grad." + $0, get) }
        let mean = bfRatios.reduce(0, +) / Double(names.count), fpMean = fpRatios.reduce(0, +) / Double(names.count)
        let worst = bfRatios.indices.max { bfRatios[$0] < bfRatios[$1] }!
        let gradientsOK = mean <= gradientMeanBound && bfRatios[worst] <= gradientBound && fpMean >= float32Floor
        passed = passed && gradientsOK
        lines.append(String(format: "  gradients of %d parameters: bf16 mean %.3f·e, worst %.3f·e (%@); float32 mode mean %.3f·e   %@",
                            names.count, mean, bfRatios[worst], names[worst], fpMean,
                            gradientsOK ? "ok" : "OVER (mean ≤ \(gradientMeanBound), each ≤ \(gradientBound), float32 ≥ \(float32Floor))"))
        for (i, name) in names.enumerated() where bfRatios[i] > 0.5 {
            lines.append(String(format: "    %@: %.3f·e", name, bfRatios[i]))
        }
        lines.append(passed ? "PASS: torch fixture" : "FAIL: torch fixture")
        return Report(lines: lines, passed: passed)
    }

    /// The tiny DINOv2 teacher's forward (no gradient, every block's logits) against a bf16_dinov2 fixture: patch and
    /// class tokens and each block's logits, with the SiT's output bound (on the CPU they sit at ≤ 3e-5·e, the logits
    /// bit-equal: dinov2BF16ForwardTracksTorchAutocast) and float32 mode ≥ 0.9·e.
    public static func dinov2(_ f: [String: Tensor], path: String, device: Device) throws -> Report {
        let get = getter(f, path: path, kind: "bf16_dinov2")
        let model = DINOv2(tinyDINOv2, frozen: true)
        try model.store.load(weights(f), strict: true)
        model.store.move(to: device)
        let x = try get("x").to(device)
        func pass(_ p: ComputePrecision) -> [String: Tensor] {
            let out = Autocast.run(p) { noGrad { model(x, logitLayers: [0, 1, 2]) } }
            var r = ["patch_tokens": out.patchTokens.to(.cpu), "cls_token": out.classToken.to(.cpu)]
            for i in 0..<3 { r["logits\(i)"] = out.attentionLogits[i]!.to(.cpu).to(.float32) }      // bf16 on CUDA, as torch's
            return r
        }
        let bf = pass(.bfloat16), fp = pass(.float32)
        var lines = ["haste bf16 on \(device) against torch's bf16 autocast of the same tiny DINOv2 teacher (units of e)"]
        var passed = true
        for key in ["patch_tokens", "cls_token", "logits0", "logits1", "logits2"] {
            let ok = try outputLine(key, bf[key]!, fp[key]!, get, into: &lines)
            passed = passed && ok
        }
        lines.append(passed ? "PASS: torch fixture" : "FAIL: torch fixture")
        return Report(lines: lines, passed: passed)
    }

    /// The fixture's tensor `key`, or an error naming the file and what it should be.
    static func getter(_ f: [String: Tensor], path: String, kind: String) -> (String) throws -> Tensor {
        { key in
            guard let t = f[key] else {
                throw HasteError.fileFormat(path: path, detail: "no tensor '\(key)': not a \(kind) fixture (Scripts/fixtures/make_bf16_fixture.py --only \(kind) writes one)")
            }
            return t
        }
    }

    /// The `model.*` entries, the prefix stripped (a state dict).
    static func weights(_ f: [String: Tensor]) -> [String: Tensor] {
        var w: [String: Tensor] = [:]
        for (k, v) in f where k.hasPrefix("model.") { w[String(k.dropFirst(6))] = v }
        return w
    }

    /// Distance of `ours` to torch's bf16 `key` in units of e (torch's own bf16 − float32 distance).
    static func ratio(_ ours: Tensor, _ key: String, _ get: (String) throws -> Tensor) throws -> Double {
        let torchBF16 = try get(key)
        return distance(ours, torchBF16) / distance(try get("fp32." + key), torchBF16)
    }

    /// One output's line (bf16 and float32 mode in units of e, ok or OVER); whether it is within the bounds.
    static func outputLine(_ key: String, _ bf: Tensor, _ fp: Tensor, _ get: (String) throws -> Tensor,
                           into lines: inout [String]) throws -> Bool {
        let b = try ratio(bf, key, get), p = try ratio(fp, key, get)
        let ok = b <= outputBound && p >= float32Floor
        lines.append(String(format: "  %-12@ bf16 %.3f·e   float32 mode %.3f·e   %@", key, b, p, ok ? "ok" : "OVER (bf16 ≤ \(outputBound), float32 ≥ \(float32Floor))"))
        return ok
    }

    /// ‖a − b‖ / ‖b‖ (float64 sums; ‖a − b‖ where b is all zeros): the tests' measure against torch fixtures too.
    public static func distance(_ a: Tensor, _ b: Tensor) -> Double {
        let x = a.to(.cpu).scalars(as: Double.self), y = b.to(.cpu).scalars(as: Double.self)
        var num = 0.0, den = 0.0
        for i in x.indices { num += (x[i] - y[i]) * (x[i] - y[i]); den += y[i] * y[i] }
        return den == 0 ? num.squareRoot() : (num / den).squareRoot()
    }
}
