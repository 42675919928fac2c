import Foundation
import Testing
import HasteModels
@testable import HasteTraining

/// `haste bench train` as a user runs it (issue 12 item 4): the row kinds (plain, "+align", "+stopped"),
/// `--mixed-precision` (validated like train's flag, said in the header and the JSON), and per row the FLOP rate
/// from the analytic count and the peak memory. The tiny SiT at batch 2, one step per row: figures are only
/// checked to be consistent with each other, never against a speed.
@Suite struct BenchTrainCommandTests {
    static let tiny = CostSweep.tinyModel
    static func bench(_ extra: [String]) -> [String] {
        ["bench", "train", "--models", tiny, "--batches", "2", "--reps", "1", "--warmup", "0", "--threads", "1"] + extra
    }

    /// The tiny SiT's training FLOPs at batch 2 (its projector's too while aligning).
    static func sitFLOPs(projections: Bool) throws -> Double {
        var config = TrainConfig()
        CostSweep.apply(model: tiny, to: &config)
        (config.encType, config.teacherGrid, config.attnStudentLayers) = ("dinov2-vit-b", 8, [0, 1, 2, 3])
        return try config.resolveModels(sampleShape: [4, 32, 32], numClasses: 1000).student.sitConfig(for: "test")
            .trainingFLOPs(batch: 2, projections: projections)
    }

    static func row(_ text: String) throws -> (report: [String: Any], row: [String: Any]) {
        let report = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not JSON: \(text)")
        let rows = try #require(report["rows"] as? [[String: Any]])
        #expect(rows.count == 1)
        return (report, try #require(rows.first))
    }

    @Test func rowKindsAndBadMixedPrecision() throws {
        let listed = try Launcher.run(["bench", "train", "--list", "--models", Self.tiny, "--batches", "2,8", "--grad-checkpointing"])
        #expect(listed.status == 0, "\(listed)")
        #expect(listed.stdout.split(separator: "\n") == ["\(Self.tiny) bs2 +ckpt", "\(Self.tiny) bs2 +align +ckpt", "\(Self.tiny) bs2 +stopped +ckpt",
                                                         "\(Self.tiny) bs8 +ckpt", "\(Self.tiny) bs8 +align +ckpt", "\(Self.tiny) bs8 +stopped +ckpt",
                                                         "DINOv2-B fwd bs16"], "\(listed.stdout)")
        let bad = try Launcher.run(["bench", "train", "--list", "--mixed-precision", "bf17"])
        #expect(bad.status != 0 && bad.stderr.contains("--mixed-precision: unknown value 'bf17'; allowed: no, fp16, bf16, auto"), "\(bad)")
        let help = try Launcher.run(["bench", "train", "--help"])
        #expect(help.stdout.contains("--mixed-precision"), "\(help)")
    }

    /// "+stopped" in bf16 with fp16's sibling flag parsing: the SiT's FLOPs alone (no teacher pass, no projector).
    @Test func stoppedRowReportsPrecisionFLOPsAndPeakMemory() throws {
        let r = try Launcher.run(Self.bench(["--only", "\(Self.tiny) bs2 +stopped", "--json", "--mixed-precision", "bf16"]), timeout: 300)
        #expect(r.status == 0, "\(r)")
        let (report, row) = try Self.row(r.stdout)
        #expect(report["mixed_precision"] as? String == "bf16" && report["device"] as? String == "cpu")
        #expect(row["op"] as? String == "\(Self.tiny) bs2 +stopped")
        let flops = try #require(row["flop_per_step"] as? Double), ms = try #require(row["ms_median"] as? Double)
        let plain = try Self.sitFLOPs(projections: false)
        #expect(flops == plain)
        let tflops = try #require(row["tflop_per_s"] as? Double)
        #expect(abs(tflops - flops / (ms * 1e-3) / 1e12) <= 1e-9 * tflops)
        let peak = try #require(row["peak_memory_mb"] as? Double)
        #expect(peak > 0 && peak <= (report["peak_tensor_mb"] as? Double ?? 0) + 1e-9, "row peak \(peak) within the process's")
    }

    /// "+align" adds the projector and the teacher's forward to the FLOPs (the tiny SiT's teacher: DINOv2-B at 112 px,
    /// 8² patches as its own tokens); `auto` is no on the CPU; fp16 runs.
    @Test func alignRowCountsTheTeacherAndFP16Runs() throws {
        let r = try Launcher.run(Self.bench(["--only", "\(Self.tiny) bs2 +align", "--json"]), timeout: 300)
        #expect(r.status == 0, "\(r)")
        let (report, row) = try Self.row(r.stdout)
        #expect(report["mixed_precision"] as? String == "no", "auto is float32 on the CPU")
        var teacherConfig = try DINOv2Config.named("dinov2-vit-b")
        teacherConfig.grid = 8
        let teacher = teacherConfig.forwardFLOPs(batch: 2)
        let aligned = try Self.sitFLOPs(projections: true), plain = try Self.sitFLOPs(projections: false)
        #expect(row["flop_per_step"] as? Double == aligned + teacher)
        #expect(teacher > 0 && aligned > plain)

        let table = try Launcher.run(Self.bench(["--only", "\(Self.tiny) bs2", "--mixed-precision", "fp16"]), timeout: 300)
        #expect(table.status == 0, "\(table)")
        let lines = table.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("haste bench train: cpu, mixed precision fp16, ") == true, "\(table.stdout)")
        #expect(lines.contains { $0.hasPrefix("op ") && $0.contains("GFLOP/s") && $0.contains("peak MiB") }, "\(table.stdout)")
        let cells = try #require(lines.first { $0.hasPrefix("\(Self.tiny) bs2 ") }).split(separator: " ")
        #expect(cells.suffix(2).allSatisfy { (Double($0) ?? -1) > 0 }, "GFLOP/s and peak MiB of \(cells)")
    }

    /// The host block cache in a real training step (issue 15 item 2): at batch 4 the tiny SiT's activations are
    /// 128 KiB and more, so they are mapped blocks; the timed step after the warm-up one repeats its sizes and maps
    /// nothing, and what was mapped stays within the tensor peak (page-rounded) plus the 40 MiB slack.
    @Test func aRepeatedTrainingStepMapsNoNewBlocks() throws {
        let r = try Launcher.run(["bench", "train", "--models", Self.tiny, "--batches", "4", "--only", "\(Self.tiny) bs4",
                                  "--reps", "1", "--warmup", "1", "--threads", "1", "--json"], timeout: 300)
        #expect(r.status == 0, "\(r)")
        let (report, row) = try Self.row(r.stdout)
        let mapped = try #require(report["peak_mapped_mb"] as? Double), tensors = try #require(report["peak_tensor_mb"] as? Double)
        #expect(mapped > 1 && mapped <= tensors * 1.04 + 40, "mapped \(mapped) MiB for a tensor peak of \(tensors) MiB")
        #expect(row["host_maps_per_step"] as? Double == 0, "\(row)")
        #expect((row["minor_faults_per_step"] as? Double ?? -1) >= 0, "\(row)")
        let text = try Launcher.run(["bench", "train", "--models", Self.tiny, "--batches", "4", "--only", "\(Self.tiny) bs4",
                                     "--reps", "1", "--warmup", "0", "--threads", "1"], timeout: 300)
        #expect(text.status == 0 && text.stdout.contains("(large blocks mapped, live + cached: "), "\(text)")
    }

    /// `HASTE_CUDA_HOST_ONLY=1` (HostOnlyDriver): `--device cuda` without a GPU, launches and GEMMs counted per
    /// timed step, the most frequent listed. The counts of the tiny SiT's bf16 step are pinned: a change means
    /// a step now launches more (or fewer) kernels on a GPU, which should be deliberate (fusion lowers them).
    /// GEMMs: 15 per block (5 linears: qkv, proj, fc1, fc2 and the adaLN modulation, forward and 2 backward
    /// products each) × depth 6, and 13 outside the blocks; launches (2026-12-06): 107 casts (88 of them bf16
    /// gradients widened into their float32 slots) and 26 one-pass roundings, and 2 the timing's own one-element
    /// read. No GPU is touched. Other commands refuse the host-only device.
    /// `--recompute-mlp-activation` (train's key recompute-mlp-activation) reaches the training step: on the host-only
    /// CUDA device under bf16 the half-blocks hold less for backward (the MLPs' activation outputs). The key parses
    /// and defaults to off.
    @Test func recomputedMLPActivationHoldsLess() throws {
        func halfBlocksMiB(_ extra: [String]) throws -> Double {
            let r = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--only", "\(Self.tiny) bs2", "--saved-bytes"] + extra),
                                     environment: ["HASTE_CUDA_HOST_ONLY": "1"])
            let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("BF16AdaLNBranchBackward") }
            return try #require(line.flatMap { Double($0.split(separator: " ", omittingEmptySubsequences: true)[2]) }, "\(r)")
        }
        let kept = try halfBlocksMiB([]), recomputed = try halfBlocksMiB(["--recompute-mlp-activation"])
        #expect(recomputed < kept, "\(recomputed) MiB against \(kept)")
        #expect(try TrainConfig.load(file: nil, overrides: [("recompute-mlp-activation", "true")]).recomputeMlpActivation)
        #expect(!TrainConfig().recomputeMlpActivation)
    }

    @Test func hostOnlyCUDACountsWhatAStepLaunches() throws {
        let r = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--json", "--only", "\(Self.tiny) bs2"]),
                                 environment: ["HASTE_CUDA_HOST_ONLY": "1"])
        #expect(r.status == 0 && r.stderr.contains("HASTE_CUDA_HOST_ONLY=1: cuda:0 queues nothing"), "\(r)")
        let row = try Self.row(r.stdout).row
        #expect(row["gemms_per_step"] as? Double == Self.pinnedGemms && row["launches_per_step"] as? Double == Self.pinnedLaunches,
                "\(row)")
        let text = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--only", "\(Self.tiny) bs2"]),
                                    environment: ["HASTE_CUDA_HOST_ONLY": "1"])
        #expect(text.status == 0 && text.stdout.contains("\(Self.tiny) bs2: per step: \(String(format: "%.1f", Self.pinnedLaunches)) kernel launches")
                && text.stdout.contains("attention_flash_bf16_direct_in16_forward") && !text.stdout.contains("attention_flash_dq_sum_out16")
                && text.stdout.contains("bfloat16→bfloat16 384×128×128 +bias") && text.stdout.contains("512×128×128 +gelu+bias+aux")
                && text.stdout.contains("512×128×128 +dgelu+bgrad") && text.stdout.contains("128×128×128 +bgradb")
                && !text.stdout.contains("unary_bf16_v8_13"),
                "\(text.stdout)")
        // The dk/dv kernel sums dq serially (one block per head: its 12 heads × 2 fill one wave either way), with
        // nothing to zero; HASTE_FLASH_DQ_SERIAL=0, each query tile's last block sums the partials (one launch more a
        // block: the counts' fill), and with HASTE_FLASH_DQ_LAST_BLOCK=0 as well, their own kernel (in the fill's place).
        let lastBlock = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--only", "\(Self.tiny) bs2"]),
                                         environment: ["HASTE_CUDA_HOST_ONLY": "1", "HASTE_FLASH_DQ_SERIAL": "0"])
        #expect(lastBlock.stdout.contains("\(Self.tiny) bs2: per step: \(String(format: "%.1f", Self.pinnedLaunches + 6)) kernel launches")
                && lastBlock.stdout.contains("fill_4") && !lastBlock.stdout.contains("attention_flash_dq_sum_out16"), "\(lastBlock)")
        let summed = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--only", "\(Self.tiny) bs2"]),
                                      environment: ["HASTE_CUDA_HOST_ONLY": "1", "HASTE_FLASH_DQ_SERIAL": "0", "HASTE_FLASH_DQ_LAST_BLOCK": "0"])
        #expect(summed.stdout.contains("\(Self.tiny) bs2: per step: \(String(format: "%.1f", Self.pinnedLaunches + 6)) kernel launches")
                && summed.stdout.contains("attention_flash_dq_sum_out16"), "\(summed)")
        // HASTE_FLASH_FUSED_DQ=0: dq from its own kernel again, instead of the dk/dv kernel's serial sum (one launch
        // more per block).
        let separate = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--only", "\(Self.tiny) bs2"]),
                                        environment: ["HASTE_CUDA_HOST_ONLY": "1", "HASTE_FLASH_FUSED_DQ": "0"])
        #expect(separate.stdout.contains("\(Self.tiny) bs2: per step: \(String(format: "%.1f", Self.pinnedLaunches + 6)) kernel launches")
                && separate.stdout.contains("attention_flash_bf16_direct_in16_backward_dq_") && !separate.stdout.contains("dq_sum"),
                "\(separate)")
        // HASTE_FLASH_DIRECT=0: the staged cp.async kernels where the direct ones ran, and so the heads copied out and
        // back again (they read no layouts): 9 launches more per block (q, k, v, dOut out; dq, dk, dv back; the output
        // merged into tokens, which the direct forward writes itself; dq's partials summed by their kernel).
        let staged = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--only", "\(Self.tiny) bs2"]),
                                      environment: ["HASTE_CUDA_HOST_ONLY": "1", "HASTE_FLASH_DIRECT": "0"])
        #expect(staged.stdout.contains("\(Self.tiny) bs2: per step: \(String(format: "%.1f", Self.pinnedLaunches + 54)) kernel launches")
                && staged.stdout.contains("attention_flash_bf16_async_in16_forward") && !staged.stdout.contains("direct_in16"),
                "\(staged)")
        // HASTE_FLASH_STRIDED=0: the direct kernels on copies of the heads (and the output merged by its own pass).
        let copies = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--only", "\(Self.tiny) bs2"]),
                                      environment: ["HASTE_CUDA_HOST_ONLY": "1", "HASTE_FLASH_STRIDED": "0"])
        #expect(copies.stdout.contains("\(Self.tiny) bs2: per step: \(String(format: "%.1f", Self.pinnedLaunches + 48)) kernel launches")
                && copies.stdout.contains("attention_flash_bf16_direct_in16_forward"), "\(copies)")
        // HASTE_BF16_BRANCHES=0: float32 carriers between the half-blocks' kernels again (the general path), the count
        // before the bf16 branches (835 then, with the bias copies), less the 34 bias sums BGRADB takes and the 69
        // casts the arena cast saves, the 55 the adaLN pieces' layout saves, the 12 of one silu(c), the 6 of its one
        // bf16 copy, the 5 of the linear patch embedding, the 12 of the gated residuals' one-pass backward and the 13 of the
        // modulated LayerNorms' sums in their dx pass, the 1 of the denoising term's read (now only when asked for), and
        // the 34 casts that one widening launch per node saves there, the 52 of the adaLN pieces' gathered gradients and
        // the 7 widenings of silu(c)'s bf16 gradient terms (added as they are).
        let carriers = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--json", "--only", "\(Self.tiny) bs2"]),
                                        environment: ["HASTE_CUDA_HOST_ONLY": "1", "HASTE_BF16_BRANCHES": "0"])
        #expect(try Self.row(carriers.stdout).row["launches_per_step"] as? Double == 500, "\(carriers)")
        // HASTE_GEMM_BIAS_EPILOGUE=0: every linear's bias copied into its output before the GEMM again (one launch
        // per linear with a bias: 4 per block — fc1's bias rides in its GELU epilogue — the patch embedding, 2 in the
        // timestep MLP, 2 in the final layer).
        let broadcast = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--json", "--only", "\(Self.tiny) bs2"]),
                                         environment: ["HASTE_CUDA_HOST_ONLY": "1", "HASTE_GEMM_BIAS_EPILOGUE": "0"])
        #expect(try Self.row(broadcast.stdout).row["launches_per_step"] as? Double == Self.pinnedLaunches + 29, "\(broadcast)")
        // HASTE_GEMM_GELU_EPILOGUE=0: the MLPs' GELU and its gradient as kernels again (2 launches per block; fc1's
        // bias gradient then comes with its weight gradient, BGRADB). HASTE_GEMM_BGRAD_EPILOGUE=0: every bias gradient
        // but fc1's (DGELU_BGRAD's) as column sums again (4 per block, the patch embedding, 2 in the timestep MLP, 2 in
        // the final layer: 29), each then a float32 sum rounded into its slot by a launch of its own, not widened with
        // its node's weights (28 more). HASTE_ARENA_CAST=0: each weight and bias cast where it is narrowed again (70 casts for the
        // arena's one; the patch embedding's weight as its [D, C·p·p] view), and silu(c) by each of the 7 modulation
        // GEMMs (7 for 1). HASTE_FUSED_GATED_BACKWARD=0: each half-block's gated residual backward as its dy kernel and
        // its dgate partials kernel again (one launch more each: 12). HASTE_FUSED_MLN_PARTIALS=0: each modulated
        // LayerNorm's dshift and dscale chunk sums by their own kernel again (12 half-blocks and the final layer: 13).
        // HASTE_GATHER_COLUMNS=0: the adaLN pieces' gradients copied into their columns one launch each, then cast (6
        // copies and a cast for one gather a block, 2 and a cast in the final layer: 38). HASTE_ADD_WIDENED=0: each
        // bf16 gradient term of silu(c) (the 7 modulation linears' input gradients) widened before it is added (7).
        for (switchName, more) in [("HASTE_GEMM_GELU_EPILOGUE", 12.0), ("HASTE_GEMM_BGRAD_EPILOGUE", 57.0), ("HASTE_ARENA_CAST", 75.0),
                                   ("HASTE_FUSED_GATED_BACKWARD", 12.0), ("HASTE_FUSED_MLN_PARTIALS", 13.0),
                                   ("HASTE_GATHER_COLUMNS", 38.0), ("HASTE_ADD_WIDENED", 7.0)] {
            let off = try Launcher.run(Self.bench(["--device", "cuda", "--mixed-precision", "bf16", "--json", "--only", "\(Self.tiny) bs2"]),
                                       environment: ["HASTE_CUDA_HOST_ONLY": "1", switchName: "0"])
            #expect(try Self.row(off.stdout).row["launches_per_step"] as? Double == Self.pinnedLaunches + more, "\(switchName)=0: \(off)")
        }
        // Anything but bench train refuses that device: it would compute nothing and report or write it.
        let refused = try Launcher.run(["selftest", "--device", "cuda", "--ops", "fill"], environment: ["HASTE_CUDA_HOST_ONLY": "1"])
        #expect(refused.status != 0 && refused.stderr.contains("--device cuda with HASTE_CUDA_HOST_ONLY=1: that device computes nothing"),
                "\(refused)")
    }
    /// The tiny SiT's bf16 step on the host-only device: how each change moved it is the README's table "Launches of
    /// the pinned tiny SiT step" (214 before a bf16 GEMM's input gradient was added to another term as bf16).
    static let pinnedGemms = 103.0, pinnedLaunches = 207.0
}
