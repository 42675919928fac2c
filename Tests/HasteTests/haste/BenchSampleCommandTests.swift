import Foundation
import Testing
import HasteModels
@testable import HasteTraining

/// `haste bench sample` as a user runs it: generate's sampling of one batch, a guided and an unguided row per model
/// and batch, each row's FLOPs from the analytic count (the model on 2N rows when guided), and the whole run's
/// images/s from the rows' medians and the sampler's own grid (HASTE's setting: 177 of 250 SDE steps guided). The
/// tiny SiT at batch 2, one call per row: figures are checked to be consistent with each other, never a speed.
@Suite struct BenchSampleCommandTests {
    static let tiny = CostSweep.tinyModel

    static func forwardFLOPs(batch: Int) throws -> Double {
        var config = TrainConfig()
        CostSweep.apply(model: tiny, to: &config)
        return 2 * Double(try config.studentConfig(sampleShape: [4, 32, 32], numClasses: 1000).forwardMACs(batch: batch))
    }

    @Test func rowsAndBadFlags() throws {
        let listed = try Launcher.run(["bench", "sample", "--list", "--models", "\(Self.tiny),SiT-S/2", "--batches", "2,8"])
        #expect(listed.status == 0, "\(listed)")
        #expect(listed.stdout.split(separator: "\n") == ["\(Self.tiny) bs2 guided", "\(Self.tiny) bs2 unguided", "\(Self.tiny) bs8 guided",
                                                         "\(Self.tiny) bs8 unguided", "SiT-S/2 bs2 guided", "SiT-S/2 bs2 unguided",
                                                         "SiT-S/2 bs8 guided", "SiT-S/2 bs8 unguided"], "\(listed.stdout)")
        for (flags, message) in [(["--mode", "heun"], "--mode 'heun': expected ode or sde"),
                                 (["--steps-per-call", "1"], "--steps-per-call 1 is too few for sde"),
                                 (["--models", "SiT-Q/2"], "--models: unknown model 'SiT-Q/2'"),
                                 (["--guidance-high", "1.5"], "0 ≤ --guidance-low ≤ --guidance-high ≤ 1"),
                                 (["--batches", "2,x"], "positive sizes"),
                                 (["--only", "SiT-B/2 bs5 guided"], "is not a row; rows are: SiT-B/2 bs4 guided"),
                                 (["--mixed-precision", "bf17"], "--mixed-precision 'bf17'")] {
            let bad = try Launcher.run(["bench", "sample", "--list", "--batches", "4"] + flags)
            #expect(bad.status != 0 && bad.stderr.contains(message), "\(flags): \(bad)")
        }
    }

    /// Both rows in one process (JSON): the guided row's FLOPs are the model's on 2N, the run's images/s follows
    /// from the two medians and 177 guided steps of 250.
    @Test func wholeRunFromTheGuidedAndUnguidedRows() throws {
        let r = try Launcher.run(["bench", "sample", "--models", Self.tiny, "--batches", "2", "--steps-per-call", "2", "--reps", "1",
                                  "--warmup", "0", "--threads", "1", "--json"], timeout: 300)
        #expect(r.status == 0, "\(r)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "not JSON: \(r.stdout)")
        #expect(report["mixed_precision"] as? String == "no" && report["device"] as? String == "cpu")
        let rows = try #require(report["rows"] as? [[String: Any]])
        #expect(rows.map { $0["op"] as? String } == ["\(Self.tiny) bs2 guided", "\(Self.tiny) bs2 unguided"])
        #expect(rows[0]["flop_per_step"] as? Double == 2 * (try Self.forwardFLOPs(batch: 4)))
        #expect(rows[1]["flop_per_step"] as? Double == 2 * (try Self.forwardFLOPs(batch: 2)))
        let guided = try #require(rows[0]["ms_median"] as? Double) / 2, unguided = try #require(rows[1]["ms_median"] as? Double) / 2
        let run = try #require((report["runs"] as? [[String: Any]])?.first)
        #expect(run["steps"] as? Int == 250 && run["guided_steps"] as? Int == 177 && run["batch"] as? Int == 2)
        // (the JSON text's decimals, read back: equal to the last few bits)
        let perStep = try [run["ms_per_guided_step"], run["ms_per_unguided_step"]].map { try #require($0 as? Double) }
        #expect(abs(perStep[0] - guided) <= 1e-12 * guided && abs(perStep[1] - unguided) <= 1e-12 * unguided, "\(perStep), \(guided), \(unguided)")
        let rate = try #require(run["images_per_s"] as? Double)
        #expect(abs(rate - 2 / ((177 * guided + 73 * unguided) / 1e3)) <= 1e-9 * rate, "\(rate)")
    }

    /// The ODE's grid (t = 1 … 0 in 50 steps, CFG on t ≤ 0.5: 25 steps) and one row alone: no whole run without both.
    @Test func odeGridAndOneRow() throws {
        let r = try Launcher.run(["bench", "sample", "--models", Self.tiny, "--batches", "1", "--mode", "ode", "--num-steps", "50",
                                  "--guidance-high", "0.5", "--steps-per-call", "1", "--reps", "1", "--warmup", "0", "--threads", "1"],
                                 timeout: 300)
        #expect(r.status == 0, "\(r)")
        #expect(r.stdout.contains("ode sampler, 1 steps a call") && r.stdout.contains("50 steps (25 guided)"), "\(r.stdout)")
        let alone = try Launcher.run(["bench", "sample", "--models", Self.tiny, "--batches", "1", "--only", "\(Self.tiny) bs1 unguided",
                                      "--steps-per-call", "2", "--reps", "1", "--warmup", "0", "--threads", "1"], timeout: 300)
        #expect(alone.status == 0 && alone.stdout.contains("\(Self.tiny) bs1 unguided") && !alone.stdout.contains("guided step"), "\(alone)")
    }

    /// `HASTE_CUDA_HOST_ONLY=1`: a sampling step's launches and GEMMs counted without a GPU (what `generate` refuses
    /// to do), the guided row's model on 2N rows (qkv: 384×(2·2·64)×128), the unguided one's on N. Pinned per call of
    /// 2 steps (2026-12-07): 70 GEMMs (5 linears × 6 blocks and 5 outside, a step), 137 launches (68 a step and the
    /// timing's one-element read; 161 before the half-blocks' bf16 1 + scale was rounded inside the modulated
    /// LayerNorm: one round pass fewer a half-block) and 7 uploads (x, t and the timestep frequencies each step, the conditions once; not
    /// waited for: pinned staging); a change means sampling launches
    /// or copies more (or fewer) on a GPU, which should be deliberate.
    @Test func hostOnlyCUDACountsASamplingStep() throws {
        let r = try Launcher.run(["bench", "sample", "--device", "cuda", "--models", Self.tiny, "--batches", "2", "--steps-per-call", "2",
                                  "--reps", "1", "--warmup", "1", "--threads", "1"], timeout: 300, environment: ["HASTE_CUDA_HOST_ONLY": "1"])
        #expect(r.status == 0 && r.stdout.contains("mixed precision bf16"), "\(r)")
        let reports = r.stdout.components(separatedBy: "\(Self.tiny) bs2 unguided: per call (2 sampling steps): ")
        try #require(reports.count == 2, "\(r.stdout)")
        let guided = reports[0].components(separatedBy: "\(Self.tiny) bs2 guided: per call (2 sampling steps): ").last ?? "", unguided = reports[1]
        for report in [guided, unguided] {
            #expect(report.hasPrefix("137.0 kernel launches (16 kernels), 70.0 GEMMs (10 shapes)"), "\(report)")
            // x, t and the frequencies each step, the conditions once (`Samplers.onDevice`); the velocity each step and the timing's
            // one-element read, each with the device's error word
            #expect(report.contains("copies per call (2 sampling steps): 7.0 host → device"), "\(report)")
            #expect(report.contains(", 6.0 device → host"), "\(report)")
        }
        #expect(guided.contains("bfloat16→bfloat16 384×256×128 +bias") && !guided.contains("384×128×128"), "\(guided)")
        #expect(unguided.contains("bfloat16→bfloat16 384×128×128 +bias") && !unguided.contains("384×256×128"), "\(unguided)")
    }
}
