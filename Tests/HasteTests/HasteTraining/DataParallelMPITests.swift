import Foundation
import Testing
import HasteIO
import HasteTraining

/// Real ranks under `mpirun -np 2` (issue #13's CI figures): the demo model without a teacher, global batch 8,
/// against one process. Skipped only where Open MPI is not installed (Scripts/setup.sh installs it).
@Suite(.serialized, .enabled(if: Launcher.mpirun != nil, "mpirun not found: install openmpi-bin (Scripts/setup.sh does)"),
       .enabled(if: fashionMNISTInstalled, "the demo trains on Fashion-MNIST: apt-get install dataset-fashion-mnist"))
struct DataParallelMPITests {
    /// `haste train configs/demo.yaml` without the teacher, 10 steps at global batch 8, one thread per process,
    /// checkpoints every 5 steps; previews shrunk to one 1-step sample.
    static func trainArgs(_ dir: String, _ name: String, steps: Int = 10, resume: Int? = nil) -> [String] {
        ["train", "\(Launcher.root)/configs/demo.yaml", "--enc-type", "none", "--batch-size", "8",
         "--max-train-steps", "\(steps)", "--checkpointing-steps", "5", "--output-dir", dir, "--exp-name", name,
         "--threads", "1", "--set", "sample-count=1", "--set", "sample-num-steps=1", "--set", "sampling-steps=1000",
         "--set", "fid-every=0"] + (resume.map { ["--resume-step", "\($0)"] } ?? [])
    }

    static func train(_ dir: String, _ name: String, ranks: Int, steps: Int = 10, resume: Int? = nil) throws -> [[String: Any]] {
        let r = try Launcher.run(trainArgs(dir, name, steps: steps, resume: resume), ranks: ranks)
        #expect(r.status == 0 && !r.timedOut, "\(name) (\(ranks) ranks) failed: \(r.stderr.suffix(2000))")
        return try metrics("\(dir)/\(name)")
    }

    @Test func twoRanksTrainLikeOneProcessAndResume() throws {
        let dir = temporaryDirectory()
        let one = try Self.train(dir, "one", ranks: 0)
        let two = try Self.train(dir, "two", ranks: 2)
        #expect(one.count == 10 && two.count == 10, "one metrics line per step, written once")
        for (a, b) in zip(one, two) {
            for key in ["loss", "grad_norm"] {
                let x = a[key] as! Double, y = b[key] as! Double
                #expect(Swift.abs(x - y) <= 1e-5 * Swift.abs(x), "step \(a["step"]!) \(key): 1 process \(x), 2 ranks \(y)")
            }
        }
        // One writer: each checkpoint once, each log line once.
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/two/checkpoints").sorted()
        #expect(files == ["0000005.safetensors", "0000010.safetensors"])
        let log = try String(contentsOfFile: "\(dir)/two/log.txt", encoding: .utf8)
        #expect(log.components(separatedBy: "saved ").count - 1 == 2, "\(log)")
        #expect(log.contains("done at step 10"))
        let events = try TFEventReader.eventFiles(inRun: "\(dir)/two")
        #expect(events.count == 1, "rank 0 alone writes a TensorBoard event file: \(events)")
        #expect(try TFEventReader.scalars(inRun: "\(dir)/two")["train/loss"]?.map(\.step) == Array(1...10))

        // Killed after step 5 and resumed under mpirun: the uninterrupted 2-rank losses, bit for bit.
        _ = try Self.train(dir, "split", ranks: 2, steps: 5)
        let resumed = try Self.train(dir, "split", ranks: 2, steps: 10, resume: 5)
        #expect(resumed.map { $0["loss"] as! Double } == two.map { $0["loss"] as! Double })

        // Generation: 2 ranks write the same .npz as 1 process.
        var npz: [Data] = [], npzPath = ""
        for (ranks, folder) in [(0, "gen1"), (2, "gen2")] {
            let r = try Launcher.run(["generate", "--ckpt", "\(dir)/one/checkpoints/0000010.safetensors", "--sample-dir", "\(dir)/\(folder)",
                                      "--num-fid-samples", "6", "--per-proc-batch-size", "2", "--num-steps", "2", "--threads", "1"],
                                     ranks: ranks)
            #expect(r.status == 0 && !r.timedOut, "generate (\(ranks) ranks): \(r.stderr.suffix(2000))")
            let path = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
            #expect(path.hasSuffix(".npz") && r.stdout.split(separator: "\n").count == 1, "only rank 0 prints the .npz: \(r.stdout)")
            npz.append((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data())
            npzPath = path
        }
        #expect(!npz[0].isEmpty && npz[0] == npz[1])

        // FID: 2 ranks share the Inception batches (batch k on rank k mod 2) and report what 1 process does.
        guard inceptionCached else { return }
        var reports: [[String: Any]] = []
        for ranks in [0, 2] {
            let r = try Launcher.run(["fid", npzPath, "fashion-mnist:t10k", "--limit", "4", "--batch-size", "2", "--fid-only",
                                      "--weights", inceptionPath, "--json", "--threads", "1"], ranks: ranks)
            #expect(r.status == 0 && !r.timedOut, "fid (\(ranks) ranks): \(r.stderr.suffix(2000))")
            reports.append((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:])
        }
        let fids = reports.map { $0["fid"] as? Double ?? .nan }
        #expect(fids[0].isFinite && fids[0] == fids[1], "FID: 1 process \(fids[0]), 2 ranks \(fids[1])")
    }

    /// Rank 0 cannot write its checkpoint: it names the problem and the whole job ends, rank 1 included, instead
    /// of rank 1 waiting in the next gradient sum.
    @Test func aFailingRankStopsTheJob() throws {
        let dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: "\(dir)/bad/checkpoints/0000005.safetensors", withIntermediateDirectories: true)
        try "x".write(toFile: "\(dir)/bad/checkpoints/0000005.safetensors/keep", atomically: true, encoding: .utf8)
        let r = try Launcher.run(Self.trainArgs(dir, "bad"), ranks: 2, timeout: 300)
        #expect(!r.timedOut, "the job hung")
        #expect(r.status != 0)
        #expect(r.stderr.contains("Error (rank 0 of 2)") && r.stderr.contains("0000005.safetensors"), "\(r.stderr.suffix(3000))")
    }
}
